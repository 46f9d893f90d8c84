//! Expiry, crash release, renewal and loss signals.

use std::time::Duration;

use tokio::time::Instant;

use super::{Harness, LONG_TTL, assert_clean, request, unique_name};
use crate::error::{Error, LostReason};
use crate::locker::Locker;
use crate::options::{LockOptions, Renewal};

/// A lease left alone frees the lock after its TTL (plus the backend's
/// slack) and not before.
pub async fn expiry_frees_after_ttl_not_before<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let ttl = timing.short_ttl;
    let name = unique_name("expiry");
    let (a, b) = (h.client().await, h.client().await);
    let sent = Instant::now();
    let held = a
        .try_acquire(&request(&name, "a", ttl))
        .await
        .expect("try")
        .expect("free");
    if sent.elapsed() < ttl / 2 {
        assert!(
            b.try_acquire(&request(&name, "b", ttl))
                .await
                .expect("try")
                .is_none(),
            "the lock must be held before its TTL passes"
        );
    }
    let bound = ttl + timing.expiry_slack + timing.wake_latency;
    let lease = b
        .acquire(&request(&name, "b", LONG_TTL), Some(sent + bound))
        .await
        .expect("the lock must be free after TTL + slack");
    let freed_after = sent.elapsed();
    // The backend granted after `sent`, so expiry cannot be earlier than
    // sent + ttl; allow a few milliseconds of clock granularity.
    assert!(
        freed_after + Duration::from_millis(5) >= ttl,
        "freed after {freed_after:?}, before the TTL {ttl:?}"
    );
    assert!(lease.token > held.token);
    assert!(b.release(&lease).await.expect("release"));
    assert!(
        !a.release(&held).await.expect("release"),
        "the expired lease is not held"
    );
    assert_clean(h, &*b, &name).await;
}

/// A holder that dies without releasing (no renewal, no release) does not
/// block the lock for longer than TTL + slack.
pub async fn crash_releases_after_ttl<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let ttl = timing.short_ttl;
    let name = unique_name("crash");
    let doomed = h.client().await;
    let sent = Instant::now();
    let held = doomed
        .try_acquire(&request(&name, "doomed", ttl))
        .await
        .expect("try")
        .expect("free");
    h.crash(doomed).await;
    let survivor = h.client().await;
    let bound = ttl + timing.expiry_slack + timing.wake_latency;
    let lease = survivor
        .acquire(&request(&name, "survivor", LONG_TTL), Some(sent + bound))
        .await
        .expect("a crashed holder must not block beyond TTL + slack");
    // The granting request was sent before the deadline (its reply may
    // arrive a little later on a loaded machine).
    let granting_sent = lease.sent_at;
    assert!(
        granting_sent <= sent + bound,
        "granted by a request sent {:?} after the crash, beyond TTL + slack {bound:?}",
        granting_sent - sent
    );
    assert!(lease.token > held.token);
    assert!(survivor.release(&lease).await.expect("release"));
    assert_clean(h, &*survivor, &name).await;
}

/// Without renewal, the guard's loss signal fires when the local deadline
/// passes (not before), and the lock becomes free for others.
pub async fn lost_fires_on_expiry<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let ttl = timing.short_ttl;
    let name = unique_name("lost-on-expiry");
    let locker = Locker::new(h.client().await, "forgetful")
        .and_then(|l| l.with_options(LockOptions::new().ttl(ttl).renewal(Renewal::Off)))
        .expect("locker");
    let before = Instant::now();
    let guard = locker.acquire(&name).await.expect("acquire");
    let reason = tokio::time::timeout(ttl + Duration::from_secs(2), guard.lost())
        .await
        .expect("lost must fire once the TTL passes");
    let after = before.elapsed();
    assert!(
        after >= ttl,
        "lost fired after {after:?}, before the TTL {ttl:?}"
    );
    assert_eq!(
        reason,
        LostReason::Expired,
        "an expiry is reported as such, not as {reason:?}"
    );
    assert!(guard.is_lost());
    assert_eq!(guard.remaining(), Duration::ZERO);
    assert!(guard.ensure_held().is_err());
    let other = h.client().await;
    let deadline = Instant::now() + timing.expiry_slack + timing.wake_latency;
    let lease = other
        .acquire(&request(&name, "other", LONG_TTL), Some(deadline))
        .await
        .expect("free after the holder's lease expired");
    assert!(lease.token > guard.token());
    assert!(
        !guard.release().await.expect("release"),
        "a lost lease is not held"
    );
    assert!(other.release(&lease).await.expect("release"));
    assert_clean(h, &*other, &name).await;
}

