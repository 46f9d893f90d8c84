//! The conformance kit against a private etcd (one member shared by the
//! tests of this binary, or `LOCKKIT_TEST_ETCD_URL`).
#![cfg(feature = "etcd")]

use lockkit_tests::etcd::EtcdHarness;

lockkit_core::conformance_suite! {
    harness: EtcdHarness::start().await,
}
