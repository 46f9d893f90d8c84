//! # lockkit-zk
//!
//! ZooKeeper backend for lockkit.
//!
//! **Status: placeholder.** Issue #6 (ZooKeeper backend) fills this crate; until then
//! [`connect`] returns a configuration error.

use lockkit_core::{Error, Result, redact_url};

/// The ZooKeeper client crate, re-exported for tests and advanced use.
pub use zookeeper_client;

/// The ZooKeeper lock backend (not implemented yet).
pub type ZkBackend = lockkit_core::memory::MemoryBackend;

/// Connects to ZooKeeper at `url`.
///
/// # Errors
/// Always, for now: [`Error::Configuration`] saying the backend is not
/// implemented yet (password redacted).
pub async fn connect(url: &str) -> Result<ZkBackend> {
    Err(Error::configuration(format!(
        "the zookeeper backend is not implemented yet (URL {:?})",
        redact_url(url)
    )))
}
