//! The `LockBackend` trait: what every backend implements.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::Result;
use crate::lease::{AcquireRequest, Lease, LockInfo};
use crate::loss::LossSignal;
use crate::name::LockName;
use crate::spi::LockQueue;
use crate::wait::{PollPolicy, WakeSubscription};

/// What a backend can do, so callers and the conformance suite know what to
/// expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Waiters are granted the lock in the order they asked (a queue).
    pub fifo: bool,
    /// Waiters are woken by a push (pub/sub, NOTIFY, watch) rather than only
    /// by polling.
    pub push_wakeup: bool,
    /// Fencing tokens survive a restart of the backend server (durable
    /// storage), so they keep increasing across restarts.
    pub durable_tokens: bool,
    /// The finest TTL the backend stores; TTLs are rounded up to it.
    pub ttl_granularity: Duration,
    /// How late, beyond the TTL, the backend may free an abandoned lock
    /// (clock granularity, session timeouts).
    pub expiry_slack: Duration,
    /// The largest permit count the backend admits natively (semaphores);
    /// 1 means locks only. [`Locker`](crate::Locker) and the acquisition
    /// driver refuse larger counts before any I/O.
    pub max_permits: u32,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            fifo: false,
            push_wakeup: false,
            durable_tokens: false,
            ttl_granularity: Duration::from_millis(1),
            expiry_slack: Duration::from_millis(50),
            max_permits: 1,
        }
    }
}

