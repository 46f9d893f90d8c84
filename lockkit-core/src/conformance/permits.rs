//! Semaphores: N permits per name, with the guarantees of a lock
//! (`ARCHITECTURE.md` §13).
//!
//! Every property uses a semaphore of [`PERMITS`] permits on clients of
//! their own. A backend runs them when it declares
//! [`Capabilities::max_permits`](crate::Capabilities::max_permits) of at
//! least [`PERMITS`]; [`permits_fifo_order`] also needs
//! [`Capabilities::fifo`](crate::Capabilities::fifo).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Harness, LONG_TTL, assert_clean, await_queue_drained, await_queued, unique_name};
use crate::backend::LockBackend;
use crate::error::{Error, LostReason};
use crate::lease::{AcquireRequest, Lease};
use crate::locker::Locker;
use crate::name::LockName;
use crate::options::{LockOptions, Renewal};

/// The permit count the properties use.
pub const PERMITS: u32 = 3;

/// A generous bound for waits that must end: the properties assert what
/// happened, never that it happened quickly (timing goals live in the
/// benchmarks).
const PATIENCE: Duration = Duration::from_secs(60);

/// A request for one of `permits` permits of `name`.
fn permit(name: &LockName, owner: &str, ttl: Duration, permits: u32) -> AcquireRequest {
    AcquireRequest::new(name.clone(), owner, ttl)
        .and_then(|req| req.with_permits(permits))
        .expect("valid request")
}

/// Takes `n` permits of `name` on clients of their own, one after another.
async fn take_permits<H: Harness + ?Sized>(
    h: &H,
    name: &LockName,
    n: u32,
    ttl: Duration,
) -> Vec<(Arc<dyn LockBackend>, Lease)> {
    let mut held = Vec::new();
    for i in 0..n {
        let client = h.client().await;
        let lease = client
            .try_acquire(&permit(name, &format!("holder-{i}"), ttl, PERMITS))
            .await
            .expect("try_acquire")
            .unwrap_or_else(|| panic!("permit {} of {PERMITS} must be free", i + 1));
        held.push((client, lease));
    }
    held
}

/// The lease ids `holders` reports for `name`, checking the records on
/// the way: at most [`PERMITS`], each with the permit count, by token.
async fn holder_ids(client: &dyn LockBackend, name: &LockName) -> Vec<String> {
    let holders = client.holders(name).await.expect("holders");
    assert!(
        holders.len() <= PERMITS as usize,
        "{} holders of a semaphore of {PERMITS}: {holders:?}",
        holders.len()
    );
    assert!(
        holders.windows(2).all(|w| w[0].token < w[1].token),
        "holders are sorted by token: {holders:?}"
    );
    for info in &holders {
        assert_eq!(&info.name, name);
        assert_eq!(
            info.permits, PERMITS,
            "a holder record carries its permit count"
        );
    }
    holders
        .into_iter()
        .map(|info| info.lease_id.to_string())
        .collect()
}

/// [`PERMITS`] requests on separate clients all get a permit; the next
/// try is refused; `holders` and `list` report exactly those holders with
/// their count; a retry of a holder's request is the same grant, not a
/// second permit; after every release nothing is left.
pub async fn permits_admit_n_holders<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("permits-admit");
    let held = take_permits(h, &name, PERMITS, LONG_TTL).await;
    let outsider = h.client().await;
    assert!(
        outsider
            .try_acquire(&permit(&name, "outsider", LONG_TTL, PERMITS))
            .await
            .expect("try")
            .is_none(),
        "a semaphore of {PERMITS} refuses a permit more"
    );
    let mut expected: Vec<String> = held.iter().map(|(_, l)| l.lease_id.to_string()).collect();
    let mut reported = holder_ids(&*outsider, &name).await;
    expected.sort();
    reported.sort();
    assert_eq!(reported, expected, "holders() reports every permit holder");
    let listed = outsider.list().await.expect("list");
    let listed: Vec<_> = listed.iter().filter(|info| info.name == name).collect();
    assert_eq!(
        listed.len(),
        PERMITS as usize,
        "list() has one record per permit"
    );
    assert!(
        listed.windows(2).all(|w| w[0].token < w[1].token),
        "list() sorts a name's permits by token"
    );
    let tokens: Vec<u64> = held.iter().map(|(_, l)| l.token.get()).collect();
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens rise in grant order: {tokens:?}"
    );
    // A retry of the first holder's request (its reply lost): the same
    // grant, not a permit more.
    let (first_client, first) = &held[0];
    let mut retry = permit(&name, &first.owner, LONG_TTL, PERMITS);
    retry.lease_id = first.lease_id.clone();
    let again = first_client
        .try_acquire(&retry)
        .await
        .expect("retry")
        .expect("a retry of a granted request finds its grant");
    assert_eq!(again.token, first.token, "a retry keeps its token");
    assert_eq!(holder_ids(&*outsider, &name).await.len(), PERMITS as usize);
    for (client, lease) in &held {
        assert!(client.release(lease).await.expect("release"));
    }
    assert_clean(h, &*outsider, &name).await;
}

