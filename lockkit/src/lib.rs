//! # lockkit
//!
//! Distributed locks with fencing tokens, for data pipelines that share
//! sub-tasks. This is the crate applications depend on: it re-exports the
//! contract from `lockkit-core`, compiles in the backends you select with
//! cargo features, and picks one at run time from a URL with [`connect`].
//!
//! | feature | backend | URL |
//! |---|---|---|
//! | `sqlite` (default) | SQLite rows, embedded | `sqlite:///path/locks.db` |
//! | `postgres` | Postgres rows + `LISTEN/NOTIFY` | `postgres://…` |
//! | `mysql` | MySQL / MariaDB rows | `mysql://…` |
//! | `redis` | Redis `SET NX PX` + Lua | `redis://…` |
//! | `etcd` | etcd leases | `etcd://…` |
//! | `zookeeper` | ZooKeeper ephemeral nodes | `zk://…` |
//! | `full` | all of the above | |
//!
//! ```
//! use std::time::Duration;
//! use lockkit::{LockOptions, Locker};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lockkit::Result<()> {
//! let backend = lockkit::connect("sqlite::memory:").await?;
//! let locker = Locker::new(backend, "pipeline_1")?
//!     .with_options(LockOptions::new().ttl(Duration::from_secs(600)))?;
//!
//! locker
//!     .run_exclusive("node_b", locker.options(), |lease| async move {
//!         println!("node_b runs with fencing token {}", lease.token());
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```

mod connect;

pub use crate::connect::{SCHEMES, connect};
pub use lockkit_core::{
    BoxError, Capabilities, CleanupTask, Error, FencingToken, IntoLockName, Lease, LeaseHandle,
    LeaseId, LockBackend, LockGuard, LockInfo, LockName, LockOptions, Locker, LostReason,
    MAX_NAME_BYTES, MAX_PERMITS, MAX_TTL, MIN_TTL, PollPolicy, RELEASE_RETRY_FOR, Renewal, Result,
    redact_url, spawn_cleanup, validate_permits, validate_ttl,
};
pub use lockkit_core::{fence, memory, metrics, spi};

/// The SQL backends (`lockkit-sql`): SQLite, Postgres, MySQL/MariaDB.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use lockkit_sql as sql;

/// The Redis backend (`lockkit-redis`).
#[cfg(feature = "redis")]
pub use lockkit_redis as redis;

/// The etcd backend (`lockkit-etcd`).
#[cfg(feature = "etcd")]
pub use lockkit_etcd as etcd;

/// The ZooKeeper backend (`lockkit-zk`).
#[cfg(feature = "zookeeper")]
pub use lockkit_zk as zk;

/// The README's code samples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
