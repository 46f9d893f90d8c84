//! Fixtures and the conformance harness for the Redis backend.
//!
//! - [`RedisServer`]: a private `redis-server` on a free port with its own
//!   data directory and no persistence unless asked ([`RedisConfig`]:
//!   password, ACL user, AOF `always`, TLS with a private CA).
//! - [`RedisCluster`]: three cluster-enabled masters joined with
//!   `redis-cli --cluster create`.
//! - [`RedisHarness`]: the [`Harness`] over either, in default or FIFO
//!   mode. Its `leftovers` reads the raw lease, queue, waiter, permits
//!   and holders keys.
//!
//! The shared servers (one standalone, one cluster per test binary) are
//! started on first use, or taken from `LOCKKIT_TEST_REDIS_URL` and
//! `LOCKKIT_TEST_REDIS_CLUSTER_URL`; with `LOCKKIT_TEST_PROVISION=docker`
//! the standalone one is a container (the cluster stays processes). Tests
//! that kill connections, restart the server or need credentials start
//! their own [`RedisServer`].

mod cluster;
mod server;
mod tls;

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use lockkit_core::conformance::Harness;
use lockkit_core::{LockBackend, LockName};
use lockkit_redis::{RedisBackend, RedisOptions};
use redis::FromRedisValue;

pub use self::cluster::{ClusterNode, RedisCluster};
#[cfg(feature = "docker")]
pub use self::server::shared_container_url;
pub use self::server::{INSTALL_HINT, RedisConfig, RedisServer};
pub use self::tls::write_certificates;
use crate::provision::{Provision, provision};
use crate::server::env_url;

/// Environment variable naming an existing standalone server to test.
pub const URL_VAR: &str = "LOCKKIT_TEST_REDIS_URL";
/// Environment variable naming an existing Redis Cluster to test
/// (`redis://host:port?cluster=true`).
pub const CLUSTER_URL_VAR: &str = "LOCKKIT_TEST_REDIS_CLUSTER_URL";

/// The URL of this test binary's shared standalone server: started on
/// first use (and killed when the test process exits) as a child process
/// or, with `LOCKKIT_TEST_PROVISION=docker`, as a container
/// (`shared_container_url`, feature `docker`); or `LOCKKIT_TEST_REDIS_URL`.
///
/// # Panics
/// When the server cannot be started (see [`provision`]).
pub fn shared_server_url() -> String {
    static SHARED: OnceLock<String> = OnceLock::new();
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            env_url(URL_VAR).unwrap_or_else(|| match provision() {
                Provision::Process => SERVER
                    .get_or_init(|| RedisServer::start_shared(RedisConfig::default()))
                    .url(),
                #[cfg(feature = "docker")]
                Provision::Docker => shared_container_url(),
                #[cfg(not(feature = "docker"))]
                Provision::Docker => unreachable!("provision() refuses docker without the feature"),
            })
        })
        .clone()
}

/// The lockkit URL of this test binary's shared cluster: started on first
/// use, or `LOCKKIT_TEST_REDIS_CLUSTER_URL`.
pub fn shared_cluster_url() -> String {
    static SHARED: OnceLock<String> = OnceLock::new();
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            env_url(CLUSTER_URL_VAR)
                .unwrap_or_else(|| CLUSTER.get_or_init(RedisCluster::start).url())
        })
        .clone()
}

/// A raw connection for inspecting server state: plain or cluster.
#[derive(Clone)]
pub enum Inspector {
    /// A standalone server.
    Single(redis::aio::MultiplexedConnection),
    /// A cluster (commands are routed by key).
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Inspector {
    /// Connects to the server or cluster behind a lockkit Redis URL
    /// (lockkit's own parameters are ignored).
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub async fn connect(url: &str, cluster: bool) -> Self {
        let base = url.split('?').next().unwrap_or(url);
        if cluster {
            let client = redis::cluster::ClusterClient::new(vec![base]).expect("cluster client");
            Self::Cluster(
                client
                    .get_async_connection()
                    .await
                    .expect("connect to the cluster"),
            )
        } else {
            let client = redis::Client::open(base).expect("client");
            Self::Single(
                client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connect to redis"),
            )
        }
    }

    /// Runs one command and converts the reply.
    ///
    /// # Panics
    /// When the command fails.
    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let result = match self.clone() {
            Self::Single(mut c) => cmd.query_async(&mut c).await,
            Self::Cluster(mut c) => cmd.query_async(&mut c).await,
        };
        result.unwrap_or_else(|e| panic!("inspection command failed: {e}"))
    }
}

