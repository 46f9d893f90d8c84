//! etcd sessions: one lease shared by every lock of a backend instance,
//! loss when it dies, `close`, effective TTLs, durable tokens.
#![cfg(feature = "etcd")]

use std::sync::Arc;
use std::time::Duration;

use lockkit_core::conformance::unique_name;
use lockkit_core::spi::AcquireRequest;
use lockkit_core::{LockBackend, LockName, LockOptions, Locker};
use lockkit_tests::etcd::{EtcdCluster, EtcdHarness};
use tokio::time::Instant;

fn req(name: &LockName, owner: &str, ttl: Duration) -> AcquireRequest {
    AcquireRequest::new(name.clone(), owner, ttl).expect("valid request")
}

/// Forty locks held by one backend instance share one etcd lease: upkeep
/// is one keep-alive stream, whatever the number of locks. A different TTL
/// gets its own session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_session_lease_carries_every_lock() {
    let h = EtcdHarness::start().await;
    let backend = h.backend().await;
    let ttl = Duration::from_secs(10);
    let mut leases = Vec::new();
    for i in 0..40 {
        let name = unique_name(&format!("etcd-shared-session-{i}"));
        let lease = backend
            .try_acquire(&req(&name, "many", ttl))
            .await
            .expect("try")
            .expect("free");
        assert_eq!(lease.ttl, ttl, "10 s is whole seconds already");
        leases.push(lease);
    }
    let sessions = backend.session_lease_ids().await;
    assert_eq!(sessions.len(), 1, "one session lease: {sessions:?}");
    for lease in &leases {
        let keys = h.raw_keys(&lease.name).await;
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].2, sessions[0], "every key is on the session lease");
    }
    // A rounded-up TTL: 1.5 s is asked, 2 s is granted and reported.
    let odd = unique_name("etcd-shared-session-odd");
    let lease = backend
        .try_acquire(&req(&odd, "many", Duration::from_millis(1500)))
        .await
        .expect("try")
        .expect("free");
    assert_eq!(
        lease.ttl,
        Duration::from_secs(2),
        "rounded up to whole seconds"
    );
    assert_eq!(backend.session_lease_ids().await.len(), 2);
    assert!(backend.release(&lease).await.expect("release"));
    for lease in &leases {
        assert!(backend.release(lease).await.expect("release"));
        assert!(h.raw_keys(&lease.name).await.is_empty());
    }
}

/// When the session lease of a holder is revoked (as when etcd expires
/// it), the holder's guard reports the loss without waiting for its next
/// renewal, its release says "not held", and others get the lock at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_session_fires_lost_on_every_guard() {
    let h = EtcdHarness::start().await;
    let backend = Arc::new(h.backend().await);
    let ttl = Duration::from_secs(6);
    let locker = Locker::new(Arc::clone(&backend) as Arc<dyn LockBackend>, "victim")
        .and_then(|l| l.with_options(LockOptions::new().ttl(ttl)))
        .expect("locker");
    let names = [
        unique_name("etcd-session-lost-a"),
        unique_name("etcd-session-lost-b"),
    ];
    let mut guards = Vec::new();
    for name in &names {
        guards.push(locker.acquire(name).await.expect("acquire"));
    }
    let sessions = backend.session_lease_ids().await;
    assert_eq!(sessions.len(), 1);
    h.revoke(sessions[0]).await;
    let revoked_at = Instant::now();
    for guard in &guards {
        // Found by the next keep-alive (every TTL/3), far before the 6 s TTL.
        tokio::time::timeout(ttl / 3 + Duration::from_secs(1), guard.lost())
            .await
            .expect("the guard reports the loss");
    }
    assert!(revoked_at.elapsed() < ttl, "lost long before the TTL");
    let other = h.backend().await;
    for name in &names {
        let lease = other
            .try_acquire(&req(name, "other", ttl))
            .await
            .expect("try")
            .expect("free once the session is gone");
        assert!(other.release(&lease).await.expect("release"));
    }
    for guard in guards {
        assert!(
            !guard.release().await.expect("release"),
            "not held any more"
        );
    }
    // The backend starts a new session for later locks.
    let guard = locker.acquire(&names[0]).await.expect("acquire again");
    let fresh = backend.session_lease_ids().await;
    assert_eq!(fresh.len(), 1);
    assert_ne!(fresh[0], sessions[0], "a new session lease");
    assert!(guard.release().await.expect("release"));
    for name in &names {
        assert!(h.raw_keys(name).await.is_empty());
    }
}

