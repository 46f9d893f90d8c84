//! # lockkit-etcd
//!
//! etcd backend for lockkit.
//!
//! **Status: placeholder.** Issue #5 (etcd backend) fills this crate; until then
//! [`connect`] returns a configuration error.

use lockkit_core::{Error, Result, redact_url};

/// The etcd client crate, re-exported for tests and advanced use.
pub use etcd_client;

/// The etcd lock backend (not implemented yet).
pub type EtcdBackend = lockkit_core::memory::MemoryBackend;

/// Connects to etcd at `url`.
///
/// # Errors
/// Always, for now: [`Error::Configuration`] saying the backend is not
/// implemented yet (password redacted).
pub async fn connect(url: &str) -> Result<EtcdBackend> {
    Err(Error::configuration(format!(
        "the etcd backend is not implemented yet (URL {:?})",
        redact_url(url)
    )))
}
