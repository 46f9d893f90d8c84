//! Failover on a private 3-server ZooKeeper ensemble: clients keep taking
//! two locks while the leader is killed (SIGKILL). Every grant is recorded
//! as an interval, from the grant to the release call or to the moment its
//! holder was told the lease was lost; the intervals of one lock must never
//! overlap, and fencing tokens must rise in grant order, across the leader
//! change.
#![cfg(feature = "zookeeper")]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockkit_core::{LockName, LockOptions, Locker};
use lockkit_tests::zk::server::ZkEnsemble;
use lockkit_tests::zk::test_options;
use tokio::time::Instant;

const CLIENTS: usize = 4;
const SESSION: Duration = Duration::from_secs(4);
const TTL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
struct Grant {
    lock: usize,
    #[allow(dead_code, reason = "shown in failure messages")]
    client: usize,
    token: u64,
    start: Instant,
    end: Instant,
    lost: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_while_locks_are_held_never_lets_two_holders_in() {
    let mut ensemble = tokio::task::spawn_blocking(|| ZkEnsemble::start(3))
        .await
        .expect("start the ensemble");
    let url = format!("{}/failover", ensemble.url());
    let names: Vec<LockName> = (0..2)
        .map(|i| lockkit_core::conformance::unique_name(&format!("failover-{i}")))
        .collect();
    let grants = Arc::new(Mutex::new(Vec::<Grant>::new()));
    let errors = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let holding = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let backend = lockkit_zk::connect_with(&url, test_options().session_timeout(SESSION))
            .await
            .expect("connect to the ensemble");
        let locker = Locker::new(Arc::new(backend), format!("client-{client}"))
            .and_then(|l| {
                l.with_options(
                    LockOptions::new()
                        .ttl(TTL)
                        .wait_timeout(Duration::from_secs(30)),
                )
            })
            .expect("locker");
        let (names, grants, errors, stop, holding) = (
            names.clone(),
            Arc::clone(&grants),
            Arc::clone(&errors),
            Arc::clone(&stop),
            Arc::clone(&holding),
        );
        tasks.push(tokio::spawn(async move {
            let mut round = client;
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                let lock = round % names.len();
                let guard = match locker.acquire(&names[lock]).await {
                    Ok(guard) => guard,
                    Err(err) => {
                        eprintln!("client-{client}: acquire failed: {err}");
                        errors.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let start = Instant::now();
                holding.fetch_add(1, Ordering::SeqCst);
                let token = guard.token().get();
                let hold = Duration::from_millis(100 + (round as u64 * 37) % 150);
                let lost = tokio::select! {
                    _ = guard.lost() => true,
                    () = tokio::time::sleep(hold) => false,
                };
                let end = Instant::now();
                holding.fetch_sub(1, Ordering::SeqCst);
                grants.lock().expect("grants").push(Grant {
                    lock,
                    client,
                    token,
                    start,
                    end,
                    lost,
                });
                if let Err(err) = guard.release().await {
                    eprintln!("client-{client}: release failed: {err}");
                }
            }
        }));
    }

    // Let the clients work, then kill the leader while both locks are held.
    let grants_before = |grants: &Mutex<Vec<Grant>>| grants.lock().expect("grants").len();
    let give_up = Instant::now() + Duration::from_secs(30);
    while grants_before(&grants) < 10 || holding.load(Ordering::SeqCst) < names.len() {
        assert!(Instant::now() < give_up, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let leader = ensemble.leader().expect("a leader");
    let killed_at = Instant::now();
    ensemble.kill(leader);
    eprintln!("killed leader server {} (index {leader})", leader + 1);

    // Keep going until plenty of grants happened after the failover.
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let after = grants
            .lock()
            .expect("grants")
            .iter()
            .filter(|g| g.start > killed_at)
            .count();
        if after >= 20 {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "only {after} grants after the leader was killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_leader = ensemble.leader();
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(40), task)
            .await
            .expect("clients stop")
            .expect("client panicked");
    }

    let grants = grants.lock().expect("grants").clone();
    let mut overlaps = Vec::new();
    for lock in 0..names.len() {
        let mut of_lock: Vec<&Grant> = grants.iter().filter(|g| g.lock == lock).collect();
        of_lock.sort_by_key(|g| g.start);
        for pair in of_lock.windows(2) {
            if pair[1].start < pair[0].end {
                overlaps.push(format!("{:?} overlaps {:?}", pair[1], pair[0]));
            }
            assert!(
                pair[1].token > pair[0].token,
                "tokens must rise in grant order: {:?} then {:?}",
                pair[0],
                pair[1]
            );
        }
    }
    assert!(
        overlaps.is_empty(),
        "two holders at once:\n{}",
        overlaps.join("\n")
    );

    let before: Vec<&Grant> = grants.iter().filter(|g| g.start < killed_at).collect();
    let after: Vec<&Grant> = grants.iter().filter(|g| g.start > killed_at).collect();
    // Per lock, every grant after the kill outranks every grant before it
    // (the order check above implies it; said explicitly), and nodes
    // created after the failover carry the new leader's epoch (the high 32
    // bits of the zxid).
    for lock in 0..names.len() {
        let max_before = before
            .iter()
            .filter(|g| g.lock == lock)
            .map(|g| g.token)
            .max();
        let min_after = after
            .iter()
            .filter(|g| g.lock == lock)
            .map(|g| g.token)
            .min();
        if let (Some(b), Some(a)) = (max_before, min_after) {
            assert!(a > b, "lock {lock}: token {a} after the kill <= {b} before");
        }
    }
    let max_before = before.iter().map(|g| g.token).max().expect("grants before");
    let max_after = after.iter().map(|g| g.token).max().expect("grants after");
    assert!(
        (max_after >> 32) > (max_before >> 32),
        "grants after the failover carry the new leader's epoch"
    );
    let first_after = after
        .iter()
        .map(|g| g.start - killed_at)
        .min()
        .expect("grants after");
    let lost = grants.iter().filter(|g| g.lost).count();
    let holding_at_kill = grants
        .iter()
        .filter(|g| g.start < killed_at && g.end > killed_at)
        .count();
    eprintln!(
        "failover: {} grants ({} before, {} after the kill), {holding_at_kill} held at the kill, \
         {lost} reported lost, first grant {first_after:?} after the kill, {} acquire errors, \
         new leader {:?}, epochs {:#x} -> {:#x}",
        grants.len(),
        before.len(),
        after.len(),
        errors.load(Ordering::SeqCst),
        new_leader.map(|i| i + 1),
        max_before >> 32,
        max_after >> 32,
    );
}