/// An admin's force-release from another client is reported to the
/// holder's guard at once (its backend watches the key), long before the
/// guard's next renewal would notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn force_release_is_seen_by_the_holder_at_once() {
    let h = EtcdHarness::start().await;
    let ttl = Duration::from_secs(30);
    let locker = Locker::new(
        Arc::new(h.backend().await) as Arc<dyn LockBackend>,
        "holder",
    )
    .and_then(|l| l.with_options(LockOptions::new().ttl(ttl)))
    .expect("locker");
    let name = unique_name("etcd-force-seen");
    let guard = locker.acquire(&name).await.expect("acquire");
    let admin = h.backend().await;
    assert!(admin.force_release(&name).await.expect("force"));
    // Renewal runs every TTL/3 = 10 s; the watch reports within a moment.
    tokio::time::timeout(Duration::from_secs(3), guard.lost())
        .await
        .expect("the holder learns of the force-release at once");
    assert!(!guard.release().await.expect("release"));
    assert!(h.raw_keys(&name).await.is_empty());
}

/// `close` revokes the sessions: held locks are freed at once and their
/// guards fire lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_frees_everything_at_once() {
    let h = EtcdHarness::start().await;
    let backend = Arc::new(h.backend().await);
    let locker = Locker::new(Arc::clone(&backend) as Arc<dyn LockBackend>, "closer")
        .and_then(|l| l.with_options(LockOptions::new().ttl(Duration::from_secs(30))))
        .expect("locker");
    let name = unique_name("etcd-close");
    let guard = locker.acquire(&name).await.expect("acquire");
    backend.close().await.expect("close");
    tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("lost at once");
    let other = h.backend().await;
    let lease = other
        .try_acquire(&req(&name, "other", Duration::from_secs(30)))
        .await
        .expect("try")
        .expect("free after close");
    assert!(other.release(&lease).await.expect("release"));
    assert!(!guard.release().await.expect("release"));
}

/// Tokens are create revisions, stored durably: they keep rising across a
/// restart of etcd, and clients reconnect by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_survive_a_server_restart() {
    let mut server = EtcdCluster::start(1, 500);
    let h = EtcdHarness::with_url(server.url()).await;
    let backend = h.backend().await;
    let name = unique_name("etcd-restart");
    let ttl = Duration::from_secs(5);
    let first = backend
        .try_acquire(&req(&name, "before", ttl))
        .await
        .expect("try")
        .expect("free");
    assert!(backend.release(&first).await.expect("release"));
    server.restart(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        match backend.try_acquire(&req(&name, "after", ttl)).await {
            Ok(Some(lease)) => break lease,
            Ok(None) => panic!("nobody else holds it"),
            Err(err) => {
                assert!(err.is_retryable(), "unexpected error: {err}");
                assert!(Instant::now() < deadline, "no reconnect: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(second.token > first.token, "{second:?} vs {first:?}");
    assert!(backend.release(&second).await.expect("release"));
}

/// etcd's minimum lease TTL (2 s with its default election timeout) wins
/// over a shorter request: the lease reports the TTL etcd granted, and
/// renewing at that TTL keeps the key on the same session lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn effective_ttl_is_what_etcd_granted() {
    let server = EtcdCluster::start(1, 1000);
    let h = EtcdHarness::with_url(server.url()).await;
    let backend = h.backend().await;
    let name = unique_name("etcd-min-ttl");
    let lease = backend
        .try_acquire(&req(&name, "short", Duration::from_millis(300)))
        .await
        .expect("try")
        .expect("free");
    assert_eq!(lease.ttl, Duration::from_secs(2), "etcd's minimum TTL");
    let sessions = backend.session_lease_ids().await;
    assert_eq!(sessions.len(), 1);
    let mut current = lease;
    for _ in 0..3 {
        current = backend.extend(&current, current.ttl).await.expect("extend");
        assert_eq!(current.ttl, Duration::from_secs(2));
    }
    assert_eq!(
        backend.session_lease_ids().await,
        sessions,
        "no second session"
    );
    let keys = h.raw_keys(&name).await;
    assert_eq!(
        keys[0].2, sessions[0],
        "the key stayed on its session lease"
    );
    // Asking for 2 s directly shares that session too.
    let other = unique_name("etcd-min-ttl-2");
    let lease2 = backend
        .try_acquire(&req(&other, "two", Duration::from_secs(2)))
        .await
        .expect("try")
        .expect("free");
    assert_eq!(backend.session_lease_ids().await, sessions);
    assert!(backend.release(&lease2).await.expect("release"));
    assert!(backend.release(&current).await.expect("release"));
}
