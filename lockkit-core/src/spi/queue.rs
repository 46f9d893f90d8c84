//! The queue hooks of FIFO backends.

use std::any::Any;
use std::fmt;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::Result;
use crate::lease::{AcquireRequest, Lease};

/// A FIFO backend's queue, driven by the core's acquisition driver.
///
/// The driver calls [`step`](Self::step) until it grants, and
/// [`wait_turn`](Self::wait_turn) in between; it retries transient errors
/// of both with backoff until the deadline, and on timeout, error or
/// cancellation removes the request's place through
/// [`LockBackend::abandon`](crate::LockBackend::abandon).
///
/// Both methods must be idempotent per lease id: after a lost reply the
/// driver calls `step` again for the same request, which must find the
/// request's place (or grant) again rather than queue it twice.
#[async_trait]
pub trait LockQueue: Send + Sync {
    /// One step for `req`: when `place` is empty, joins the line (or finds
    /// its entry again); otherwise checks and refreshes the place. Returns
    /// the lease when it is `req`'s turn, `None` while others come first —
    /// then `place` holds what [`wait_turn`](Self::wait_turn) needs. A place
    /// that vanished (its session ended, an admin removed it) is joined
    /// afresh.
    ///
    /// # Errors
    /// Transient errors are retried by the driver; permanent ones end the
    /// acquire.
    ///
    /// # Cancel safety
    /// The driver may drop the future at its deadline or when its caller
    /// does; what the step may have left is then abandoned by lease id.
    async fn step(
        &self,
        req: &AcquireRequest,
        place: &mut Option<QueuePlace>,
    ) -> Result<Option<Lease>>;

    /// Waits until it may be `req`'s turn — a push (the predecessor left, a
    /// release message), a timer of the backend's own (a holder's TTL, a
    /// refresh that keeps the place alive) — or until `until` passes; then
    /// returns, and the driver steps again.
    ///
    /// # Errors
    /// As [`step`](Self::step).
    ///
    /// # Cancel safety
    /// As [`step`](Self::step).
    async fn wait_turn(
        &self,
        req: &AcquireRequest,
        place: &mut QueuePlace,
        until: Option<Instant>,
    ) -> Result<()>;
}

/// What a backend remembers about a queued request between driver steps
/// (its key and revision, its node path, its predecessor). Opaque to the
/// driver.
pub struct QueuePlace(Box<dyn Any + Send + Sync>);

impl QueuePlace {
    /// Wraps backend state.
    pub fn new<T: Any + Send + Sync>(state: T) -> Self {
        Self(Box::new(state))
    }

    /// The backend state, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }

    /// The backend state, mutably, if it is a `T`.
    pub fn get_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.0.downcast_mut()
    }
}

impl fmt::Debug for QueuePlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QueuePlace")
    }
}
