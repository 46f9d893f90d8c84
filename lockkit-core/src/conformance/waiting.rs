//! Waiting: wake-ups, timeouts, cancellation, re-entry.

use std::time::Duration;

use tokio::time::Instant;

use super::{
    CountingBackend, Harness, InjectedFailure, LONG_TTL, assert_clean, await_queue_drained,
    await_queued, request, unique_name,
};
use crate::backend::LockBackend;
use crate::error::Error;
use crate::locker::Locker;
use crate::options::LockOptions;

/// A waiter is granted the lock promptly after the holder releases: within
/// the backend's wake latency, far below the holder's TTL and the waiter's
/// timeout — so it was woken by the release, not by expiry or timeout.
pub async fn release_wakes_waiter<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let name = unique_name("wake");
    let opts = LockOptions::new()
        .ttl(LONG_TTL)
        .wait_timeout(Duration::from_secs(20));
    let holder = Locker::new(h.client().await, "holder")
        .and_then(|l| l.with_options(opts.clone()))
        .expect("locker");
    let waiter = Locker::new(h.client().await, "waiter")
        .and_then(|l| l.with_options(opts))
        .expect("locker");
    let guard = holder.acquire(&name).await.expect("acquire");
    let task = {
        let name = name.clone();
        tokio::spawn(async move {
            let guard = waiter.acquire(&name).await;
            (guard, Instant::now())
        })
    };
    // Let the waiter start waiting; the assertion below holds either way.
    await_queued(h, &name, 1).await;
    assert!(!task.is_finished(), "the waiter cannot hold the lock yet");
    let released_at = Instant::now();
    assert!(guard.release().await.expect("release"));
    let (granted, granted_at) = task.await.expect("waiter task");
    let granted = granted.expect("the waiter gets the lock");
    let latency = granted_at - released_at;
    assert!(
        latency <= timing.wake_latency,
        "the waiter got the lock {latency:?} after the release; the bound is {:?}",
        timing.wake_latency
    );
    assert!(granted.release().await.expect("release"));
    assert_clean(h, &*h.client().await, &name).await;
}

/// An acquire with a deadline fails with `Timeout` at the deadline (not
/// much later) and leaves nothing behind.
pub async fn acquire_timeout_leaves_nothing<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("timeout");
    let holder = h.client().await;
    let held = holder
        .try_acquire(&request(&name, "holder", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    let locker = Locker::new(h.client().await, "impatient")
        .and_then(|l| {
            l.with_options(
                LockOptions::new()
                    .ttl(LONG_TTL)
                    .wait_timeout(Duration::from_millis(300)),
            )
        })
        .expect("locker");
    let started = Instant::now();
    let result = locker.acquire(&name).await;
    let waited = started.elapsed();
    assert!(
        matches!(result, Err(Error::Timeout { .. })),
        "expected Timeout, got {result:?}"
    );
    assert!(
        waited >= Duration::from_millis(299),
        "gave up early, after {waited:?}"
    );
    assert!(
        waited <= Duration::from_millis(300) + Duration::from_millis(1500),
        "gave up late, after {waited:?}"
    );
    assert!(holder.release(&held).await.expect("release"));
    assert_clean(h, &*holder, &name).await;
    let guard = locker
        .try_acquire(&name)
        .await
        .expect("no WouldDeadlock after a timeout")
        .expect("free");
    assert!(guard.release().await.expect("release"));
    assert_clean(h, &*holder, &name).await;
}

/// A waiting acquire that is cancelled (its future dropped) leaves nothing
/// behind: the next client gets the lock at once after the release.
pub async fn cancelled_acquire_leaves_nothing<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("cancel");
    let holder = h.client().await;
    let held = holder
        .try_acquire(&request(&name, "holder", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    let waiter = h.client().await;
    let task = {
        let name = name.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            waiter
                .acquire(&request(&name, "waiter", LONG_TTL), Some(deadline))
                .await
        })
    };
    await_queued(h, &name, 1).await;
    task.abort();
    let joined = task.await;
    assert!(
        joined.as_ref().is_err_and(|e| e.is_cancelled()),
        "the waiter was cancelled: {joined:?}"
    );
    // A dropped future cannot await its clean-up, so backends finish it in
    // the background; it must be done promptly, well before any queue
    // entry could expire by itself.
    await_queue_drained(h, &name, Duration::from_secs(2)).await;
    assert!(holder.release(&held).await.expect("release"));
    let next = h.client().await;
    let lease = next
        .try_acquire(&request(&name, "next", LONG_TTL))
        .await
        .expect("try")
        .expect("a cancelled waiter must not keep a place in line");
    assert!(next.release(&lease).await.expect("release"));
    assert_clean(h, &*next, &name).await;
}