/// Eight racers released by a barrier try at once: exactly [`PERMITS`]
/// win, with distinct tokens.
pub async fn permits_race_admits_exactly_n<H: Harness + ?Sized>(h: &H) {
    const RACERS: usize = 8;
    let name = unique_name("permits-race");
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = JoinSet::new();
    for i in 0..RACERS {
        let client = h.client().await;
        let (name, barrier) = (name.clone(), Arc::clone(&barrier));
        tasks.spawn(async move {
            let req = permit(&name, &format!("racer-{i}"), LONG_TTL, PERMITS);
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
    assert_eq!(
        winners.len(),
        PERMITS as usize,
        "exactly {PERMITS} racers must win a permit"
    );
    let tokens: HashSet<u64> = winners.iter().map(|(_, l)| l.token.get()).collect();
    assert_eq!(tokens.len(), winners.len(), "every grant has its own token");
    for (client, lease) in &winners {
        assert!(client.release(lease).await.expect("release"));
    }
    assert_clean(h, &*h.client().await, &name).await;
}

/// Six contenders on separate clients take the semaphore repeatedly
/// through [`Locker`]; a shared critical section never has more than
/// [`PERMITS`] inside, every turn is granted, and every grant has its own
/// token.
pub async fn permits_never_over_admitted<H: Harness + ?Sized>(h: &H) {
    const CONTENDERS: usize = 6;
    const ROUNDS: usize = 3;
    let name = unique_name("permits-contended");
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let opts = LockOptions::new()
        .ttl(LONG_TTL)
        .wait_timeout(Duration::from_secs(120))
        .permits(PERMITS);
    let mut tasks = JoinSet::new();
    for i in 0..CONTENDERS {
        let locker = Locker::new(h.client().await, format!("contender-{i}"))
            .and_then(|l| l.with_options(opts.clone()))
            .expect("locker");
        let (name, inside, most, tokens) = (
            name.clone(),
            Arc::clone(&inside),
            Arc::clone(&most),
            Arc::clone(&tokens),
        );
        tasks.spawn(async move {
            for _ in 0..ROUNDS {
                let guard = locker.acquire(&name).await.expect("acquire");
                assert_eq!(guard.permits(), PERMITS);
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokens.lock().expect("tokens").push(guard.token().get());
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                assert!(
                    guard.release().await.expect("release"),
                    "a permit was lost mid-section"
                );
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("contender panicked");
    }
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= PERMITS as usize,
        "{most} holders were inside a semaphore of {PERMITS}"
    );
    let tokens = tokens.lock().expect("tokens").clone();
    assert_eq!(tokens.len(), CONTENDERS * ROUNDS, "every turn was granted");
    let distinct: HashSet<u64> = tokens.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "tokens are never reused: {tokens:?}"
    );
    assert_clean(h, &*h.client().await, &name).await;
}

/// With every permit held, a waiter waits; when a holder that is not the
/// first releases, the waiter is admitted with a token above every
/// earlier grant, and the other holders keep their permits.
pub async fn permits_waiter_admitted_on_release<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("permits-waiter");
    let mut held = take_permits(h, &name, PERMITS, LONG_TTL).await;
    let waiter = h.client().await;
    let task = {
        let (name, waiter) = (name.clone(), Arc::clone(&waiter));
        tokio::spawn(async move {
            let req = permit(&name, "waiter", LONG_TTL, PERMITS);
            waiter.acquire(&req, Some(Instant::now() + PATIENCE)).await
        })
    };
    await_queued(h, &name, 1).await;
    assert!(
        !task.is_finished(),
        "a waiter must not be admitted while all {PERMITS} permits are held"
    );
    // The last holder goes: not the waiter's queue predecessor only, not
    // the oldest grant.
    let (client, middle) = held.remove(1);
    assert!(client.release(&middle).await.expect("release"));
    let lease = task
        .await
        .expect("waiter task")
        .expect("the waiter is admitted when a permit comes free");
    let highest = held.iter().map(|(_, l)| l.token).max().expect("holders");
    assert!(lease.token > highest && lease.token > middle.token);
    let mut ids = holder_ids(&*waiter, &name).await;
    ids.sort();
    let mut expected: Vec<String> = held
        .iter()
        .map(|(_, l)| l.lease_id.to_string())
        .chain([lease.lease_id.to_string()])
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "the other holders keep their permits");
    for (client, lease) in &held {
        assert!(client.release(lease).await.expect("release"));
    }
    assert!(waiter.release(&lease).await.expect("release"));
    assert_clean(h, &*waiter, &name).await;
}

/// A holder that is never renewed and a holder whose process crashed both
/// free their permits once their TTL passes; a holder with a long TTL
/// keeps its permit throughout, and the expired holder can neither extend
/// nor release any more.
pub async fn permits_expired_and_crashed_free_their_permits<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let short = timing.short_ttl;
    let name = unique_name("permits-expiry");
    let keeper = h.client().await;
    let kept = keeper
        .try_acquire(&permit(&name, "keeper", LONG_TTL, PERMITS))
        .await
        .expect("try")
        .expect("free");
    let idle = h.client().await;
    let expiring = idle
        .try_acquire(&permit(&name, "idle", short, PERMITS))
        .await
        .expect("try")
        .expect("free");
    let doomed = h.client().await;
    let crashed = doomed
        .try_acquire(&permit(&name, "doomed", short, PERMITS))
        .await
        .expect("try")
        .expect("free");
    h.crash(doomed).await;
    let mut newcomers = Vec::new();
    for i in 0..2 {
        let client = h.client().await;
        let req = permit(&name, &format!("newcomer-{i}"), LONG_TTL, PERMITS);
        let lease = client
            .acquire(&req, Some(Instant::now() + PATIENCE))
            .await
            .expect("expired and crashed holders free their permits");
        assert!(lease.token > expiring.token && lease.token > crashed.token);
        newcomers.push((client, lease));
    }
    let mut ids = holder_ids(&*keeper, &name).await;
    ids.sort();
    let mut expected: Vec<String> = newcomers
        .iter()
        .map(|(_, l)| l.lease_id.to_string())
        .chain([kept.lease_id.to_string()])
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "only the expired permits changed hands");
    assert!(matches!(
        idle.extend(&expiring, LONG_TTL).await,
        Err(Error::Lost { .. })
    ));
    assert!(!idle.release(&expiring).await.expect("release"));
    keeper
        .extend(&kept, LONG_TTL)
        .await
        .expect("the long holder still holds its permit");
    assert!(keeper.release(&kept).await.expect("release"));
    for (client, lease) in &newcomers {
        assert!(client.release(lease).await.expect("release"));
    }
    assert_clean(h, &*keeper, &name).await;
}

