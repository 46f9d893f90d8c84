//! FIFO mode: arrival order, fair shares, dead waiters, no queue jumping.
#![cfg(feature = "redis")]
// Tests may unwrap (the workspace lint is for library code); helpers
// outside #[test] functions are not covered by allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockkit_core::conformance::{Harness, unique_name};
use lockkit_core::spi::AcquireRequest;
use lockkit_core::{LockBackend, LockName};
use lockkit_redis::{RedisBackend, RedisOptions};
use lockkit_tests::redis::RedisHarness;
use tokio::task::JoinSet;
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(30);

fn req(name: &LockName, owner: &str, ttl: Duration) -> AcquireRequest {
    AcquireRequest::new(name.clone(), owner, ttl).expect("valid request")
}

async fn queued(h: &RedisHarness, name: &LockName) -> usize {
    let keys = h.keys(name);
    h.inspector()
        .query(redis::cmd("ZCARD").arg(&keys.queue))
        .await
}

/// Waits (by observing the queue in Redis) until `n` waiters are queued.
async fn until_queued(h: &RedisHarness, name: &LockName, n: usize) {
    let give_up = Instant::now() + Duration::from_secs(10);
    while queued(h, name).await < n {
        assert!(Instant::now() < give_up, "{n} waiters never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Eight waiters, each queued (as seen in Redis) before the next arrives,
/// are granted in exactly that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_are_granted_in_arrival_order() {
    const WAITERS: usize = 8;
    let h = RedisHarness::standalone_fifo().await;
    let name = unique_name("fifo-order");
    let holder = h.backend().await;
    let held = holder
        .try_acquire(&req(&name, "holder", LONG))
        .await
        .unwrap()
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    for i in 0..WAITERS {
        let client = h.backend().await;
        let (lock, order) = (name.clone(), Arc::clone(&order));
        tasks.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let lease = client
                .acquire(&req(&lock, &format!("waiter-{i}"), LONG), Some(deadline))
                .await
                .expect("acquire");
            order.lock().unwrap().push(i);
            assert!(client.release(&lease).await.unwrap());
        });
        until_queued(&h, &name, i + 1).await;
    }
    assert!(holder.release(&held).await.unwrap());
    while let Some(joined) = tasks.join_next().await {
        joined.expect("waiter");
    }
    assert_eq!(*order.lock().unwrap(), (0..WAITERS).collect::<Vec<_>>());
    assert!(h.leftovers(&name).await.is_empty());
}

