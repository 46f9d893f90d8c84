//! A throw-away private CA and server certificate for the Redis TLS tests
//! (see [`crate::server::test_certificates`]).

use std::path::Path;

/// Writes `ca.crt`, `ca.key`, `server.crt` and `server.key` (for
/// `127.0.0.1` and `localhost`) into `dir`.
///
/// # Panics
/// When `openssl` is missing (the message says how to get it) or fails.
pub fn write_certificates(dir: &Path) {
    crate::server::test_certificates(dir);
}
