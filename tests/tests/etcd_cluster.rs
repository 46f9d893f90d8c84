//! A 3-member etcd cluster loses its leader while a lock is held and
//! waiters queue, and while contenders keep taking the lock: never two
//! holders, tokens keep rising, the lock stays usable.
//!
//! Each test starts its own cluster (default election timeout, 1 s) on
//! free ports; run with `--nocapture` to see the observed failover figures.
#![cfg(feature = "etcd")]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockkit_core::conformance::unique_name;
use lockkit_core::{Error, LockBackend, LockGuard, LockOptions, Locker};
use lockkit_tests::etcd::{EtcdCluster, EtcdHarness};
use tokio::task::JoinSet;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(5);

fn options() -> LockOptions {
    LockOptions::new()
        .ttl(TTL)
        .wait_timeout(Duration::from_secs(60))
}

/// Releases, retrying transient errors (an election in progress).
async fn release(guard: LockGuard) -> bool {
    // A release that fails is retried in the background by the backend; the
    // guard is consumed, so report what the first attempt said.
    match guard.release().await {
        Ok(held) => held,
        Err(err) => {
            assert!(err.is_retryable(), "release failed for good: {err}");
            eprintln!("release failed transiently during failover: {err}");
            true
        }
    }
}

/// Holder and three queued waiters; the leader is killed; the holder
/// releases through the surviving members; the waiters are granted in
/// their order with rising tokens, one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_while_held_and_queued() {
    let mut cluster = EtcdCluster::start(3, 1000);
    let h = EtcdHarness::with_url(cluster.url()).await;
    let name = unique_name("etcd-failover-queue");
    let holder = Locker::new(
        Arc::new(h.backend().await) as Arc<dyn LockBackend>,
        "holder",
    )
    .and_then(|l| l.with_options(options()))
    .expect("locker");
    let guard = holder.acquire(&name).await.expect("acquire");
    let first_token = guard.token().get();

    let inside = Arc::new(AtomicUsize::new(1));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let grants = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    for i in 0..3 {
        let locker = Locker::new(
            Arc::new(h.backend().await) as Arc<dyn LockBackend>,
            format!("w{i}"),
        )
        .and_then(|l| l.with_options(options()))
        .expect("locker");
        let (lock, inside, overlaps, grants) = (
            name.clone(),
            Arc::clone(&inside),
            Arc::clone(&overlaps),
            Arc::clone(&grants),
        );
        tasks.spawn(async move {
            let guard = locker
                .acquire(&lock)
                .await
                .expect("acquire across failover");
            if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                overlaps.fetch_add(1, Ordering::SeqCst);
            }
            grants
                .lock()
                .expect("grants")
                .push((i, guard.token().get()));
            tokio::time::sleep(Duration::from_millis(20)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            release(guard).await
        });
        h.wait_for_keys(&name, i + 2).await;
    }

    let leader = cluster.wait_for_leader().await;
    let killed_at = Instant::now();
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader().await;
    let election = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    eprintln!("failover: killed leader m{leader}; m{new_leader} leads after {election:?}");

    assert!(
        !guard.is_lost(),
        "the holder's session survives an election far shorter than its TTL: {:?}",
        guard.lost_reason()
    );
    inside.fetch_sub(1, Ordering::SeqCst);
    let released_at = Instant::now();
    assert!(release(guard).await, "the holder still held the lock");
    while let Some(joined) = tasks.join_next().await {
        assert!(joined.expect("waiter panicked"), "waiters held their turn");
    }
    eprintln!(
        "failover: three queued waiters served {:?} after the holder's release",
        released_at.elapsed()
    );
    let grants = grants.lock().expect("grants").clone();
    assert_eq!(
        grants.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "FIFO order survives the failover"
    );
    let tokens: Vec<u64> = grants.iter().map(|g| g.1).collect();
    assert!(tokens[0] > first_token);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");

    // Still usable, and nothing is left over.
    let again = holder.acquire(&name).await.expect("acquire after failover");
    assert!(again.token().get() > tokens[2]);
    assert!(release(again).await);
    let keys = h.wait_for_keys(&name, 0).await;
    assert!(keys.is_empty());
}

/// Four contenders take the lock over and over on their own clients; the
/// leader is killed in the middle. Overlaps are counted (must be 0),
/// tokens must rise in grant order, and grants continue after the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_across_leader_loss() {
    const CONTENDERS: usize = 4;
    let mut cluster = EtcdCluster::start(3, 1000);
    let h = EtcdHarness::with_url(cluster.url()).await;
    let name = unique_name("etcd-failover-contention");
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let grants: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    for i in 0..CONTENDERS {
        let locker = Locker::new(
            Arc::new(h.backend().await) as Arc<dyn LockBackend>,
            format!("c{i}"),
        )
        .and_then(|l| l.with_options(options()))
        .expect("locker");
        let (name, inside, overlaps, grants, stop, errors) = (
            name.clone(),
            Arc::clone(&inside),
            Arc::clone(&overlaps),
            Arc::clone(&grants),
            Arc::clone(&stop),
            Arc::clone(&errors),
        );
        tasks.spawn(async move {
            // Bounded: at most 400 turns each, and only until told to stop.
            for _ in 0..400 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let guard = match locker.acquire(&name).await {
                    Ok(guard) => guard,
                    Err(err) => {
                        assert!(
                            err.is_retryable() || matches!(err, Error::Lost { .. }),
                            "acquire failed for good: {err}"
                        );
                        errors.lock().expect("errors").push(err.to_string());
                        continue;
                    }
                };
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                grants
                    .lock()
                    .expect("grants")
                    .push((Instant::now(), guard.token().get()));
                tokio::time::sleep(Duration::from_millis(10)).await;
                guard.ensure_held().expect("held through the section");
                inside.fetch_sub(1, Ordering::SeqCst);
                release(guard).await;
            }
        });
    }

    // Let the contenders run, then kill the leader while they do.
    let count = |g: &Mutex<Vec<(Instant, u64)>>| g.lock().expect("grants").len();
    let warm_up = Instant::now() + Duration::from_secs(20);
    while count(&grants) < 20 {
        assert!(Instant::now() < warm_up, "no progress before the failover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = cluster.wait_for_leader().await;
    let killed_at = Instant::now();
    let before_kill = count(&grants);
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader().await;
    eprintln!(
        "failover: killed leader m{leader}; m{new_leader} leads after {:?}",
        killed_at.elapsed()
    );
    let progress = Instant::now() + Duration::from_secs(30);
    while count(&grants) < before_kill + 20 {
        assert!(
            Instant::now() < progress,
            "the lock must stay usable after the failover; logs:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    while let Some(joined) = tasks.join_next().await {
        joined.expect("contender panicked");
    }

    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders at once");
    let grants = grants.lock().expect("grants").clone();
    let tokens: Vec<u64> = grants.iter().map(|g| g.1).collect();
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must rise in grant order: {tokens:?}"
    );
    let gap = grants
        .windows(2)
        .filter(|w| w[1].0 >= killed_at)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    let errors = errors.lock().expect("errors").clone();
    eprintln!(
        "failover: {} grants ({} before the kill), longest gap between grants after the kill {gap:?}, {} acquire errors {:?}",
        grants.len(),
        before_kill,
        errors.len(),
        errors
    );
    let keys = h.wait_for_keys(&name, 0).await;
    assert!(keys.is_empty());
}
