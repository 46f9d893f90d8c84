//! Fixtures and harness for the ZooKeeper backend.
//!
//! - [`server::ZkServer`]: a private standalone server;
//!   [`server::ZkEnsemble`]: a private 3-server ensemble for failover tests.
//! - [`shared_url`]: one standalone server per test binary (or the server
//!   named by `LOCKKIT_TEST_ZK_URL`, e.g. `zk://127.0.0.1:2181/ci`); a
//!   container with `LOCKKIT_TEST_PROVISION=docker`.
//! - [`ZkHarness`]: the conformance harness; every harness works in its own
//!   chroot on the shared server, so suites cannot see each other's nodes.

pub mod server;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use lockkit_core::conformance::Harness;
use lockkit_core::{LeaseId, LockBackend, LockName};
use lockkit_zk::{ZkBackend, ZkOptions};
use zookeeper_client::Client;

use self::server::ZkServer;
use crate::provision::{Provision, provision};
use crate::server::env_url;

/// The environment variable naming an existing server to use.
pub const URL_VAR: &str = "LOCKKIT_TEST_ZK_URL";

/// Session timeout of test clients: short, so expiry tests are quick.
pub const TEST_SESSION_TIMEOUT: Duration = Duration::from_secs(4);

static SHARED: OnceLock<Mutex<ZkServer>> = OnceLock::new();

/// The base URL (`zk://hosts[/chroot]`) of the server shared by this test
/// binary: `LOCKKIT_TEST_ZK_URL` if set, else a private standalone server
/// started on first use (killed when the test process exits) — a child
/// process, or with `LOCKKIT_TEST_PROVISION=docker` a container
/// (`server::shared_container_url`, feature `docker`).
///
/// # Panics
/// When the server cannot be started (see [`provision`]).
pub fn shared_url() -> String {
    if let Some(url) = env_url(URL_VAR) {
        return url.trim_end_matches('/').to_owned();
    }
    match provision() {
        Provision::Process => {}
        #[cfg(feature = "docker")]
        Provision::Docker => return server::shared_container_url(),
        #[cfg(not(feature = "docker"))]
        Provision::Docker => unreachable!("provision() refuses docker without the feature"),
    }
    let server = SHARED.get_or_init(|| Mutex::new(ZkServer::start()));
    server.lock().unwrap_or_else(|e| e.into_inner()).url()
}

/// A unique chroot below the base URL's own chroot, if any.
pub fn unique_url(base: &str, tag: &str) -> String {
    format!("{base}/{tag}-{}", &LeaseId::random().as_str()[..12])
}

/// Test client options: a short session, detached so that dropping a
/// client is a crash (no clean close; its nodes stay until the session
/// times out), as a killed process would leave them.
pub fn test_options() -> ZkOptions {
    ZkOptions::default()
        .session_timeout(TEST_SESSION_TIMEOUT)
        .detached(true)
}

/// Raw children of lock `name` under the default root, with their data;
/// an existing lock node without children is reported too.
pub async fn raw_records(client: &Client, root: &str, name: &LockName) -> Vec<String> {
    let lock = lockkit_zk::lock_path(root, name);
    match client.list_children(&lock).await {
        Err(zookeeper_client::Error::NoNode) => Vec::new(),
        Err(err) => panic!("inspecting {lock:?}: {err}"),
        Ok(children) if children.is_empty() => vec![format!("empty lock node {lock:?}")],
        Ok(children) => {
            let mut out = Vec::new();
            for child in children {
                let path = format!("{lock}/{child}");
                match client.get_data(&path).await {
                    Ok((data, stat)) => out.push(format!(
                        "lease node {path:?} owner session {:#x}: {:?}",
                        stat.ephemeral_owner,
                        String::from_utf8_lossy(&data)
                    )),
                    Err(zookeeper_client::Error::NoNode) => {}
                    Err(err) => panic!("inspecting {path:?}: {err}"),
                }
            }
            out
        }
    }
}

/// The permit count stored in a lease node's data (its last line, the
/// seventh; 1 for records without one), `None` for data that is not a
/// lockkit record.
pub fn stored_permits(data: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(data).ok()?;
    if !text.starts_with("lockkit-zk/") {
        return None;
    }
    match text.split('\n').nth(6) {
        None => Some(1),
        Some(count) => count.parse().ok(),
    }
}

/// The lease nodes of lock `name` under `root`, in queue order, with
/// their data.
pub async fn lease_nodes(client: &Client, root: &str, name: &LockName) -> Vec<(String, Vec<u8>)> {
    let lock = lockkit_zk::lock_path(root, name);
    let mut children = match client.list_children(&lock).await {
        Err(zookeeper_client::Error::NoNode) => return Vec::new(),
        Err(err) => panic!("inspecting {lock:?}: {err}"),
        Ok(children) => children,
    };
    // Sequence numbers end every name: queue order.
    children.retain(|c| c.starts_with("lk-"));
    children.sort_by_key(|c| c.rsplit('-').next().and_then(|s| s.parse::<i64>().ok()));
    let mut out = Vec::new();
    for child in children {
        let path = format!("{lock}/{child}");
        match client.get_data(&path).await {
            Ok((data, _)) => out.push((path, data)),
            Err(zookeeper_client::Error::NoNode) => {}
            Err(err) => panic!("inspecting {path:?}: {err}"),
        }
    }
    out
}

/// The conformance harness: clients of one chroot on the shared server.
#[derive(Debug)]
pub struct ZkHarness {
    url: String,
    inspector: ZkBackend,
}

impl ZkHarness {
    /// A fresh chroot on the shared server.
    ///
    /// # Panics
    /// When the server cannot be started or reached.
    pub async fn start() -> Self {
        let url = unique_url(&shared_url(), "conformance");
        let inspector = lockkit_zk::connect_with(&url, test_options().detached(false))
            .await
            .unwrap_or_else(|e| panic!("connect the inspector to {url}: {e}"));
        Self { url, inspector }
    }

    /// The URL of this harness's chroot.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new backend (own session) on this chroot.
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn backend(&self) -> ZkBackend {
        lockkit_zk::connect_with(&self.url, test_options())
            .await
            .unwrap_or_else(|e| panic!("connect a ZooKeeper client to {}: {e}", self.url))
    }

    /// A raw client (the inspector's session, chrooted).
    pub fn raw(&self) -> Client {
        self.inspector.client()
    }
}

#[async_trait]
impl Harness for ZkHarness {
    async fn client(&self) -> Arc<dyn LockBackend> {
        Arc::new(self.backend().await)
    }

    /// Every lease node under the lock but the first N (the holders of a
    /// semaphore of N permits, N read from the head's record; 1 for a
    /// lock) is a queued waiter.
    async fn queued(&self, name: &LockName) -> Option<usize> {
        let nodes = lease_nodes(&self.raw(), self.inspector.root(), name).await;
        let permits = nodes
            .first()
            .and_then(|(_, data)| stored_permits(data))
            .unwrap_or(1);
        Some(
            nodes
                .len()
                .saturating_sub(usize::try_from(permits).unwrap_or(usize::MAX)),
        )
    }

    async fn leftovers(&self, name: &LockName) -> Vec<String> {
        raw_records(&self.raw(), self.inspector.root(), name).await
    }

    /// Dropping a detached client is a crash: its session is neither closed
    /// nor kept alive, and its nodes stay until the session times out.
    async fn crash(&self, client: Arc<dyn LockBackend>) {
        drop(client);
    }
}
