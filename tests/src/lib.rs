//! # lockkit-tests
//!
//! Fixtures that give the conformance kit (`lockkit_core::conformance`) a
//! [`Harness`](lockkit_core::conformance::Harness) per backend, and the
//! suites that run it (`tests/tests/*.rs`).
//!
//! - [`memory::MemoryHarness`]: the in-memory reference backend.
//! - [`sqlite::SqliteHarness`]: a fresh SQLite database file in a temporary
//!   directory per test; clients are separate connection pools on that
//!   file, as separate processes would have.
//!
//! - `postgres` / `mysql` + `sql_harness::SqlHarness` (features
//!   `postgres`, `mysql`): private servers started once per test binary,
//!   a fresh lock table per harness.
//! - `redis`, `etcd`, `zk` (features `redis`, `etcd`, `zookeeper`): private
//!   servers and clusters/ensembles for those backends.
//!
//! Server backends (Postgres, MariaDB, Redis, etcd, ZooKeeper) get fixtures
//! that start private servers on free ports from the binaries on `PATH`, or
//! use `LOCKKIT_TEST_<BACKEND>_URL`; a missing server is a test failure
//! that says how to get it, never a silent skip.

pub mod memory;
pub mod server;
pub mod sqlite;

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub mod sql_harness;
#[cfg(feature = "zookeeper")]
pub mod zk;