/// Only the holder of a lease id extends or releases its permit: a lease
/// id that holds no permit is refused and touches nobody, and one
/// holder's release leaves the others in place.
pub async fn permits_only_owner_can_extend_or_release<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("permits-owner");
    let held = take_permits(h, &name, 2, LONG_TTL).await;
    let intruder = h.client().await;
    let forged = Lease::granted(
        &permit(&name, &held[0].1.owner, LONG_TTL, PERMITS),
        held[0].1.token,
        Instant::now(),
    );
    assert!(matches!(
        intruder.extend(&forged, LONG_TTL).await,
        Err(Error::Lost {
            reason: LostReason::NotHeld,
            ..
        })
    ));
    assert!(!intruder.release(&forged).await.expect("release"));
    assert_eq!(holder_ids(&*intruder, &name).await.len(), 2);
    let (first_client, first) = &held[0];
    let (second_client, second) = &held[1];
    assert!(second_client.release(second).await.expect("release"));
    assert!(
        !second_client.release(second).await.expect("release"),
        "a second release finds nothing"
    );
    assert_eq!(
        holder_ids(&*intruder, &name).await,
        [first.lease_id.to_string()],
        "one holder's release leaves the others"
    );
    first_client
        .extend(first, LONG_TTL)
        .await
        .expect("the remaining holder extends");
    assert!(first_client.release(first).await.expect("release"));
    assert_clean(h, &*intruder, &name).await;
}