/// The conformance harness for Redis: each [`client`](Harness::client) is
/// a separately connected [`RedisBackend`] (its own connection and pub/sub
/// listener), as a separate process would have.
pub struct RedisHarness {
    url: String,
    options: RedisOptions,
    inspector: Inspector,
}

impl std::fmt::Debug for RedisHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHarness")
            .field("url", &lockkit_core::redact_url(&self.url))
            .field("fifo", &self.options.fifo)
            .finish_non_exhaustive()
    }
}

impl RedisHarness {
    /// Clients of `url` with `options` (`cluster` selects the inspector).
    pub async fn new(url: String, options: RedisOptions, cluster: bool) -> Self {
        let inspector = Inspector::connect(&url, cluster).await;
        Self {
            url,
            options,
            inspector,
        }
    }

    /// Unfair mode (`fifo(false)`) on the shared standalone server.
    pub async fn standalone() -> Self {
        Self::new(
            shared_server_url(),
            RedisOptions::default().fifo(false),
            false,
        )
        .await
    }

    /// FIFO mode on the shared standalone server.
    pub async fn standalone_fifo() -> Self {
        Self::new(
            shared_server_url(),
            RedisOptions::default().fifo(true),
            false,
        )
        .await
    }

    /// Unfair mode (`fifo(false)`) on the shared cluster.
    pub async fn cluster() -> Self {
        Self::new(
            shared_cluster_url(),
            RedisOptions::default().fifo(false),
            true,
        )
        .await
    }

    /// FIFO mode on the shared cluster.
    pub async fn cluster_fifo() -> Self {
        Self::new(
            shared_cluster_url(),
            RedisOptions::default().fifo(true),
            true,
        )
        .await
    }

    /// A new backend instance (concrete type).
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn backend(&self) -> RedisBackend {
        self.backend_with(self.options.clone()).await
    }

    /// A new backend instance with other options.
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn backend_with(&self, options: RedisOptions) -> RedisBackend {
        lockkit_redis::connect_with(&self.url, options)
            .await
            .expect("connect a Redis client")
    }

    /// The URL clients connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The Redis keys of `name` under the harness's prefix.
    pub fn keys(&self, name: &LockName) -> lockkit_redis::LockKeys {
        self.options.prefix.keys(name)
    }

    /// The raw-state inspector.
    pub fn inspector(&self) -> &Inspector {
        &self.inspector
    }
}

#[async_trait]
impl Harness for RedisHarness {
    async fn client(&self) -> Arc<dyn LockBackend> {
        Arc::new(self.backend().await)
    }

    /// In FIFO mode, the length of the name's queue in Redis; the default
    /// mode keeps no queue.
    async fn queued(&self, name: &LockName) -> Option<usize> {
        if !self.options.fifo {
            return None;
        }
        let keys = self.options.prefix.keys(name);
        let queued: usize = self
            .inspector
            .query(redis::cmd("ZCARD").arg(&keys.queue))
            .await;
        Some(queued)
    }

    /// The lease, queue, waiter, permits and holders keys still stored for
    /// `name`. The fence counter is left out on purpose: it outlives every
    /// lease so tokens never restart (one small key per name ever used).
    /// The per-name fence counter (`INCR`ed by every grant).
    async fn stored_fence(&self, name: &LockName) -> Option<u64> {
        let keys = self.options.prefix.keys(name);
        self.inspector
            .query::<Option<u64>>(redis::cmd("GET").arg(&keys.fence))
            .await
    }

    async fn leftovers(&self, name: &LockName) -> Vec<String> {
        let keys = self.options.prefix.keys(name);
        let mut left = Vec::new();
        let lock: Option<String> = self
            .inspector
            .query(redis::cmd("GET").arg(&keys.lock))
            .await;
        if let Some(value) = lock {
            // Absolute, so that unchanged state reads the same later.
            let expires: i64 = self
                .inspector
                .query(redis::cmd("PEXPIRETIME").arg(&keys.lock))
                .await;
            left.push(format!(
                "{} = {value:?} (expires at {expires} ms)",
                keys.lock
            ));
        }
        for key in [&keys.queue, &keys.waiters, &keys.permits] {
            let entries: Vec<(String, f64)> = self
                .inspector
                .query(
                    redis::cmd("ZRANGE")
                        .arg(key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES"),
                )
                .await;
            if !entries.is_empty() {
                left.push(format!("{key} = {entries:?}"));
            }
        }
        let holders: Vec<(String, String)> = self
            .inspector
            .query(redis::cmd("HGETALL").arg(&keys.holders))
            .await;
        if !holders.is_empty() {
            left.push(format!("{} = {holders:?}", keys.holders));
        }
        left
    }
}