/// A place where leases live: the contract every backend implements.
///
/// Object-safe: use it as `Arc<dyn LockBackend>`, so the backend can be chosen
/// at run time (`lockkit::connect(url)`). Applications normally use
/// [`Locker`](crate::Locker) on top of it, which adds renewal, loss signals,
/// metrics and validation of plain-string input.
///
/// Every method takes already validated input ([`LockName`], an
/// [`AcquireRequest`] built by [`AcquireRequest::new`]), so a backend never
/// sees an invalid name or TTL.
///
/// Invariants (checked by the conformance kit, `feature = "conformance"`):
/// mutual exclusion by the backend's clock, strictly increasing fencing
/// tokens per name, only the holder of a lease id can extend or release it,
/// expiry decided by the backend, no leftovers after release, timeout or
/// cancellation.
#[async_trait]
pub trait LockBackend: Send + Sync + Debug {
    /// A short, stable name for metrics and logs: `"memory"`, `"sqlite"`, …
    fn kind(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Tries once to take the lock. `Ok(None)` means someone else holds it
    /// (or, for fair backends, others are queued for it).
    ///
    /// Idempotent per lease id: a retry of the same request (after a reply
    /// was lost) returns the same grant — same token, TTL restarted —
    /// instead of finding the lock "held" by itself.
    ///
    /// The returned lease's deadline is counted from an instant taken before
    /// the request was sent.
    ///
    /// # Errors
    /// [`Error::Transient`](crate::Error::Transient) or
    /// [`Error::Backend`](crate::Error::Backend) when the backend fails.
    async fn try_acquire(&self, req: &AcquireRequest) -> Result<Option<Lease>>;

    /// Waits until the lock is granted or `deadline` passes (`None`: no
    /// deadline), through the core's one acquisition driver
    /// (`ARCHITECTURE.md` §4). **Backends do not override it**: they provide
    /// the primitives it drives.
    ///
    /// Without a [`queue`](Self::queue), the driver tries, then waits for a
    /// release hint from [`subscribe_releases`](Self::subscribe_releases)
    /// or a jittered, capped poll ([`poll_policy`](Self::poll_policy)),
    /// whichever comes first, never past the deadline. With a queue, it
    /// steps the queue and waits for the turn. Transient errors are retried
    /// (every primitive is idempotent per lease id).
    ///
    /// # Errors
    /// [`Error::Timeout`](crate::Error::Timeout) when the deadline passes,
    /// permanent backend errors as they happen. Whatever the request left
    /// is abandoned first.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request in the background
    /// ([`abandon_in_background`](Self::abandon_in_background)): nothing of
    /// it is left behind beyond that clean-up.
    async fn acquire(&self, req: &AcquireRequest, deadline: Option<Instant>) -> Result<Lease> {
        crate::acquire::drive(self, req, deadline).await
    }

    /// The backend's FIFO queue, if it has one (then
    /// [`Capabilities::fifo`] is true). The default is `None`: waiters
    /// poll, woken early by release hints.
    fn queue(&self) -> Option<&dyn LockQueue> {
        None
    }

    /// Removes whatever an acquire with `req`'s lease id may have left: a
    /// lease granted by a request whose reply never arrived, a queue entry.
    /// Idempotent; never touches another lease.
    ///
    /// # Errors
    /// Backend errors only.
    async fn abandon(&self, req: &AcquireRequest) -> Result<()>;

    /// Runs [`abandon`](Self::abandon) for `req` in the background, for
    /// acquires cancelled by dropping their future. Implement it as
    /// `lockkit_core::spi::spawn_abandon(self, req)`.
    fn abandon_in_background(&self, req: AcquireRequest);

    /// Extends a lease it still holds to `ttl` from now (by the backend's
    /// clock) and returns the renewed lease.
    ///
    /// # Errors
    /// [`Error::Lost`](crate::Error::Lost) when the lease is no longer held
    /// under this lease id (expired, taken over, force-released); backend
    /// errors otherwise.
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;

    /// Extends several leases at once — the guards' renewals that came due
    /// together — and returns one result per lease, in order. Backends do
    /// it in one round trip where they can (a pipeline, one statement, one
    /// multi-write) or without one where a session keep-alive already
    /// proves the leases. The default extends them one by one.
    ///
    /// # Errors
    /// Per lease, as [`extend`](Self::extend).
    async fn extend_many(&self, batch: &[(Lease, Duration)]) -> Vec<Result<Lease>> {
        let mut results = Vec::with_capacity(batch.len());
        for (lease, ttl) in batch {
            results.push(self.extend(lease, *ttl).await);
        }
        results
    }

    /// Releases a lease. Returns `true` if it was still held by this lease id
    /// and is now free, `false` if it was not held (already released, expired
    /// or taken over); the current holder is never touched.
    ///
    /// # Errors
    /// Backend errors only.
    async fn release(&self, lease: &Lease) -> Result<bool>;

    /// Every current, unexpired holder of `name` — one per held permit,
    /// at most its permit count — sorted by token.
    ///
    /// # Errors
    /// Backend errors only.
    async fn holders(&self, name: &LockName) -> Result<Vec<LockInfo>>;

    /// The current, unexpired holder of `name`, if any: for a semaphore,
    /// the holder with the lowest token. Provided from
    /// [`holders`](Self::holders).
    ///
    /// # Errors
    /// Backend errors only.
    async fn current(&self, name: &LockName) -> Result<Option<LockInfo>> {
        Ok(self.holders(name).await?.into_iter().next())
    }

    /// Every current holder of every lock — one record per held permit —
    /// sorted by name, then token.
    ///
    /// # Errors
    /// Backend errors only.
    async fn list(&self) -> Result<Vec<LockInfo>>;

    /// Admin: frees `name` whoever holds it — every permit of a semaphore.
    /// Returns `true` if a live lease was removed. The holder's guard finds out at its next renewal (or at
    /// once, for backends with loss notifications).
    ///
    /// # Errors
    /// Backend errors only.
    async fn force_release(&self, name: &LockName) -> Result<bool>;

    /// Deletes records of expired leases and returns how many were removed.
    /// Backends that expire records themselves return `Ok(0)`.
    ///
    /// # Errors
    /// Backend errors only.
    async fn cleanup_expired(&self) -> Result<u64>;

    /// Subscribes to "this lock may have been released" hints for `name`.
    /// `Ok(None)` (the default) means the backend has no push notifications
    /// and waiters poll.
    ///
    /// Called *before* a try, so a release between the try and the wait is
    /// not missed.
    ///
    /// # Errors
    /// Backend errors setting up the subscription.
    async fn subscribe_releases(&self, name: &LockName) -> Result<Option<WakeSubscription>> {
        let _ = name;
        Ok(None)
    }

    /// How the default [`acquire`](Self::acquire) polls.
    fn poll_policy(&self) -> PollPolicy {
        PollPolicy::default()
    }

    /// A signal the backend fires, with the reason, when it knows `lease`
    /// is gone (its session died, an admin removed it, it was observed
    /// expired). `None` (the default) means loss is found by renewal only.
    fn loss_signal(&self, lease: &Lease) -> Option<LossSignal> {
        let _ = lease;
        None
    }
}
