//! Periodic clean-up of expired lease records, for any backend.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::backend::LockBackend;

/// A running periodic clean-up (see [`spawn_cleanup`]); dropping it (or
/// calling [`stop`](Self::stop)) stops the task.
#[derive(Debug)]
pub struct CleanupTask {
    handle: JoinHandle<()>,
}

impl CleanupTask {
    /// Stops the task.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for CleanupTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Runs [`LockBackend::cleanup_expired`] every `every` on the current Tokio
/// runtime — the seed's "clean up expired locks, run periodically". Errors
/// are logged (`tracing::warn`) and the next round tries again; how many
/// records each round removed is logged at debug level.
///
/// # Panics
/// Outside a Tokio runtime, or with a zero `every`.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use lockkit_core::{memory::MemoryBackend, spawn_cleanup};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let backend = Arc::new(MemoryBackend::new());
/// let cleanup = spawn_cleanup(backend, Duration::from_secs(60));
/// // … the application runs …
/// cleanup.stop();
/// # }
/// ```
pub fn spawn_cleanup(backend: Arc<dyn LockBackend>, every: Duration) -> CleanupTask {
    assert!(!every.is_zero(), "the clean-up interval must be above zero");
    let handle = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match backend.cleanup_expired().await {
                Ok(removed) => tracing::debug!(
                    backend = backend.kind(),
                    removed,
                    "expired leases cleaned up"
                ),
                Err(err) => {
                    tracing::warn!(backend = backend.kind(), error = %err, "clean-up of expired leases failed")
                }
            }
        }
    });
    CleanupTask { handle }
}