/// When an admin force-releases a held lock, the holder's guard reports the
/// loss within a renewal interval (or at once with loss notifications).
pub async fn lost_fires_on_force_release<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let ttl = timing.short_ttl;
    let name = unique_name("lost-on-force");
    let locker = Locker::new(h.client().await, "victim")
        .and_then(|l| l.with_options(LockOptions::new().ttl(ttl)))
        .expect("locker");
    let guard = locker.acquire(&name).await.expect("acquire");
    let admin = h.client().await;
    assert!(admin.force_release(&name).await.expect("force"));
    let reason = tokio::time::timeout(
        ttl + timing.expiry_slack + Duration::from_secs(1),
        guard.lost(),
    )
    .await
    .expect("lost must fire after a force-release");
    assert!(
        matches!(reason, LostReason::NotHeld | LostReason::SessionLost(_)),
        "unexpected reason {reason:?}"
    );
    assert!(guard.is_lost());
    assert_eq!(guard.remaining(), Duration::ZERO);
    assert!(!guard.release().await.expect("release"));
    assert_clean(h, &*admin, &name).await;
}

/// With renewal on, a lease outlives its TTL several times over, keeping
/// its token and lease id; nobody else gets in.
pub async fn renewal_keeps_lease_alive<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    // Three short TTLs: a renewal every TTL/3 then has two thirds of the
    // TTL to get through on a loaded machine before the lease may expire.
    let ttl = timing.short_ttl * 3;
    let name = unique_name("renewal");
    let locker = Locker::new(h.client().await, "renewer")
        .and_then(|l| l.with_options(LockOptions::new().ttl(ttl)))
        .expect("locker");
    let guard = locker.acquire(&name).await.expect("acquire");
    let token = guard.token();
    let other = h.client().await;
    let until = Instant::now() + ttl * 2;
    while Instant::now() < until {
        tokio::time::sleep(ttl / 4).await;
        assert!(
            other
                .try_acquire(&request(&name, "other", ttl))
                .await
                .expect("try")
                .is_none(),
            "a renewed lease must stay held"
        );
        assert!(
            !guard.is_lost(),
            "renewal must keep the lease: {:?}",
            guard.lost_reason()
        );
    }
    let info = other.current(&name).await.expect("current").expect("held");
    assert_eq!(info.lease_id, guard.lease().lease_id);
    assert_eq!(info.token, token);
    assert_eq!(guard.token(), token);
    assert!(guard.release().await.expect("release"));
    assert_clean(h, &*other, &name).await;
}

/// `run_exclusive` returns the work's output and frees the lock; when the
/// lease is taken away mid-run, the work is dropped and `Lost` is returned.
pub async fn run_exclusive_stops_on_loss<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let ttl = timing.short_ttl;
    let name = unique_name("run-exclusive");
    let locker = Locker::new(h.client().await, "runner").expect("locker");
    let opts = LockOptions::new().ttl(ttl);

    let out = locker
        .run_exclusive(&name, &opts, |lease| async move { lease.token().get() })
        .await
        .expect("run_exclusive");
    assert!(out > 0);
    let admin = h.client().await;
    assert_eq!(
        admin.current(&name).await.expect("current"),
        None,
        "released after the work"
    );

    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let task = {
        let (locker, name, opts) = (locker.clone(), name.clone(), opts.clone());
        tokio::spawn(async move {
            locker
                .run_exclusive(&name, &opts, |_lease| async move {
                    let _ = started_tx.send(());
                    std::future::pending::<()>().await;
                })
                .await
        })
    };
    started_rx.await.expect("work started");
    assert!(admin.force_release(&name).await.expect("force"));
    let result = tokio::time::timeout(ttl + timing.expiry_slack + Duration::from_secs(1), task)
        .await
        .expect("run_exclusive must stop when the lease is lost")
        .expect("task");
    assert!(matches!(result, Err(Error::Lost { .. })), "got {result:?}");
    assert_clean(h, &*admin, &name).await;
}

/// `max_hold` counts from the grant, not from when waiting began: a guard
/// that waited first still holds for its whole `max_hold`, is then
/// reported lost (`MaxHoldExceeded`) and the lock is free at once — not
/// after its TTL.
pub async fn max_hold_counts_from_grant<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let name = unique_name("max-hold");
    let max_hold = Duration::from_millis(1500);
    let holder = h.client().await;
    let held = holder
        .try_acquire(&request(&name, "holder", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    let waiter = Locker::new(h.client().await, "bounded")
        .and_then(|l| {
            l.with_options(
                LockOptions::new()
                    .ttl(LONG_TTL)
                    .wait_timeout(Duration::from_secs(30))
                    .max_hold(max_hold),
            )
        })
        .expect("locker");
    let task = {
        let name = name.clone();
        tokio::spawn(async move {
            let guard = waiter.acquire(&name).await.expect("acquire after the wait");
            let granted_at = Instant::now();
            let reason = guard.lost().await;
            let lost_at = Instant::now();
            (guard, granted_at, lost_at, reason)
        })
    };
    super::await_queued(h, &name, 1).await;
    // Make the waiter wait about as long as its max hold.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(holder.release(&held).await.expect("release"));
    let (guard, granted_at, lost_at, reason) = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("max hold must end the hold")
        .expect("task");
    assert_eq!(reason, LostReason::MaxHoldExceeded);
    let held_for = lost_at - granted_at;
    assert!(
        held_for >= max_hold,
        "lost {held_for:?} after the grant, before max_hold {max_hold:?}: it counted the wait"
    );
    drop(guard);
    let other = h.client().await;
    let next = other
        .acquire(
            &request(&name, "other", LONG_TTL),
            Some(Instant::now() + timing.wake_latency + Duration::from_secs(1)),
        )
        .await
        .expect("given up after max hold: free at once, not after the 30 s TTL");
    assert!(other.release(&next).await.expect("release"));
    assert_clean(h, &*other, &name).await;
}

/// After an explicit `extend` to a shorter TTL, renewal follows the new
/// TTL: the lease is kept for several of the new TTLs and nobody gets in.
pub async fn renewal_follows_a_shorter_extend<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let long = timing.short_ttl * 12;
    let short = timing.short_ttl * 3;
    let name = unique_name("shorter-extend");
    let locker = Locker::new(h.client().await, "shortener")
        .and_then(|l| l.with_options(LockOptions::new().ttl(long)))
        .expect("locker");
    let guard = locker.acquire(&name).await.expect("acquire");
    guard.extend(short).await.expect("extend to a shorter TTL");
    assert_eq!(guard.lease().ttl, short);
    let other = h.client().await;
    // The first renewal at the old interval would come after `long / 3`,
    // beyond the new TTL; watch for twice that.
    let until = Instant::now() + long * 2 / 3;
    while Instant::now() < until {
        tokio::time::sleep(short / 4).await;
        assert!(
            !guard.is_lost(),
            "renewal must follow the shorter TTL: {:?}",
            guard.lost_reason()
        );
        assert!(
            other
                .try_acquire(&request(&name, "other", LONG_TTL))
                .await
                .expect("try")
                .is_none(),
            "the lease must stay held"
        );
    }
    assert!(guard.release().await.expect("release"));
    assert_clean(h, &*other, &name).await;
}