/// How 16 contenders that re-ask at once after each release share `total`
/// grants: grants per contender and how often the releaser got it back.
async fn share(backends: Vec<RedisBackend>, total: usize) -> (Vec<usize>, f64) {
    let name = unique_name("fair-share");
    let granted = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    for (i, backend) in backends.into_iter().enumerate() {
        let (name, granted, log) = (name.clone(), Arc::clone(&granted), Arc::clone(&log));
        tasks.spawn(async move {
            while granted.load(Ordering::SeqCst) < total {
                let deadline = Instant::now() + Duration::from_secs(60);
                let lease = backend
                    .acquire(&req(&name, &format!("c{i}"), LONG), Some(deadline))
                    .await
                    .expect("acquire");
                granted.fetch_add(1, Ordering::SeqCst);
                log.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(2)).await;
                assert!(backend.release(&lease).await.unwrap());
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("contender");
    }
    let log = log.lock().unwrap().clone();
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for i in &log {
        *counts.entry(*i).or_default() += 1;
    }
    let per: Vec<usize> = (0..16)
        .map(|i| counts.get(&i).copied().unwrap_or(0))
        .collect();
    let back_to_back = log.windows(2).filter(|w| w[0] == w[1]).count();
    (per, back_to_back as f64 / (log.len().max(2) - 1) as f64)
}

/// 16 contenders each get about 1/16 of the grants in FIFO mode; the
/// unfair mode's distribution is printed for comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_contenders_get_fair_shares() {
    const TOTAL: usize = 16 * 10;
    let h = RedisHarness::standalone_fifo().await;
    let mut fifo = Vec::new();
    let mut unfair = Vec::new();
    for _ in 0..16 {
        fifo.push(h.backend().await);
        unfair.push(h.backend_with(RedisOptions::default().fifo(false)).await);
    }
    let (per, back) = share(fifo, TOTAL).await;
    eprintln!(
        "FIFO mode, grants per contender: {per:?}; back to the releaser: {:.0}%",
        back * 100.0
    );
    let fair = TOTAL / 16;
    assert!(
        per.iter().all(|n| *n >= fair / 2 && *n <= fair * 3 / 2 + 1),
        "each of 16 contenders must get about 1/16 of the grants: {per:?}"
    );
    assert!(back < 0.1, "FIFO hands the lock on, not back: {back}");
    let (per, back) = share(unfair, TOTAL).await;
    eprintln!(
        "unfair mode, grants per contender: {per:?}; back to the releaser: {:.0}%",
        back * 100.0
    );
}

/// A waiter that stops refreshing its queue entry (its process froze or
/// died without cleaning up) blocks the queue only until the entry
/// expires; meanwhile nobody jumps the queue, not even `try_acquire`.
///
/// The frozen entry was refreshed at most a third of its TTL before it was
/// frozen, so it certainly lives until `frozen + 2/3 TTL`: tries sent
/// before then must be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_waiter_entry_expires_and_nobody_jumps_the_queue() {
    let entry_ttl = Duration::from_secs(3);
    let h = RedisHarness::standalone_fifo().await;
    let options = RedisOptions::default()
        .fifo(true)
        .queue_entry_ttl(entry_ttl);
    let name = unique_name("dead-waiter");
    let holder = h.backend_with(options.clone()).await;
    let held = holder
        .try_acquire(&req(&name, "holder", LONG))
        .await
        .unwrap()
        .unwrap();

    let doomed = h.backend_with(options.clone()).await;
    let request = req(&name, "doomed", LONG);
    let mut waiting = Box::pin(doomed.acquire(&request, None));
    // Drive it until it is queued, then freeze it for good: no refresh,
    // no leave (its destructor never runs).
    tokio::select! {
        _ = &mut waiting => panic!("the doomed waiter cannot get the lock"),
        () = until_queued(&h, &name, 1) => {}
    }
    std::mem::forget(waiting);
    let entry_lives_until = Instant::now() + entry_ttl * 2 / 3;

    let other = h.backend_with(options.clone()).await;
    let plain = h.backend_with(RedisOptions::default()).await;
    let released_at = Instant::now();
    assert!(holder.release(&held).await.unwrap());
    let sent = Instant::now();
    let jumped = other
        .try_acquire(&req(&name, "jumper", LONG))
        .await
        .unwrap();
    let sent_plain = Instant::now();
    let jumped_plain = plain
        .try_acquire(&req(&name, "jumper", LONG))
        .await
        .unwrap();
    if sent < entry_lives_until {
        assert!(jumped.is_none(), "a queued waiter comes first");
    }
    if sent_plain < entry_lives_until {
        assert!(
            jumped_plain.is_none(),
            "default-mode clients respect the queue too"
        );
    }
    for (client, lease) in [(&other, jumped), (&plain, jumped_plain)] {
        if let Some(lease) = lease {
            assert!(client.release(&lease).await.unwrap());
        }
    }
    let deadline = Instant::now() + entry_ttl + Duration::from_secs(3);
    let lease = other
        .acquire(&req(&name, "next", LONG), Some(deadline))
        .await
        .expect("granted once the dead entry expired");
    let waited = released_at.elapsed();
    assert!(lease.token > held.token);
    assert!(
        waited <= entry_ttl + Duration::from_secs(2),
        "a dead waiter blocks for about the entry TTL, not longer: {waited:?}"
    );
    assert!(other.release(&lease).await.unwrap());
    assert!(
        h.leftovers(&name).await.is_empty(),
        "{:?}",
        h.leftovers(&name).await
    );
}