/// A locker asked for a name it already holds fails at once with
/// `WouldDeadlock`; another owner just finds it busy; after release it works.
pub async fn would_deadlock_on_reentry<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("reentry");
    let locker = Locker::new(h.client().await, "p1").expect("locker");
    let guard = locker.acquire(&name).await.expect("acquire");
    let started = Instant::now();
    assert!(matches!(
        locker.acquire(&name).await,
        Err(Error::WouldDeadlock { .. })
    ));
    assert!(matches!(
        locker.clone().try_acquire(&name).await,
        Err(Error::WouldDeadlock { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "WouldDeadlock must be immediate"
    );
    let other = locker.for_owner("p2").expect("other owner");
    assert!(
        other.try_acquire(&name).await.expect("try").is_none(),
        "another owner sees it busy"
    );
    assert!(guard.release().await.expect("release"));
    let again = locker.acquire(&name).await.expect("acquire after release");
    assert!(again.release().await.expect("release"));
    assert_clean(h, &*h.client().await, &name).await;
}

/// Acquire is idempotent per lease id: when an attempt is applied by the
/// backend but its reply is lost, a retry of the same request gets that
/// grant back (same lease id and token) instead of finding the lock held
/// by itself — once by hand with `try_acquire`, once through the driver.
pub async fn lost_reply_acquire_is_idempotent<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("lost-reply");
    let counting = CountingBackend::wrap(h.client().await);
    let observer = h.client().await;

    let req = request(&name, "retrier", LONG_TTL);
    counting.fail_acquires(1, InjectedFailure::Transient, true);
    let first = counting.try_acquire(&req).await;
    assert!(
        first.as_ref().is_err_and(Error::is_retryable),
        "the injected lost reply: {first:?}"
    );
    let lease = counting
        .try_acquire(&req)
        .await
        .expect("retry")
        .expect("a retry with the same lease id gets its own grant back");
    let info = observer
        .current(&name)
        .await
        .expect("current")
        .expect("held");
    assert_eq!(info.lease_id, req.lease_id);
    assert_eq!(info.token, lease.token);
    assert!(counting.release(&lease).await.expect("release"));

    let locker = Locker::new(counting.clone(), "driven")
        .and_then(|l| {
            l.with_options(
                LockOptions::new()
                    .ttl(LONG_TTL)
                    .wait_timeout(Duration::from_secs(20)),
            )
        })
        .expect("locker");
    counting.fail_acquires(1, InjectedFailure::Transient, true);
    let started = Instant::now();
    let guard = locker
        .acquire(&name)
        .await
        .expect("the driver retries after the lost reply");
    assert!(
        started.elapsed() < LONG_TTL / 2,
        "granted at once, not after its own lease's TTL: {:?}",
        started.elapsed()
    );
    assert_eq!(counting.pending_acquire_failures(), 0);
    let info = observer
        .current(&name)
        .await
        .expect("current")
        .expect("held");
    assert_eq!(info.lease_id, guard.lease().lease_id);
    assert_eq!(info.token, guard.token());
    assert!(guard.release().await.expect("release"));
    assert_clean(h, &*observer, &name).await;
}

/// An acquire cancelled while its request is in flight — applied by the
/// backend (granted or queued there) but with no reply yet — leaves
/// nothing behind: the lease or queue entry it made is abandoned by lease
/// id, promptly, not left to its TTL.
pub async fn cancelled_mid_request_leaves_nothing<H: Harness + ?Sized>(h: &H) {
    for held_by_other in [false, true] {
        let name = unique_name("cancel-mid-request");
        let counting = CountingBackend::wrap(h.client().await);
        let observer = h.client().await;
        let holder = if held_by_other {
            let lease = observer
                .try_acquire(&request(&name, "holder", LONG_TTL))
                .await
                .expect("try")
                .expect("free");
            Some(lease)
        } else {
            None
        };
        counting.stall_acquires(1);
        let task = {
            let (counting, name) = (counting.clone(), name.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                counting
                    .acquire(&request(&name, "cancelled", LONG_TTL), Some(deadline))
                    .await
            })
        };
        // Wait until the stalled request has been applied by the backend.
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let applied = if held_by_other {
                h.queued(&name).await.is_none_or(|q| q >= 1)
            } else {
                observer.current(&name).await.expect("current").is_some()
            };
            if applied && counting.pending_acquire_failures() == 0 {
                break;
            }
            assert!(Instant::now() < give_up, "the stalled request never landed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if held_by_other && h.queued(&name).await.is_none() {
            // Nothing to observe for backends without a queue; let the
            // stalled attempt land.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        task.abort();
        assert!(task.await.is_err_and(|e| e.is_cancelled()));
        if let Some(lease) = holder {
            assert!(observer.release(&lease).await.expect("release"));
        }
        // The clean-up runs in the background: wait for it by observation.
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            let held = observer.current(&name).await.expect("current");
            let queued = h.queued(&name).await.unwrap_or(0);
            if held.is_none() && queued == 0 && h.leftovers(&name).await.is_empty() {
                break;
            }
            assert!(
                Instant::now() < give_up,
                "a cancelled in-flight acquire left {held:?}, {queued} queued, {:?}",
                h.leftovers(&name).await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let next = h.client().await;
        let lease = next
            .try_acquire(&request(&name, "next", LONG_TTL))
            .await
            .expect("try")
            .expect("free once the cancelled request was abandoned");
        assert!(next.release(&lease).await.expect("release"));
        assert_clean(h, &*next, &name).await;
    }
}
