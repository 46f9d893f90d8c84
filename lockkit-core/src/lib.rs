//! # lockkit-core
//!
//! The lease contract shared by every lockkit backend.
//!
//! - [`LockName`], [`Lease`], [`FencingToken`], [`LockInfo`]: the words.
//! - [`LockBackend`]: the object-safe trait a backend implements (try,
//!   acquire with a deadline, extend, release, inspect, force-release,
//!   clean up, capabilities).
//! - [`Locker`] and [`LockGuard`]: what applications use — validation,
//!   renewal at about TTL/3, a loss signal, `run_exclusive`, metrics and
//!   tracing.
//! - [`memory::MemoryBackend`]: the reference implementation of the contract.
//! - [`fence::Fence`]: the fencing-token check for the store the lock
//!   protects (and the SQL statement that does it in a database).
//! - [`spi`]: what backend authors need beyond this user API (requests,
//!   queue hooks, URL checks, conversions).
//! - `conformance` (feature `conformance`): the public test kit every
//!   backend runs.
//!
//! `ARCHITECTURE.md` at the repository root describes the contract, the
//! layout and one acquire's path through this crate.
//!
//! Shared logic lives here once: the acquisition driver
//! ([`LockBackend::acquire`]), waiting and backoff ([`PollPolicy`]),
//! batched renewal and the guard's state machine, validation
//! ([`LockName::new`], [`validate_ttl`], [`spi::BackendUrl`]), metrics
//! ([`metrics`]), redaction ([`redact_url`]), release retries
//! ([`RELEASE_RETRY_FOR`]). Backends only talk to their server.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use lockkit_core::{Locker, LockOptions, memory::MemoryBackend};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lockkit_core::Result<()> {
//! let locker = Locker::new(Arc::new(MemoryBackend::new()), "pipeline_1")?
//!     .with_options(LockOptions::new().ttl(Duration::from_secs(600)))?;
//! let guard = locker.acquire("node_b").await?;
//! // … run the sub-task, passing guard.token() to storage that checks it …
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```

mod acquire;
mod backend;
mod cleanup;
mod error;
mod guard;
mod keeper;
mod lease;
mod locker;
mod loss;
mod name;
mod options;
mod permits;
mod redact;
mod release;
mod renew;
mod timers;
mod ttl;
mod url;

pub mod fence;
pub mod memory;
pub mod metrics;
pub mod spi;
mod wait;
mod wakes;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use crate::backend::{Capabilities, LockBackend};
pub use crate::cleanup::{CleanupTask, spawn_cleanup};
pub use crate::error::{BoxError, Error, LostReason, Result};
pub use crate::guard::{LeaseHandle, LockGuard};
pub use crate::lease::{FencingToken, Lease, LeaseId, LockInfo};
pub use crate::locker::Locker;
pub use crate::name::{IntoLockName, LockName, MAX_NAME_BYTES};
pub use crate::options::{LockOptions, Renewal};
pub use crate::permits::{MAX_PERMITS, validate_permits};
pub use crate::redact::redact_url;
pub use crate::release::RELEASE_RETRY_FOR;
pub use crate::ttl::{MAX_TTL, MIN_TTL, validate_ttl};
pub use crate::wait::PollPolicy;

/// Re-exports for macros; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use tokio;
}
