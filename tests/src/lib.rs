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
//! - [`proxy::FaultProxy`]: a TCP fault-injection proxy to put between a
//!   client and a server (delay, refuse, blackhole, cut, lost replies).
//!
//! - `postgres` / `mysql` + `sql_harness::SqlHarness` (features
//!   `postgres`, `mysql`): private servers started once per test binary,
//!   a fresh lock table per harness.
//! - `redis`, `etcd`, `zk` (features `redis`, `etcd`, `zookeeper`): private
//!   servers and clusters/ensembles for those backends.
//! - [`netns::NetLab`]: network namespaces on a private L2 segment, for
//!   partitions between cluster members (iptables DROP rules; needs root).
//!
//! - [`faults`]: the fault suite's taker processes, fenced store, history
//!   check, scenarios and reliability report.
//!
//! Server backends (Postgres, MariaDB, Redis, etcd, ZooKeeper) get fixtures
//! that start private servers on free ports from the binaries on `PATH`, or
//! use `LOCKKIT_TEST_<BACKEND>_URL`; a missing server is a test failure
//! that says how to get it, never a silent skip.
//!
//! [`provision`]: `LOCKKIT_TEST_PROVISION` chooses how the shared single
//! servers start: `process` (the default) as above, or `docker` — as
//! containers through `testcontainers` (module `docker`, cargo feature
//! `docker`), from the images of `docker/build-images.sh`, with host
//! networking on free loopback ports. Clusters, ensembles and the servers
//! that tests stop or kill stay processes in both modes. An unknown mode,
//! or `docker` without the feature, fails the test.

pub mod faults;
pub mod memory;
pub mod netns;
pub mod provision;
pub mod proxy;
pub mod server;
pub mod sqlite;

#[cfg(feature = "docker")]
pub mod docker;

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
