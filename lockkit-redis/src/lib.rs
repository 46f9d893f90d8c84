//! # lockkit-redis
//!
//! Redis backend for lockkit.
//!
//! **Status: placeholder.** Issue #4 (Redis backend) fills this crate; until then
//! [`connect`] returns a configuration error.

use lockkit_core::{Error, Result, redact_url};

/// The Redis client crate, re-exported for tests and advanced use.
pub use redis;

/// The Redis lock backend (not implemented yet).
pub type RedisBackend = lockkit_core::memory::MemoryBackend;

/// Connects to Redis at `url`.
///
/// # Errors
/// Always, for now: [`Error::Configuration`] saying the backend is not
/// implemented yet (password redacted).
pub async fn connect(url: &str) -> Result<RedisBackend> {
    Err(Error::configuration(format!(
        "the redis backend is not implemented yet (URL {:?})",
        redact_url(url)
    )))
}
