//! The conformance kit against ZooKeeper: every property, each test in its
//! own chroot on one private standalone server per test binary (or the
//! server named by `LOCKKIT_TEST_ZK_URL`).
#![cfg(feature = "zookeeper")]

use lockkit_tests::zk::ZkHarness;

lockkit_core::conformance_suite! {
    harness: ZkHarness::start().await,
}
