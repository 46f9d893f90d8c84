//! The one acquisition driver (`ARCHITECTURE.md` §4).
//!
//! Backends provide primitives — a try that is idempotent per lease id, an
//! optional FIFO queue ([`LockQueue`]), release hints, and `abandon` for
//! what a request may have left behind. This driver owns everything
//! around them: the deadline, polling with jittered backoff, retrying
//! transient errors (safe because every primitive is idempotent per lease
//! id, so a retry after a lost reply finds its own grant or place), and
//! clean-up — awaited on timeout or error, in the background when the
//! caller drops the future.

use std::time::Duration;

use tokio::time::Instant;

use crate::backend::LockBackend;
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Lease};
use crate::spi::{LockQueue, QueuePlace, until};
use crate::wait::PollPolicy;

/// How long a timed-out or failed acquire may spend removing what it may
/// have left (a lease whose grant reply was lost, a queue entry).
pub const ABANDON_TIMEOUT: Duration = Duration::from_secs(2);

/// Backoff between attempts that failed with a transient error.
const ERROR_BACKOFF: PollPolicy = PollPolicy {
    initial: Duration::from_millis(20),
    max: Duration::from_secs(1),
    factor: 2.0,
};

/// Removes what a request left unless disarmed: awaited by the driver on
/// timeout and error, handed to the backend's background clean-up when the
/// future is dropped.
struct Cleanup<'a, B: LockBackend + ?Sized> {
    backend: &'a B,
    req: &'a AcquireRequest,
    /// A request of ours may have left a lease or queue entry.
    armed: bool,
}

impl<B: LockBackend + ?Sized> Drop for Cleanup<'_, B> {
    fn drop(&mut self) {
        if self.armed {
            tracing::debug!(lock = %self.req.name, "acquire cancelled; abandoning in the background");
            self.backend.abandon_in_background(self.req.clone());
        }
    }
}

fn timeout(req: &AcquireRequest, started: Instant) -> Error {
    Error::Timeout {
        name: req.name.clone(),
        waited: started.elapsed(),
    }
}

/// Waits until `req` is granted or `deadline` passes (see the module docs).
///
/// # Errors
/// [`Error::Timeout`] at the deadline; permanent backend errors at once.
/// Either way, whatever the request may have left is abandoned first.
///
/// # Cancel safety
/// Dropping the future abandons the request in the background
/// ([`LockBackend::abandon_in_background`]): no lease or queue entry of it
/// is left beyond that clean-up.
pub(crate) async fn drive<B: LockBackend + ?Sized>(
    backend: &B,
    req: &AcquireRequest,
    deadline: Option<Instant>,
) -> Result<Lease> {
    crate::permits::check_supported(backend, req)?;
    let started = Instant::now();
    let mut cleanup = Cleanup {
        backend,
        req,
        armed: false,
    };
    let result = match backend.queue() {
        Some(queue) => drive_queue(queue, req, deadline, &mut cleanup, started).await,
        None => drive_poll(backend, req, deadline, &mut cleanup, started).await,
    };
    let leftover = result.is_err() && cleanup.armed;
    cleanup.armed = false;
    if leftover {
        abandon_now(backend, req).await;
    }
    result
}

/// One attempt ([`Locker::try_acquire`](crate::Locker::try_acquire)): a
/// transient failure may have been applied with its reply lost, so the
/// request is abandoned before the error is returned; a dropped future
/// abandons it in the background.
///
/// # Errors
/// The backend's.
pub(crate) async fn try_once<B: LockBackend + ?Sized>(
    backend: &B,
    req: &AcquireRequest,
) -> Result<Option<Lease>> {
    let mut cleanup = Cleanup {
        backend,
        req,
        armed: true,
    };
    let result = backend.try_acquire(req).await;
    cleanup.armed = false;
    if result.as_ref().is_err_and(Error::is_retryable) {
        abandon_now(backend, req).await;
    }
    result
}