/// A guard dropped right when its loss is reported (as `run_exclusive`
/// does) still has its lease released on the backend, at once: here the
/// loss is the maximum hold time, while the backend still holds the lease
/// for its 30 s TTL.
pub async fn drop_after_loss_releases_at_once<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let name = unique_name("drop-after-loss");
    let max_hold = timing.short_ttl * 2;
    let locker = Locker::new(h.client().await, "dropper")
        .and_then(|l| l.with_options(LockOptions::new().ttl(LONG_TTL).max_hold(max_hold)))
        .expect("locker");
    let guard = locker.acquire(&name).await.expect("acquire");
    let reason = tokio::time::timeout(Duration::from_secs(30), guard.lost())
        .await
        .expect("lost after max hold");
    assert_eq!(reason, LostReason::MaxHoldExceeded);
    drop(guard);
    let other = h.client().await;
    let next = other
        .acquire(
            &request(&name, "other", LONG_TTL),
            Some(Instant::now() + timing.wake_latency + Duration::from_secs(1)),
        )
        .await
        .expect("the lost lease was released, not left to its 30 s TTL");
    assert!(other.release(&next).await.expect("release"));
    assert_clean(h, &*other, &name).await;
}

/// Renewal does not grow per held lock: the renewals of many guards of one
/// locker reach the backend in batches (`extend_many`), and every lease
/// in them stays held.
pub async fn renewals_are_batched<H: Harness + ?Sized>(h: &H) {
    const LOCKS: usize = 20;
    let timing = h.timing().await;
    let ttl = timing.short_ttl * 3;
    let counting = super::CountingBackend::wrap(h.client().await);
    let locker = Locker::new(counting.clone(), "batched")
        .and_then(|l| l.with_options(LockOptions::new().ttl(ttl)))
        .expect("locker");
    let names: Vec<_> = (0..LOCKS).map(|_| unique_name("batched")).collect();
    let mut guards = Vec::with_capacity(LOCKS);
    for name in &names {
        guards.push(locker.acquire(name).await.expect("acquire"));
    }
    let other = h.client().await;
    let until = Instant::now() + ttl * 2;
    while Instant::now() < until {
        tokio::time::sleep(ttl / 4).await;
        for name in names.iter().step_by(5) {
            assert!(
                other
                    .try_acquire(&request(name, "other", ttl))
                    .await
                    .expect("try")
                    .is_none(),
                "a batched renewal must keep {name:?} held"
            );
        }
        if let Some(lost) = guards.iter().find(|g| g.is_lost()) {
            panic!("{:?} was lost: {:?}", lost.name(), lost.lost_reason());
        }
    }
    let (batches, leases) = (counting.batch_calls(), counting.batched_leases());
    eprintln!(
        "renewals_are_batched: {leases} renewals of {LOCKS} locks in {batches} backend calls"
    );
    assert_eq!(
        counting.extend_calls(),
        0,
        "renewals go through extend_many"
    );
    assert!(
        leases >= LOCKS * 2,
        "every lease was renewed ({leases} renewals)"
    );
    // About one renewal per TTL/3 each: six over two TTLs, not a busy loop.
    assert!(
        leases <= LOCKS * 12,
        "{leases} renewals of {LOCKS} locks over two TTLs: renewal runs too often"
    );
    assert!(
        batches * 2 <= leases,
        "{leases} renewals in {batches} backend calls: they were not batched"
    );
    for guard in guards {
        assert!(guard.release().await.expect("release"));
    }
    for name in &names {
        assert_clean(h, &*other, name).await;
    }
}