/// With every permit held, a wait that times out and a wait whose future
/// is dropped both leave nothing behind: once the holders release, a
/// fresh request is admitted at once and nothing of the name is stored.
pub async fn permits_cancelled_wait_leaves_nothing<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("permits-cancel");
    let held = take_permits(h, &name, PERMITS, LONG_TTL).await;
    let impatient = h.client().await;
    let timed_out = impatient
        .acquire(
            &permit(&name, "impatient", LONG_TTL, PERMITS),
            Some(Instant::now() + Duration::from_millis(300)),
        )
        .await;
    assert!(
        matches!(timed_out, Err(Error::Timeout { .. })),
        "a wait for a full semaphore times out: {timed_out:?}"
    );
    let dropped = h.client().await;
    let task = {
        let name = name.clone();
        tokio::spawn(async move {
            let req = permit(&name, "dropped", LONG_TTL, PERMITS);
            dropped.acquire(&req, Some(Instant::now() + PATIENCE)).await
        })
    };
    await_queued(h, &name, 1).await;
    task.abort();
    let joined = task.await;
    assert!(
        joined.as_ref().is_err_and(|e| e.is_cancelled()),
        "the waiter was cancelled: {joined:?}"
    );
    await_queue_drained(h, &name, Duration::from_secs(5)).await;
    for (client, lease) in &held {
        assert!(client.release(lease).await.expect("release"));
    }
    let next = h.client().await;
    let mut fresh = Vec::new();
    for i in 0..PERMITS {
        let lease = next
            .try_acquire(&permit(&name, &format!("next-{i}"), LONG_TTL, PERMITS))
            .await
            .expect("try")
            .expect("cancelled waiters keep no place and no permit");
        fresh.push(lease);
    }
    for lease in &fresh {
        assert!(next.release(lease).await.expect("release"));
    }
    assert_clean(h, &*next, &name).await;
}

/// Tokens of a semaphore rise across every grant: permits taken one after
/// another, after releases, after a holder changes, on fresh clients.
pub async fn permits_tokens_increase<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("permits-tokens");
    let mut tokens = Vec::new();
    let mut held = take_permits(h, &name, 2, LONG_TTL).await;
    tokens.extend(held.iter().map(|(_, l)| l.token));
    let (client, lease) = held.remove(0);
    assert!(client.release(&lease).await.expect("release"));
    for round in 0..3 {
        let client = h.client().await;
        let lease = client
            .try_acquire(&permit(&name, &format!("round-{round}"), LONG_TTL, PERMITS))
            .await
            .expect("try")
            .expect("a permit is free");
        tokens.push(lease.token);
        assert!(client.release(&lease).await.expect("release"));
    }
    for (client, lease) in &held {
        assert!(client.release(lease).await.expect("release"));
    }
    let fresh = h.client().await;
    let last = fresh
        .try_acquire(&permit(&name, "fresh", LONG_TTL, PERMITS))
        .await
        .expect("try")
        .expect("free");
    tokens.push(last.token);
    assert!(fresh.release(&last).await.expect("release"));
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must rise in grant order across permits: {tokens:?}"
    );
    assert_clean(h, &*fresh, &name).await;
}

