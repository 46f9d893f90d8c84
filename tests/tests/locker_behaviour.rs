//! `Locker` and `LockGuard` behaviour that does not depend on the backend:
//! renewal retries, loss on permanent renewal failure and on the local
//! deadline, maximum hold time, re-entry, the loss token.
//!
//! The memory backend keeps time with Tokio's clock, so these tests run on
//! a paused clock (`start_paused`): timers fire in order, at the virtual
//! instant they name, however loaded the machine is.

use std::sync::Arc;
use std::time::Duration;

use lockkit_core::conformance::{CountingBackend, InjectedFailure};
use lockkit_core::memory::MemoryBackend;
use lockkit_core::{Error, LockBackend, LockOptions, Locker, LostReason, Renewal};

fn locker_on(backend: Arc<dyn LockBackend>, opts: LockOptions) -> Locker {
    Locker::new(backend, "tester")
        .and_then(|l| l.with_options(opts))
        .expect("locker")
}

#[tokio::test(start_paused = true)]
async fn renewal_retries_transient_failures_until_it_succeeds() {
    let counting = CountingBackend::wrap(Arc::new(MemoryBackend::new()));
    let ttl = Duration::from_millis(900);
    let locker = locker_on(counting.clone(), LockOptions::new().ttl(ttl));
    let guard = locker.acquire("flaky").await.expect("acquire");
    // Two failures fit easily before the deadline (renewal starts at ttl/3).
    counting.fail_extends(2, InjectedFailure::Transient);
    let started = tokio::time::Instant::now();
    while counting.pending_extend_failures() > 0 {
        assert!(started.elapsed() < ttl * 3, "renewal never tried");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past the original deadline, the lease is still ours.
    tokio::time::sleep(ttl).await;
    assert!(
        !guard.is_lost(),
        "transient errors must be retried: {:?}",
        guard.lost_reason()
    );
    assert!(guard.release().await.expect("release"));
}

#[tokio::test(start_paused = true)]
async fn permanent_renewal_failure_reports_loss_and_frees_the_lock() {
    let memory = MemoryBackend::new();
    let counting = CountingBackend::wrap(Arc::new(memory.clone()));
    let ttl = Duration::from_millis(600);
    let locker = locker_on(counting.clone(), LockOptions::new().ttl(ttl));
    let guard = locker.acquire("doomed").await.expect("acquire");
    counting.fail_extends(1, InjectedFailure::Permanent);
    let reason = tokio::time::timeout(ttl * 2, guard.lost())
        .await
        .expect("lost fires");
    assert!(matches!(reason, LostReason::RenewalFailed(_)), "{reason:?}");
    assert!(matches!(guard.ensure_held(), Err(Error::Lost { .. })));
    // The guard gave the lock back instead of letting it block until expiry.
    let name = guard.name();
    let started = tokio::time::Instant::now();
    while memory.current(&name).await.expect("current").is_some() {
        assert!(started.elapsed() < ttl, "the lost lease was not released");
        tokio::task::yield_now().await;
    }
    // The locker forgot the name: acquiring again is not a deadlock.
    let again = locker.acquire("doomed").await.expect("acquire again");
    assert!(again.release().await.expect("release"));
}

#[tokio::test(start_paused = true)]
async fn transient_failures_past_the_deadline_report_expiry() {
    let counting = CountingBackend::wrap(Arc::new(MemoryBackend::new()));
    let ttl = Duration::from_millis(450);
    let locker = locker_on(counting.clone(), LockOptions::new().ttl(ttl));
    let guard = locker.acquire("unreachable").await.expect("acquire");
    counting.fail_extends(usize::MAX, InjectedFailure::Transient);
    let before_deadline = guard.lease().deadline;
    let reason = tokio::time::timeout(ttl * 3, guard.lost())
        .await
        .expect("lost fires");
    assert_eq!(reason, LostReason::Expired);
    assert!(
        tokio::time::Instant::now() >= before_deadline,
        "lost fired before the deadline"
    );
    counting.fail_extends(0, InjectedFailure::Transient);
}

#[tokio::test(start_paused = true)]
async fn max_hold_gives_the_lock_up() {
    let memory = MemoryBackend::new();
    let opts = LockOptions::new()
        .ttl(Duration::from_secs(30))
        .max_hold(Duration::from_millis(200));
    let locker = locker_on(Arc::new(memory.clone()), opts);
    let guard = locker.acquire("bounded").await.expect("acquire");
    let started = tokio::time::Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("lost fires");
    assert_eq!(reason, LostReason::MaxHoldExceeded);
    assert!(started.elapsed() >= Duration::from_millis(190));
    let other = Locker::new(Arc::new(memory), "other").expect("locker");
    let next = tokio::time::timeout(Duration::from_secs(1), other.acquire("bounded"))
        .await
        .expect("released promptly after max hold")
        .expect("acquire");
    assert!(next.release().await.expect("release"));
}

#[tokio::test(start_paused = true)]
async fn lost_token_is_a_child_and_explicit_extend_moves_the_deadline() {
    let memory = MemoryBackend::new();
    let locker = locker_on(
        Arc::new(memory.clone()),
        LockOptions::new()
            .ttl(Duration::from_secs(5))
            .renewal(Renewal::Off),
    );
    let guard = locker.acquire("token").await.expect("acquire");
    let child = guard.lost_token();
    child.cancel();
    assert!(
        !guard.is_lost(),
        "cancelling the child must not affect the guard"
    );
    let before = guard.lease().deadline;
    guard.extend(Duration::from_secs(20)).await.expect("extend");
    assert!(guard.lease().deadline > before);
    assert!(guard.remaining() > Duration::from_secs(15));
    let admin = Locker::new(Arc::new(memory.clone()), "admin").expect("locker");
    assert!(
        admin
            .backend()
            .force_release(&guard.name())
            .await
            .expect("force")
    );
    let watcher = guard.lost_token();
    tokio::time::timeout(Duration::from_secs(1), watcher.cancelled())
        .await
        .expect("token cancelled on loss");
    assert!(matches!(
        guard.extend(Duration::from_secs(5)).await,
        Err(Error::Lost { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn concurrent_acquires_of_one_name_by_one_locker_do_not_wait_for_themselves() {
    let locker = Locker::new(Arc::new(MemoryBackend::new()), "single").expect("locker");
    let (a, b) = tokio::join!(locker.acquire("same"), locker.acquire("same"));
    let (ok, err) = match (a, b) {
        (Ok(g), Err(e)) | (Err(e), Ok(g)) => (g, e),
        other => panic!("exactly one must succeed: {other:?}"),
    };
    assert!(matches!(err, Error::WouldDeadlock { .. }), "{err}");
    assert!(ok.release().await.expect("release"));
}

#[test]
fn guard_dropped_outside_a_runtime_does_not_panic() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let memory = MemoryBackend::new();
    let locker = Locker::new(Arc::new(memory.clone()), "outside").expect("locker");
    let guard = runtime
        .block_on(locker.acquire("outside"))
        .expect("acquire");
    drop(runtime);
    drop(guard); // no runtime: the lease is left to expire, without a panic
}

/// A release whose future is dropped while it retries (say, under a
/// caller's timeout) still frees the lock: the release's drop guard
/// finishes it in the background with the same retries.
#[tokio::test(start_paused = true)]
async fn a_cancelled_release_still_frees_the_lock() {
    let memory = MemoryBackend::new();
    let counting = CountingBackend::wrap(Arc::new(memory.clone()));
    let locker = locker_on(
        counting.clone(),
        LockOptions::new().ttl(Duration::from_secs(60)),
    );
    let guard = locker.acquire("cancelled-release").await.expect("acquire");
    let name = guard.name();
    counting.fail_releases(3, InjectedFailure::Transient, false);
    // The first attempt fails at once; the backoff before the next one is
    // at least 5 ms, so this timeout drops the future while it waits.
    let outcome = tokio::time::timeout(Duration::from_millis(1), guard.release()).await;
    assert!(outcome.is_err(), "the release was cut off: {outcome:?}");
    let started = tokio::time::Instant::now();
    while memory.current(&name).await.expect("current").is_some() {
        assert!(
            started.elapsed() < lockkit_core::RELEASE_RETRY_FOR,
            "the background release never freed the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counting.pending_release_failures(), 0, "it retried");
    let again = locker
        .acquire("cancelled-release")
        .await
        .expect("acquire again");
    assert!(again.release().await.expect("release"));
}

/// Upkeep does not grow per held lock: a thousand guards of one locker
/// renew in one backend call per renewal tick, not a thousand, and have no
/// task each — the locker's keeper serves them all, and stops once none
/// is held.
#[tokio::test(start_paused = true)]
async fn a_thousand_held_locks_renew_in_one_call_per_tick() {
    const LOCKS: usize = 1000;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let idle_tasks = tasks();
    let counting = CountingBackend::wrap(Arc::new(MemoryBackend::new()));
    let ttl = Duration::from_secs(3);
    let locker = locker_on(counting.clone(), LockOptions::new().ttl(ttl));
    let mut guards = Vec::with_capacity(LOCKS);
    for i in 0..LOCKS {
        guards.push(locker.acquire(format!("lock-{i}")).await.expect("acquire"));
    }
    assert!(
        tasks() <= idle_tasks + 2,
        "{} tasks for {LOCKS} held locks (the keeper, at most a batch)",
        tasks() - idle_tasks
    );
    let batches_before = counting.batch_calls();
    // Three TTLs: nine renewal periods of TTL/3.
    tokio::time::sleep(ttl * 3).await;
    let batches = counting.batch_calls() - batches_before;
    assert_eq!(
        counting.extend_calls(),
        0,
        "no lease was renewed on its own"
    );
    assert!(
        (8..=12).contains(&batches),
        "{batches} extend_many calls for {LOCKS} locks over 9 renewal periods"
    );
    assert!(
        guards.iter().all(|g| !g.is_lost()),
        "every lease was renewed"
    );
    for guard in guards {
        assert!(guard.release().await.expect("release"));
    }
    // The keeper's entries of released guards come up within a renewal
    // interval; then its task ends.
    tokio::time::sleep(ttl).await;
    assert_eq!(tasks(), idle_tasks, "the keeper stops when nothing is held");
}
