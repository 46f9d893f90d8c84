//! The backend SPI: what a backend author needs beyond the user API
//! (`ARCHITECTURE.md` §3).
//!
//! - Requests and leases: [`AcquireRequest`] (what a backend is asked to
//!   grant; `Lease::granted` builds the answer), [`LossSignal`] and
//!   [`LossGroup`] (a session's leases, lost together).
//! - The queue hooks a FIFO backend gives the core's acquisition driver:
//!   [`LockQueue`], [`QueuePlace`]. The driver owns the deadline, backoff,
//!   transient retries and clean-up.
//! - Background clean-up of cancelled acquires: [`spawn_abandon`], which
//!   every backend's [`LockBackend::abandon_in_background`] delegates to.
//! - Waiting: [`PollPolicy`], [`Backoff`], [`WakeHub`],
//!   [`WakeSubscription`]; [`Wakes`] and [`TurnSubscription`] route a push
//!   channel's release messages (to a FIFO queue's new head only); [`until`] and [`sleep_until`] for deadlines.
//! - Per-lease timers without a task per lease: [`TimerQueue`], [`Timed`],
//!   [`TimerSlot`].
//! - URLs: [`BackendUrl`], [`url_scheme`], [`url_params`],
//!   [`without_params`], [`parse_host_list`].
//! - Conversions: [`ttl_millis`], [`round_up_ttl`],
//!   [`system_time_from_millis`], [`token_from_i64`], [`validate_owner`].
//!
//! Applications do not need this module: they use
//! [`Locker`](crate::Locker) and [`LockGuard`](crate::LockGuard).

mod abandon;
mod hosts;
mod queue;

use std::future::Future;

use tokio::time::Instant;

pub use self::abandon::spawn_abandon;
pub use self::hosts::parse_host_list;
pub use self::queue::{LockQueue, QueuePlace};
pub use crate::acquire::ABANDON_TIMEOUT;
pub use crate::lease::{AcquireRequest, system_time_from_millis, validate_owner};
pub use crate::loss::{LossGroup, LossSignal};
pub use crate::timers::{Timed, TimerQueue, TimerSlot};
pub use crate::ttl::{round_up_ttl, ttl_millis};
pub use crate::url::{BackendUrl, url_params, url_scheme, without_params};
pub use crate::wait::{Backoff, PollPolicy, WakeHub, WakeSubscription};
pub use crate::wakes::{TurnSubscription, Wakes, wait_for_turn};

use crate::error::{Error, Result};
use crate::lease::FencingToken;

/// A fencing token from a backend's signed integer (a SQL `BIGINT`, an
/// etcd revision, a ZooKeeper zxid), which must be positive.
///
/// # Errors
/// [`Error::Backend`] of `backend` for zero or a negative value.
///
/// ```
/// use lockkit_core::spi::token_from_i64;
///
/// assert_eq!(token_from_i64(7, "sql").unwrap().get(), 7);
/// assert!(token_from_i64(0, "sql").is_err());
/// ```
pub fn token_from_i64(value: i64, backend: &'static str) -> Result<FencingToken> {
    u64::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .map(FencingToken::new)
        .ok_or_else(|| Error::backend(backend, format!("invalid fencing token {value}"), None))
}

/// Sleeps until `at`, or forever when `None` (an absent deadline in a
/// `select!`).
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

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
