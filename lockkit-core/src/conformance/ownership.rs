//! Only the owner extends or releases; inspection and admin operations.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{
    CountingBackend, Harness, InjectedFailure, LONG_TTL, assert_clean, request, unique_name,
};
use crate::error::Error;
use crate::locker::Locker;
use crate::options::LockOptions;

/// A's lease expires and B takes the lock: A's extend fails with `Lost`,
/// A's release says "not held", and B still holds.
pub async fn only_owner_can_extend_or_release<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let name = unique_name("owner-only");
    let (a, b) = (h.client().await, h.client().await);
    let la = a
        .try_acquire(&request(&name, "a", timing.short_ttl))
        .await
        .expect("try")
        .expect("free");
    let deadline = Instant::now() + timing.short_ttl + timing.expiry_slack + timing.wake_latency;
    let lb = b
        .acquire(&request(&name, "b", LONG_TTL), Some(deadline))
        .await
        .expect("b takes over after a's TTL");
    assert!(lb.token > la.token);

    let extended = a.extend(&la, LONG_TTL).await;
    assert!(
        matches!(extended, Err(Error::Lost { .. })),
        "a's extend must fail: {extended:?}"
    );
    assert!(
        !a.release(&la).await.expect("release"),
        "a's release must say not held"
    );

    let info = a
        .current(&name)
        .await
        .expect("current")
        .expect("b still holds");
    assert_eq!(info.lease_id, lb.lease_id, "b's lease is untouched");
    assert_eq!(info.owner, "b");
    let renewed = b.extend(&lb, LONG_TTL).await.expect("b can extend");
    assert!(b.release(&renewed).await.expect("release"));
    assert_clean(h, &*b, &name).await;
}

