//! Background clean-up of cancelled acquires.

use std::time::Duration;

use crate::acquire::ABANDON_TIMEOUT;
use crate::backend::LockBackend;
use crate::lease::AcquireRequest;

/// When the second background attempt runs: a cancelled request may still
/// be in flight on another connection (a SQL pool), and commit after the
/// first attempt.
const SECOND_ATTEMPT_AFTER: Duration = Duration::from_secs(1);

/// Abandons `req` on `backend` in a task on the current Tokio runtime: at
/// once, and once more a second later, each attempt bounded by
/// [`ABANDON_TIMEOUT`]. Without a runtime, nothing happens and whatever the
/// request left expires with its TTL.
///
/// Every backend's [`LockBackend::abandon_in_background`] delegates here:
///
/// ```ignore
/// fn abandon_in_background(&self, req: AcquireRequest) {
///     lockkit_core::spi::spawn_abandon(self, req);
/// }
/// ```
pub fn spawn_abandon<B: LockBackend + Clone + 'static>(backend: &B, req: AcquireRequest) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::debug!(lock = %req.name, "no runtime to abandon a cancelled acquire; it expires with its TTL");
        return;
    };
    let backend = backend.clone();
    runtime.spawn(async move {
        for delay in [Duration::ZERO, SECOND_ATTEMPT_AFTER] {
            tokio::time::sleep(delay).await;
            match tokio::time::timeout(ABANDON_TIMEOUT, backend.abandon(&req)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::debug!(lock = %req.name, error = %err, "abandoning a cancelled acquire failed");
                }
                Err(_) => {
                    tracing::debug!(lock = %req.name, "abandoning a cancelled acquire timed out");
                }
            }
        }
    });
}
