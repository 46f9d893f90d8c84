//! Releasing a lease: one place that retries transient failures.
//!
//! A release is idempotent per lease id (the backend deletes only the
//! record carrying it), so trying again after a connection reset or a
//! timed-out reply is always safe. Every release the core makes — the
//! guard's [`release`](crate::LockGuard::release), the best-effort release
//! on drop and after a loss, `run_exclusive` — goes through
//! [`release_retrying`].

use std::time::Duration;

use tokio::time::Instant;

use crate::backend::LockBackend;
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::wait::PollPolicy;

/// How long a release keeps retrying transient failures before it returns
/// the last one. After that the lease simply runs out at its TTL.
pub const RELEASE_RETRY_FOR: Duration = Duration::from_secs(5);

/// The backoff between release attempts: jittered, from 10 ms doubling up to
/// 500 ms.
const RELEASE_BACKOFF: PollPolicy = PollPolicy {
    initial: Duration::from_millis(10),
    max: Duration::from_millis(500),
    factor: 2.0,
};

/// Releases `lease` on `backend`, retrying transient errors with jittered
/// backoff for up to [`RELEASE_RETRY_FOR`] (each attempt is cut off at that
/// bound too).
///
/// Returns what the backend says: `true` if the lease was still held and is
/// now free. A failed attempt may have been applied with its reply lost;
/// when a later attempt then finds nothing to delete, the lease counts as
/// released by us (`true`) if the first attempt was sent before the lease's
/// local safe deadline — before that deadline nobody else can have been
/// granted the lock.
///
/// # Errors
/// The first permanent error, or the last transient one once the bound is
/// reached.
///
/// # Cancel safety
/// Dropping the future stops retrying; an attempt in flight may or may not
/// be applied. Either way the lease ends at its TTL at the latest.
pub(crate) async fn release_retrying(backend: &dyn LockBackend, lease: &Lease) -> Result<bool> {
    let first_sent = Instant::now();
    let give_up = first_sent + RELEASE_RETRY_FOR;
    let mut backoff = RELEASE_BACKOFF.backoff();
    let mut ambiguous = false;
    loop {
        let attempt = tokio::time::timeout_at(give_up, backend.release(lease))
            .await
            .unwrap_or_else(|_| {
                Err(Error::transient(
                    backend.kind(),
                    format!(
                        "releasing {:?} did not complete within {RELEASE_RETRY_FOR:?}",
                        lease.name
                    ),
                    None,
                ))
            });
        match attempt {
            Ok(true) => return Ok(true),
            Ok(false) => return Ok(ambiguous && first_sent < lease.deadline),
            Err(err) if err.is_retryable() => {
                let retry_at = Instant::now() + backoff.next_delay();
                if retry_at >= give_up {
                    tracing::warn!(backend = backend.kind(), lock = %lease.name, error = %err,
                        "release kept failing; the lease will expire after its TTL");
                    return Err(err);
                }
                tracing::debug!(backend = backend.kind(), lock = %lease.name, error = %err,
                    "release failed; retrying");
                ambiguous = true;
                tokio::time::sleep_until(retry_at).await;
            }
            Err(err) => return Err(err),
        }
    }
}
