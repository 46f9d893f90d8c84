//! Fixture and harness for the etcd backend.
//!
//! - [`fixture::EtcdCluster`]: private etcd members on free ports (data in a
//!   temporary directory), one or several (3 for failover tests).
//! - [`fixture::shared_url`]: the server a test binary shares
//!   (`LOCKKIT_TEST_ETCD_URL` or a private member started once: a child
//!   process, or a container with `LOCKKIT_TEST_PROVISION=docker`).
//! - [`EtcdHarness`]: the conformance [`Harness`]: every client is a new
//!   [`EtcdBackend`] (its own connection and session leases); `leftovers`
//!   lists the raw keys under the lock's prefix (one per holder — every
//!   permit of a semaphore — and one per waiter); `queued` counts the keys
//!   behind the first N (N = the permit count stored with the oldest key);
//!   `crash` drops the client,
//!   which stops its keep-alives without revoking anything, so its keys
//!   live until etcd expires the session lease — as for a dead process.

pub mod fixture;

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::GetOptions;
use lockkit_core::conformance::Harness;
use lockkit_core::{LockBackend, LockName};
use lockkit_etcd::EtcdBackend;

pub use self::fixture::{EtcdCluster, EtcdMember, URL_VAR, shared_url};

/// The conformance harness: clients of one etcd (cluster) URL.
#[derive(Debug)]
pub struct EtcdHarness {
    url: String,
    inspector: EtcdBackend,
}

impl EtcdHarness {
    /// A harness on the shared server ([`shared_url`]).
    ///
    /// # Panics
    /// When the server cannot be started or reached.
    pub async fn start() -> Self {
        Self::with_url(shared_url()).await
    }

    /// A harness on `url`.
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub async fn with_url(url: impl Into<String>) -> Self {
        let url = url.into();
        let inspector = connect(&url).await;
        Self { url, inspector }
    }

    /// The URL clients connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A backend used to inspect raw state (its `client()` is a raw etcd
    /// client).
    pub fn inspector(&self) -> &EtcdBackend {
        &self.inspector
    }

    /// A new, independent backend instance.
    pub async fn backend(&self) -> EtcdBackend {
        connect(&self.url).await
    }

    /// The raw keys under `name`'s prefix, oldest first: `(key, create
    /// revision, lease id)`.
    pub async fn raw_keys(&self, name: &LockName) -> Vec<(String, i64, i64)> {
        self.raw_entries(name)
            .await
            .into_iter()
            .map(|e| (e.key, e.create_revision, e.lease))
            .collect()
    }

    /// The raw keys under `name`'s prefix with their values, oldest first.
    pub async fn raw_entries(&self, name: &LockName) -> Vec<RawKey> {
        let options = GetOptions::new().with_prefix().with_sort(
            etcd_client::SortTarget::Create,
            etcd_client::SortOrder::Ascend,
        );
        // Retried: during a failover some requests reach a dead member.
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let resp = loop {
            let mut kv = self.inspector.client().kv_client();
            match kv
                .get(self.inspector.name_prefix(name), Some(options.clone()))
                .await
            {
                Ok(resp) => break resp,
                Err(err) => {
                    assert!(
                        tokio::time::Instant::now() < give_up,
                        "read raw etcd keys: {err}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        };
        resp.kvs()
            .iter()
            .map(|kv| RawKey {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                create_revision: kv.create_revision(),
                lease: kv.lease(),
                value: String::from_utf8_lossy(kv.value()).into_owned(),
            })
            .collect()
    }
}

/// One raw key of a lock, as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawKey {
    /// The key.
    pub key: String,
    /// Its create revision (the token of its grant).
    pub create_revision: i64,
    /// The etcd lease (session) it lives on.
    pub lease: i64,
    /// Its value (`lockkit1\n<ms>\n<owner>` for a lock,
    /// `lockkit2\n<ms>\n<N>\n<owner>` for a semaphore of N permits).
    pub value: String,
}

impl RawKey {
    /// The permit count stored in the value (1 for a lock's form or a
    /// value that is not lockkit's).
    pub fn permits(&self) -> usize {
        let mut lines = self.value.split('\n');
        match (lines.next(), lines.nth(1)) {
            (Some("lockkit2"), Some(n)) => n.parse().unwrap_or(1),
            _ => 1,
        }
    }
}

impl EtcdHarness {
    /// Waits (by observing the raw keys, up to 20 s) until `name` has
    /// exactly `count` keys (holder plus waiters), and returns them.
    ///
    /// # Panics
    /// When that does not happen in time.
    pub async fn wait_for_keys(&self, name: &LockName, count: usize) -> Vec<(String, i64, i64)> {
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let keys = self.raw_keys(name).await;
            if keys.len() == count {
                return keys;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "expected {count} keys for {name:?}, found {keys:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Revokes an etcd lease through the raw client.
    ///
    /// # Panics
    /// When etcd refuses.
    pub async fn revoke(&self, lease: i64) {
        let mut client = self.inspector.client();
        client.lease_revoke(lease).await.expect("revoke the lease");
    }
}

/// Connects a backend, retrying briefly while a fresh server settles.
///
/// # Panics
/// When no connection succeeds within 20 s.
pub async fn connect(url: &str) -> EtcdBackend {
    let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match lockkit_etcd::connect(url).await {
            Ok(backend) => return backend,
            Err(err) if err.is_retryable() && tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(err) => panic!("connect to etcd at {url}: {err}"),
        }
    }
}

#[async_trait]
impl Harness for EtcdHarness {
    async fn client(&self) -> Arc<dyn LockBackend> {
        Arc::new(self.backend().await)
    }

    /// Every key under the name behind the first N (the holders) is a
    /// queued waiter.
    async fn queued(&self, name: &LockName) -> Option<usize> {
        let keys = self.raw_entries(name).await;
        let permits = keys.first().map_or(1, RawKey::permits);
        Some(keys.len().saturating_sub(permits))
    }

    /// Every key under the name: holders (each permit of a semaphore) and
    /// waiters alike.
    async fn leftovers(&self, name: &LockName) -> Vec<String> {
        self.raw_entries(name)
            .await
            .into_iter()
            .map(|e| {
                format!(
                    "key {:?} create_revision={} lease={:x} value={:?}",
                    e.key, e.create_revision, e.lease, e.value
                )
            })
            .collect()
    }
}
