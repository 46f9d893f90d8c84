//! The backend SPI: what a backend author needs beyond [`LockBackend`]
//! itself (`ARCHITECTURE.md` §3).
//!
//! - [`LockQueue`] and [`QueuePlace`]: the hooks a FIFO backend gives the
//!   core's acquisition driver (take a place or find it again, wait for the
//!   turn). The driver owns the deadline, backoff, transient retries and
//!   clean-up.
//! - [`spawn_abandon`]: the background clean-up every backend's
//!   [`LockBackend::abandon_in_background`] delegates to.
//! - [`until`]: a future bounded by an optional deadline.
//!
//! Applications do not need this module: they use
//! [`Locker`](crate::Locker) and [`LockGuard`](crate::LockGuard).

mod abandon;
mod queue;

use std::future::Future;

use tokio::time::Instant;

pub use self::abandon::spawn_abandon;
pub use self::queue::{LockQueue, QueuePlace};
pub use crate::acquire::ABANDON_TIMEOUT;

/// Runs `fut` unless `deadline` passes first (`None` then); without a
/// deadline, runs it to completion.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let soon = Some(Instant::now() + Duration::from_millis(10));
/// assert_eq!(lockkit_core::spi::until(soon, std::future::pending::<()>()).await, None);
/// assert_eq!(lockkit_core::spi::until(None, async { 7 }).await, Some(7));
/// # }
/// ```
pub async fn until<T>(deadline: Option<Instant>, fut: impl Future<Output = T>) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

#[cfg(doc)]
use crate::LockBackend;
