//! Semaphores on SQLite without a server: N permits, refusal, mismatch,
//! idempotent retries, expiry of one permit only.
#![cfg(feature = "sqlite")]

use std::time::Duration;

use lockkit_core::spi::AcquireRequest;
use lockkit_core::{Error, LockBackend, LockName};

fn permit(name: &LockName, owner: &str, ttl: Duration, n: u32) -> AcquireRequest {
    AcquireRequest::new(name.clone(), owner, ttl)
        .and_then(|r| r.with_permits(n))
        .expect("request")
}

#[tokio::test]
async fn n_permits_on_one_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/locks.db", dir.path().display());
    let a = lockkit_sql::sqlite::connect(&url).await.expect("connect");
    let b = lockkit_sql::sqlite::connect(&url).await.expect("connect");
    assert_eq!(a.capabilities().max_permits, lockkit_core::MAX_PERMITS);
    let name = LockName::new("pool").expect("name");
    let long = Duration::from_secs(60);
    let first = a
        .try_acquire(&permit(&name, "a", long, 2))
        .await
        .expect("try")
        .expect("free");
    let short = permit(&name, "b", Duration::from_millis(200), 2);
    let second = b.try_acquire(&short).await.expect("try").expect("free");
    assert!(second.token > first.token);
    assert!(
        b.try_acquire(&permit(&name, "c", long, 2))
            .await
            .expect("try")
            .is_none()
    );
    assert!(matches!(
        b.try_acquire(&permit(&name, "d", long, 1)).await,
        Err(Error::PermitsMismatch {
            held: 2,
            asked: 1,
            ..
        })
    ));
    // A retry of a granted request is the same grant.
    let again = b
        .try_acquire(&short)
        .await
        .expect("retry")
        .expect("own grant");
    assert_eq!(again.token, second.token);
    let holders = a.holders(&name).await.expect("holders");
    assert_eq!(holders.len(), 2);
    assert!(holders.iter().all(|h| h.permits == 2));
    // The short permit expires; the long one stays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = a
        .try_acquire(&permit(&name, "c", long, 2))
        .await
        .expect("try")
        .expect("expired");
    assert!(third.token > second.token);
    assert!(!b.release(&second).await.expect("release"));
    let ids: Vec<_> = a
        .holders(&name)
        .await
        .expect("holders")
        .into_iter()
        .map(|h| h.lease_id)
        .collect();
    assert_eq!(ids, [first.lease_id.clone(), third.lease_id.clone()]);
    assert!(a.force_release(&name).await.expect("force"));
    assert!(a.holders(&name).await.expect("holders").is_empty());
    let lock = a
        .try_acquire(&permit(&name, "lock", long, 1))
        .await
        .expect("try")
        .expect("free");
    assert!(lock.token > third.token);
}