/// `current` and `list` report owner, lease id, token and times of holders.
pub async fn current_and_list_report_holder<H: Harness + ?Sized>(h: &H) {
    let n1 = unique_name("inspect");
    let n2 = unique_name("inspect");
    let (a, b, observer) = (h.client().await, h.client().await, h.client().await);
    let before = SystemTime::now();
    let l1 = a
        .try_acquire(&request(&n1, "pipeline_1", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    let l2 = b
        .try_acquire(&request(&n2, "pipeline_2", LONG_TTL))
        .await
        .expect("try")
        .expect("free");

    let info = observer.current(&n1).await.expect("current").expect("held");
    assert_eq!(info.name, n1);
    assert_eq!(info.owner, "pipeline_1");
    assert_eq!(info.lease_id, l1.lease_id);
    assert_eq!(info.token, l1.token);
    // Backend clock, same machine: allow generous skew for remote servers.
    let skew = Duration::from_secs(5);
    assert!(
        info.acquired_at + skew >= before,
        "acquired_at {:?} is too early",
        info.acquired_at
    );
    // Every backend knows when a record expires unless renewed.
    let expires_at = info
        .expires_at
        .expect("current() reports when the lease expires");
    let lifetime = expires_at
        .duration_since(info.acquired_at)
        .expect("expires after acquired");
    assert!(
        lifetime + Duration::from_secs(1) >= LONG_TTL
            && lifetime <= LONG_TTL + Duration::from_secs(2),
        "expires_at - acquired_at = {lifetime:?}, TTL was {LONG_TTL:?}"
    );

    let listed: Vec<_> = observer
        .list()
        .await
        .expect("list")
        .into_iter()
        .filter(|i| i.name == n1 || i.name == n2)
        .collect();
    assert_eq!(listed.len(), 2, "both locks are listed: {listed:?}");
    let mut expected = vec![
        (n1.clone(), "pipeline_1", l1.token),
        (n2.clone(), "pipeline_2", l2.token),
    ];
    expected.sort_by(|x, y| x.0.cmp(&y.0));
    for (info, (name, owner, token)) in listed.iter().zip(&expected) {
        assert_eq!(&info.name, name);
        assert_eq!(info.owner, *owner);
        assert_eq!(info.token, *token);
        assert!(info.expires_at.is_some(), "list() reports expiry: {info:?}");
    }

    assert!(a.release(&l1).await.expect("release"));
    assert!(b.release(&l2).await.expect("release"));
    assert_clean(h, &*observer, &n1).await;
    assert_clean(h, &*observer, &n2).await;
}

/// An admin's `force_release` frees a held lock; the old holder can neither
/// extend nor release; forcing a free lock reports `false`.
pub async fn force_release_frees_lock<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("force");
    let (holder, admin, next) = (h.client().await, h.client().await, h.client().await);
    let held = holder
        .try_acquire(&request(&name, "holder", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    assert!(
        admin.force_release(&name).await.expect("force"),
        "a held lock is removed"
    );
    assert!(
        !admin.force_release(&name).await.expect("force"),
        "nothing left to remove"
    );
    let taken = next
        .try_acquire(&request(&name, "next", LONG_TTL))
        .await
        .expect("try")
        .expect("free after force");
    assert!(taken.token > held.token);
    assert!(matches!(
        holder.extend(&held, LONG_TTL).await,
        Err(Error::Lost { .. })
    ));
    assert!(!holder.release(&held).await.expect("release"));
    assert_eq!(
        admin
            .current(&name)
            .await
            .expect("current")
            .map(|i| i.lease_id),
        Some(taken.lease_id.clone())
    );
    assert!(next.release(&taken).await.expect("release"));
    assert_clean(h, &*admin, &name).await;
}

/// `cleanup_expired` removes expired records and leaves live ones; tokens
/// keep increasing for a name whose record was cleaned up.
pub async fn cleanup_expired_removes_only_expired<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let short = unique_name("cleanup-short");
    let long = unique_name("cleanup-long");
    let client = h.client().await;
    let ls = client
        .try_acquire(&request(&short, "a", timing.short_ttl))
        .await
        .expect("try")
        .expect("free");
    let ll = client
        .try_acquire(&request(&long, "a", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    // Wait (by observation, not a blind sleep) until the short lease expired.
    let give_up = Instant::now() + timing.short_ttl + timing.expiry_slack + Duration::from_secs(2);
    while client.current(&short).await.expect("current").is_some() {
        assert!(Instant::now() < give_up, "the short lease never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.cleanup_expired().await.expect("cleanup");
    let left = h.leftovers(&short).await;
    assert!(
        left.is_empty(),
        "expired records remain after cleanup: {left:?}"
    );
    assert!(
        client.current(&long).await.expect("current").is_some(),
        "live lease survives cleanup"
    );
    let again = client
        .try_acquire(&request(&short, "b", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    assert!(
        again.token > ls.token,
        "token restarted after cleanup: {:?} <= {:?}",
        again.token,
        ls.token
    );
    assert!(client.release(&again).await.expect("release"));
    assert!(client.release(&ll).await.expect("release"));
    assert_clean(h, &*client, &short).await;
    assert_clean(h, &*client, &long).await;
}

/// Extending moves the expiry: the lease outlives its original TTL.
///
/// Judged on recorded instants: the original lease certainly expired by
/// `granted_by + ttl` (+ slack), the extended one certainly lives until
/// `extend_sent + 10 × ttl`; a refused try in between shows the extension.
pub async fn extend_moves_expiry<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let ttl = timing.short_ttl * 2;
    let name = unique_name("extend");
    let (a, b) = (h.client().await, h.client().await);
    let lease = a
        .try_acquire(&request(&name, "a", ttl))
        .await
        .expect("try")
        .expect("free");
    let granted_by = Instant::now();
    let extended = a.extend(&lease, ttl * 10).await.expect("extend");
    let extend_sent = extended.sent_at;
    assert!(extended.deadline > lease.deadline);
    assert_eq!(extended.token, lease.token);
    assert_eq!(extended.lease_id, lease.lease_id);
    tokio::time::sleep_until(granted_by + ttl + timing.expiry_slack).await;
    let try_sent = Instant::now();
    let got = b.try_acquire(&request(&name, "b", ttl)).await.expect("try");
    // Beyond the extended TTL (only on a very stalled machine) nothing
    // can be concluded.
    let judged = try_sent < extend_sent + extended.ttl;
    if judged {
        assert!(
            got.is_none(),
            "an extended lease must outlive its first TTL"
        );
        assert_eq!(
            b.current(&name).await.expect("current").map(|i| i.lease_id),
            Some(lease.lease_id.clone())
        );
    }
    if let Some(other) = got {
        assert!(b.release(&other).await.expect("release"));
    }
    let released = a.release(&extended).await.expect("release");
    assert!(released || !judged, "the extended lease was still held");
    assert_clean(h, &*b, &name).await;
}

/// Releasing twice is harmless (`true`, then `false`); a released guard
/// does nothing more; dropping a guard releases promptly (not after TTL).
pub async fn release_is_idempotent<H: Harness + ?Sized>(h: &H) {
    let timing = h.timing().await;
    let name = unique_name("idempotent");
    let client = h.client().await;
    let lease = client
        .try_acquire(&request(&name, "a", LONG_TTL))
        .await
        .expect("try")
        .expect("free");
    assert!(client.release(&lease).await.expect("release"));
    assert!(!client.release(&lease).await.expect("release again"));

    let locker = Locker::new(h.client().await, "guarded")
        .and_then(|l| l.with_options(LockOptions::new().ttl(LONG_TTL)))
        .expect("locker");
    let guard = locker.acquire(&name).await.expect("acquire");
    assert!(guard.release().await.expect("guard release"));

    let guard = locker.acquire(&name).await.expect("acquire again");
    let token = guard.token();
    drop(guard);
    let other = h.client().await;
    let deadline = Instant::now() + timing.wake_latency + Duration::from_secs(1);
    let next = other
        .acquire(&request(&name, "other", LONG_TTL), Some(deadline))
        .await
        .expect("a dropped guard releases promptly, long before its 30 s TTL");
    assert!(next.token > token);
    assert!(other.release(&next).await.expect("release"));
    assert_clean(h, &*other, &name).await;
}

/// A guard's release retries transient failures: a release that failed
/// before reaching the backend and one whose reply was lost after the
/// backend applied it both end with the lock free, `true` returned and
/// nothing left behind.
pub async fn release_retries_transient_failures<H: Harness + ?Sized>(h: &H) {
    let name = unique_name("release-retry");
    let counting = CountingBackend::wrap(h.client().await);
    let locker = Locker::new(counting.clone(), "flaky-network")
        .and_then(|l| l.with_options(LockOptions::new().ttl(LONG_TTL)))
        .expect("locker");
    let other = h.client().await;

    // Two attempts fail without reaching the backend; the third frees it.
    let guard = locker.acquire(&name).await.expect("acquire");
    counting.fail_releases(2, InjectedFailure::Transient, false);
    assert!(
        guard
            .release()
            .await
            .expect("release retries transient errors"),
        "the lease was held until the release"
    );
    assert_eq!(counting.pending_release_failures(), 0);
    assert_eq!(
        other.current(&name).await.expect("current"),
        None,
        "released"
    );

    // The first attempt is applied but its reply is lost; the retry finds
    // nothing to delete, which still means our lease was released.
    let guard = locker.acquire(&name).await.expect("acquire again");
    counting.fail_releases(1, InjectedFailure::Transient, true);
    assert!(
        guard.release().await.expect("release after a lost reply"),
        "a lost reply of a release that was applied still counts as released"
    );
    let lease = other
        .try_acquire(&request(&name, "other", LONG_TTL))
        .await
        .expect("try")
        .expect("free after the release");

    // A permanent failure is not retried.
    let name2 = unique_name("release-permanent");
    let guard = locker.acquire(&name2).await.expect("acquire");
    counting.fail_releases(1, InjectedFailure::Permanent, false);
    let calls = counting.calls();
    assert!(matches!(guard.release().await, Err(Error::Backend { .. })));
    assert_eq!(counting.calls(), calls + 1, "one attempt only");
    assert!(other.force_release(&name2).await.expect("force"));

    assert!(other.release(&lease).await.expect("release"));
    assert_clean(h, &*other, &name).await;
    assert_clean(h, &*other, &name2).await;
}
