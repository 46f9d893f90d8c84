//! Mutual exclusion, single winners, fencing, name independence, FIFO.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Harness, LONG_TTL, assert_clean, await_queued, request, unique_name};
use crate::locker::Locker;
use crate::name::LockName;
use crate::options::LockOptions;

/// N contenders on separate clients take the same lock repeatedly; a shared
/// critical section counts overlaps (must be 0), every contender gets all
/// its turns, and tokens rise in grant order.
pub async fn mutual_exclusion<H: Harness + ?Sized>(h: &H) {
    const CONTENDERS: usize = 6;
    const ROUNDS: usize = 4;
    let name = unique_name("mutual-exclusion");
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let opts = LockOptions::new()
        .ttl(LONG_TTL)
        .wait_timeout(Duration::from_secs(120));
    let mut tasks = JoinSet::new();
    for i in 0..CONTENDERS {
        let locker = Locker::new(h.client().await, format!("contender-{i}"))
            .and_then(|l| l.with_options(opts.clone()))
            .expect("locker");
        let (name, inside, overlaps, tokens) = (
            name.clone(),
            Arc::clone(&inside),
            Arc::clone(&overlaps),
            Arc::clone(&tokens),
        );
        tasks.spawn(async move {
            for _ in 0..ROUNDS {
                let guard = locker.acquire(&name).await.expect("acquire");
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                tokens.lock().expect("tokens").push(guard.token().get());
                tokio::time::sleep(Duration::from_millis(3)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                assert!(
                    guard.release().await.expect("release"),
                    "lease was lost mid-section"
                );
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("contender panicked");
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0, "two holders overlapped");
    let tokens = tokens.lock().expect("tokens").clone();
    assert_eq!(tokens.len(), CONTENDERS * ROUNDS, "every turn was granted");
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must rise in grant order: {tokens:?}"
    );
    assert_clean(h, &*h.client().await, &name).await;
}

/// N racers released by a barrier call `try_acquire` at once: exactly one wins.
pub async fn try_acquire_single_winner<H: Harness + ?Sized>(h: &H) {
    const RACERS: usize = 8;
    let name = unique_name("single-winner");
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = JoinSet::new();
    for i in 0..RACERS {
        let client = h.client().await;
        let (name, barrier) = (name.clone(), Arc::clone(&barrier));
        tasks.spawn(async move {
            let req = request(&name, &format!("racer-{i}"), LONG_TTL);
            barrier.wait().await;
            let won = client.try_acquire(&req).await.expect("try_acquire");
            (client, won)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (client, won) = joined.expect("racer panicked");
        if let Some(lease) = won {
            winners.push((client, lease));
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racer must win");
    let (client, lease) = winners.pop().expect("one winner");
    assert!(client.release(&lease).await.expect("release"));
    assert_clean(h, &*client, &name).await;
}

/// Tokens strictly increase across successive grants, clients, expiry
/// takeovers, force-releases, clean-ups and fresh clients.
pub async fn fencing_tokens_increase<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let name = unique_name("fencing");
    let (c1, c2, c3) = (h.client().await, h.client().await, h.client().await);
    let mut tokens = Vec::new();

    let l = c1
        .try_acquire(&request(&name, "one", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    tokens.push(l.token);
    assert!(c1.release(&l).await.expect("release"));

    let l = c2
        .try_acquire(&request(&name, "two", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    tokens.push(l.token);
    assert!(c2.release(&l).await.expect("release"));

    // Left to expire, then taken over.
    let l = c1
        .try_acquire(&request(&name, "one", timing.short_ttl))
        .await
        .expect("try")
        .expect("free");
    tokens.push(l.token);
    let deadline = Instant::now() + timing.short_ttl + timing.expiry_slack + timing.wake_latency;
    let l = c2
        .acquire(&request(&name, "two", LONG_TTL), Some(deadline))
        .await
        .expect("take over after expiry");
    tokens.push(l.token);

    assert!(c3.force_release(&name).await.expect("force"));
    let l = c3
        .try_acquire(&request(&name, "three", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    tokens.push(l.token);
    assert!(c3.release(&l).await.expect("release"));
    c3.cleanup_expired().await.expect("cleanup");

    let fresh = h.client().await;
    let l = fresh
        .try_acquire(&request(&name, "fresh", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    tokens.push(l.token);
    assert!(fresh.release(&l).await.expect("release"));

    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must strictly increase: {tokens:?}"
    );
    assert_clean(h, &*fresh, &name).await;
}

/// Locks whose names differ only in case, trailing space or a path suffix
/// are independent.
pub async fn names_independent_and_case_sensitive<H: Harness + ?Sized>(h: &H) {
    let base = unique_name("case");
    let names: Vec<LockName> = [
        format!("{base}/Node_B"),
        format!("{base}/node_b"),
        format!("{base}/NODE_B"),
        format!("{base}/node_b "),
        format!("{base}/node_b/child"),
        base.to_string(),
    ]
    .into_iter()
    .map(|n| LockName::new(n).expect("valid"))
    .collect();
    let client = h.client().await;
    let mut leases = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let lease = client
            .try_acquire(&request(name, &format!("owner-{i}"), LONG_TTL))
            .await
            .expect("try")
            .unwrap_or_else(|| panic!("{name:?} is independent of the others"));
        leases.push(lease);
    }
    for (name, lease) in names.iter().zip(&leases) {
        let info = client.current(name).await.expect("current").expect("held");
        assert_eq!(&info.name, name);
        assert_eq!(info.lease_id, lease.lease_id);
    }
    for lease in &leases {
        assert!(client.release(lease).await.expect("release"));
    }
    for name in &names {
        assert_clean(h, &*client, name).await;
    }
}

/// With a holder in place, waiters that arrive one after another are
/// granted in arrival order.
pub async fn fifo_order<H: Harness + ?Sized>(h: &H) {
    const WAITERS: usize = 5;
    let name = unique_name("fifo");
    let holder = h.client().await;
    let held = holder
        .try_acquire(&request(&name, "holder", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    for i in 0..WAITERS {
        let client = h.client().await;
        let (wanted, order) = (name.clone(), Arc::clone(&order));
        tasks.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let lease = client
                .acquire(
                    &request(&wanted, &format!("waiter-{i}"), LONG_TTL),
                    Some(deadline),
                )
                .await
                .expect("acquire");
            order.lock().expect("order").push(i);
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(client.release(&lease).await.expect("release"));
        });
        // Arrival order is the precondition under test: each waiter must be
        // queued before the next one asks.
        await_queued(h, &name, i + 1).await;
    }
    assert!(holder.release(&held).await.expect("release"));
    while let Some(joined) = tasks.join_next().await {
        joined.expect("waiter panicked");
    }
    let order = order.lock().expect("order").clone();
    assert_eq!(
        order,
        (0..WAITERS).collect::<Vec<_>>(),
        "grants must follow arrival order"
    );
    assert_clean(h, &*holder, &name).await;
}

/// Attempts refused because someone else holds the lock write nothing:
/// the stored state and the fence counter stay as they were (polling a
/// held lock must not take row locks, flush a log or burn tokens).
pub async fn refused_attempts_write_nothing<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("refused");
    let (holder, poller) = (h.client().await, h.client().await);
    let held = holder
        .try_acquire(&request(&name, "holder", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    let fence_before = h.stored_fence(&name).await;
    let stored_before = h.leftovers(&name).await;
    for _ in 0..20 {
        assert!(
            poller
                .try_acquire(&request(&name, "poller", LONG_TTL))
                .await
                .expect("try")
                .is_none()
        );
    }
    assert_eq!(
        h.stored_fence(&name).await,
        fence_before,
        "refused attempts moved the fence counter"
    );
    assert_eq!(
        h.leftovers(&name).await,
        stored_before,
        "refused attempts changed the stored records"
    );
    assert!(holder.release(&held).await.expect("release"));
    let next = poller
        .try_acquire(&request(&name, "poller", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    if let (Some(before), Some(after)) = (fence_before, h.stored_fence(&name).await) {
        assert_eq!(after, before + 1, "the next grant takes the next token");
    }
    assert!(next.token > held.token);
    assert!(poller.release(&next).await.expect("release"));
    assert_clean(h, &*poller, &name).await;
}