/// Abandons `req` now, bounded by [`ABANDON_TIMEOUT`]; hands it to the
/// background if that fails.
async fn abandon_now<B: LockBackend + ?Sized>(backend: &B, req: &AcquireRequest) {
    match tokio::time::timeout(ABANDON_TIMEOUT, backend.abandon(req)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::debug!(lock = %req.name, error = %err, "abandoning failed; cleaning up in the background");
            backend.abandon_in_background(req.clone());
        }
        Err(_) => backend.abandon_in_background(req.clone()),
    }
}

/// Backends without a queue: try, then wait for a release hint or the next
/// jittered poll, never past the deadline.
async fn drive_poll<B: LockBackend + ?Sized>(
    backend: &B,
    req: &AcquireRequest,
    deadline: Option<Instant>,
    cleanup: &mut Cleanup<'_, B>,
    started: Instant,
) -> Result<Lease> {
    let mut subscription = backend.subscribe_releases(&req.name).await?;
    let mut poll = backend.poll_policy().backoff();
    loop {
        cleanup.armed = true;
        match until(deadline, backend.try_acquire(req)).await {
            None => return Err(timeout(req, started)),
            Some(Ok(Some(lease))) => return Ok(lease),
            // A definite "held by someone else": this attempt left nothing,
            // and an earlier ambiguous one would have been found again.
            Some(Ok(None)) => cleanup.armed = false,
            Some(Err(err)) if err.is_retryable() => {
                tracing::debug!(lock = %req.name, error = %err, "transient error while waiting; retrying");
            }
            Some(Err(err)) => return Err(err),
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(timeout(req, started));
        }
        let mut wake_at = now + poll.next_delay();
        if let Some(d) = deadline {
            wake_at = wake_at.min(d);
        }
        match subscription.as_mut() {
            Some(sub) => {
                tokio::select! {
                    () = sub.changed() => poll.reset(),
                    () = tokio::time::sleep_until(wake_at) => {}
                }
            }
            None => tokio::time::sleep_until(wake_at).await,
        }
    }
}

/// Backends with a FIFO queue: take a place, wait for the turn, check,
/// until granted or the deadline.
async fn drive_queue<B: LockBackend + ?Sized>(
    queue: &dyn LockQueue,
    req: &AcquireRequest,
    deadline: Option<Instant>,
    cleanup: &mut Cleanup<'_, B>,
    started: Instant,
) -> Result<Lease> {
    let mut place: Option<QueuePlace> = None;
    let mut errors = ERROR_BACKOFF.backoff();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(timeout(req, started));
        }
        cleanup.armed = true;
        let step = match until(deadline, queue.step(req, &mut place)).await {
            None => return Err(timeout(req, started)),
            Some(step) => step,
        };
        match step {
            Ok(Some(lease)) => return Ok(lease),
            Ok(None) => errors.reset(),
            Err(err) if err.is_retryable() => {
                tracing::debug!(lock = %req.name, error = %err, "transient error while queued; retrying");
                if until(deadline, tokio::time::sleep(errors.next_delay()))
                    .await
                    .is_none()
                {
                    return Err(timeout(req, started));
                }
                continue;
            }
            Err(err) => return Err(err),
        }
        let Some(place) = place.as_mut() else {
            // No place to wait on (the backend lost track of it): step again
            // after a short pause rather than spin.
            if until(deadline, tokio::time::sleep(errors.next_delay()))
                .await
                .is_none()
            {
                return Err(timeout(req, started));
            }
            continue;
        };
        let waited = match until(deadline, queue.wait_turn(req, place, deadline)).await {
            None => return Err(timeout(req, started)),
            Some(waited) => waited,
        };
        match waited {
            Ok(()) => {}
            Err(err) if err.is_retryable() => {
                tracing::debug!(lock = %req.name, error = %err, "transient error while waiting in line; retrying");
                if until(deadline, tokio::time::sleep(errors.next_delay()))
                    .await
                    .is_none()
                {
                    return Err(timeout(req, started));
                }
            }
            Err(err) => return Err(err),
        }
    }
}