/// Holders must agree on the permit count: while a semaphore of
/// [`PERMITS`] is held, a request for another count — a lock included —
/// fails with [`Error::PermitsMismatch`] and leaves nothing; once every
/// holder is gone, the other count works.
pub async fn permits_mismatch_rejected<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("permits-mismatch");
    let held = take_permits(h, &name, 1, LONG_TTL).await;
    let other = h.client().await;
    for asked in [1, PERMITS + 1] {
        let req = permit(&name, "disagrees", LONG_TTL, asked);
        let tried = other.try_acquire(&req).await;
        assert!(
            matches!(tried, Err(Error::PermitsMismatch { held: PERMITS, asked: a, .. }) if a == asked),
            "a try with {asked} permits against holders of {PERMITS}: {tried:?}"
        );
        let req = permit(&name, "disagrees", LONG_TTL, asked);
        let waited = other.acquire(&req, Some(Instant::now() + PATIENCE)).await;
        assert!(
            matches!(waited, Err(Error::PermitsMismatch { .. })),
            "an acquire with {asked} permits fails at once, not after waiting: {waited:?}"
        );
    }
    assert_eq!(holder_ids(&*other, &name).await.len(), 1);
    let (client, lease) = &held[0];
    assert!(client.release(lease).await.expect("release"));
    let lock = other
        .try_acquire(&permit(&name, "lock", LONG_TTL, 1))
        .await
        .expect("try")
        .expect("with the semaphore's holders gone, a lock of the name works");
    assert!(other.release(&lock).await.expect("release"));
    assert_clean(h, &*other, &name).await;
}

/// Every permit holder extends its own lease through its guard, and a
/// force-release of the semaphore frees every permit and fires every
/// holder's loss signal.
pub async fn permits_force_release_fires_every_holder<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("permits-force");
    let opts = LockOptions::new()
        .ttl(LONG_TTL)
        .renewal(Renewal::Off)
        .permits(PERMITS);
    let mut guards = Vec::new();
    for i in 0..2 {
        let locker = Locker::new(h.client().await, format!("holder-{i}"))
            .and_then(|l| l.with_options(opts.clone()))
            .expect("locker");
        let guard = locker.acquire(&name).await.expect("acquire");
        guard
            .extend(LONG_TTL)
            .await
            .expect("a holder extends its permit");
        guards.push((locker, guard));
    }
    let observer = h.client().await;
    assert_eq!(holder_ids(&*observer, &name).await.len(), 2);
    assert!(observer.force_release(&name).await.expect("force release"));
    assert!(
        observer.holders(&name).await.expect("holders").is_empty(),
        "force-release frees every permit"
    );
    for (_, guard) in &guards {
        assert!(
            guard.extend(LONG_TTL).await.is_err() || guard.is_lost(),
            "a force-released permit cannot be extended"
        );
        tokio::time::timeout(PATIENCE, guard.lost())
            .await
            .expect("force-release fires every holder's loss signal");
    }
    drop(guards);
    assert_clean(h, &*observer, &name).await;
}

/// Fair backends admit waiters of a semaphore in arrival order: with two
/// permits coming free, the first two waiters go and the third keeps
/// waiting until one of them releases.
pub async fn permits_fifo_order<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("permits-fifo");
    let held = take_permits(h, &name, PERMITS, LONG_TTL).await;
    let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for i in 0..3 {
        let client = h.client().await;
        let (lock, order_tx) = (name.clone(), order_tx.clone());
        waiters.push(tokio::spawn(async move {
            let req = permit(&lock, &format!("waiter-{i}"), LONG_TTL, PERMITS);
            let lease = client
                .acquire(&req, Some(Instant::now() + PATIENCE))
                .await
                .expect("waiter admitted");
            let _ = order_tx.send(i);
            (client, lease)
        }));
        await_queued(h, &name, i + 1).await;
    }
    drop(order_tx);
    for (client, lease) in &held[..2] {
        assert!(client.release(lease).await.expect("release"));
    }
    let first = order_rx.recv().await.expect("a waiter admitted");
    let second = order_rx.recv().await.expect("a second waiter admitted");
    let mut admitted = [first, second];
    admitted.sort_unstable();
    assert_eq!(
        admitted,
        [0, 1],
        "the two earliest waiters take the two free permits"
    );
    assert!(
        !waiters[2].is_finished(),
        "the third waiter waits while all permits are held"
    );
    let (client0, lease0) = waiters.remove(0).await.expect("waiter 0");
    assert!(client0.release(&lease0).await.expect("release"));
    assert_eq!(order_rx.recv().await, Some(2), "the third waiter goes next");
    for waiter in waiters {
        let (client, lease) = waiter.await.expect("waiter");
        assert!(client.release(&lease).await.expect("release"));
    }
    let (client, lease) = &held[2];
    assert!(client.release(lease).await.expect("release"));
    assert_clean(h, &*h.client().await, &name).await;
}
