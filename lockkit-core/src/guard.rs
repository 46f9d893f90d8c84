//! `LockGuard`: a held lease, kept alive in the background, with a loss signal.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::LockBackend;
use crate::error::{Error, LostReason, Result};
use crate::lease::{FencingToken, Lease};
use crate::metrics;
use crate::name::LockName;
use crate::options::LockOptions;
use crate::release::release_retrying;
use crate::wait::PollPolicy;

/// The set of names a [`Locker`](crate::Locker) currently holds.
pub(crate) type HeldSet = Arc<Mutex<HashSet<LockName>>>;

/// State shared by a guard and its maintenance task.
#[derive(Debug)]
struct Shared {
    backend: Arc<dyn LockBackend>,
    lease: Mutex<Lease>,
    /// Serialises extend calls so the stored deadline is that of the
    /// extension the backend applied last.
    extend_lock: tokio::sync::Mutex<()>,
    lost: CancellationToken,
    lost_reason: OnceLock<LostReason>,
    /// Stops the maintenance task (release or drop).
    stop: CancellationToken,
    held: HeldSet,
    held_cleared: AtomicBool,
    acquired_at: Instant,
}

impl Shared {
    fn lease(&self) -> Lease {
        self.lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_lease(&self, lease: Lease) {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = lease;
    }

    fn name(&self) -> LockName {
        self.lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .name
            .clone()
    }

    /// Forgets the name in the locker's held set, once.
    fn clear_held(&self) {
        if !self.held_cleared.swap(true, Ordering::AcqRel) {
            let name = self.name();
            self.held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
            metrics::held(self.backend.kind(), &name, -1.0);
            metrics::hold(self.backend.kind(), &name, self.acquired_at.elapsed());
        }
    }

    /// Marks the lease lost (first reason wins) and fires the signal.
    fn lose(&self, reason: LostReason) {
        if self.lost_reason.set(reason.clone()).is_ok() {
            let name = self.name();
            tracing::warn!(backend = self.backend.kind(), lock = %name, %reason, "lease lost");
            metrics::lost(self.backend.kind(), &name, &reason);
            self.clear_held();
            self.lost.cancel();
        }
    }

    fn lost_error(&self) -> Error {
        Error::Lost {
            name: self.name(),
            reason: self
                .lost_reason
                .get()
                .cloned()
                .unwrap_or(LostReason::NotHeld),
        }
    }

    /// One extension, serialised with others.
    async fn extend(&self, ttl: Duration) -> Result<Lease> {
        let _serial = self.extend_lock.lock().await;
        if self.lost.is_cancelled() {
            return Err(self.lost_error());
        }
        let current = self.lease();
        let kind = self.backend.kind();
        match self.backend.extend(&current, ttl).await {
            Ok(renewed) => {
                metrics::extend(kind, &current.name, "ok");
                self.set_lease(renewed.clone());
                Ok(renewed)
            }
            Err(err) if err.is_lost() => {
                metrics::extend(kind, &current.name, "lost");
                self.lose(LostReason::NotHeld);
                Err(err)
            }
            Err(err) => {
                metrics::extend(kind, &current.name, "error");
                Err(err)
            }
        }
    }
}

/// A held lock. Obtained from [`Locker::acquire`](crate::Locker::acquire).
///
/// While the guard lives, a background task renews the lease (unless
/// renewal is off) and watches for its loss. The guard's [`lost`](Self::lost)
/// future completes, and [`is_lost`](Self::is_lost) turns true, when:
/// - the backend says the lease is no longer held (expired and taken over,
///   force-released by an admin),
/// - renewal fails with an error retrying cannot fix,
/// - the local safe deadline passes without a successful renewal (for
///   example while the backend is unreachable),
/// - the backend's session carrying the lease dies,
/// - the maximum hold time passes.
///
/// Work protected by the lock should stop when that happens, and pass
/// [`token`](Self::token) to storage that checks fencing tokens.
///
/// Release with [`release`](Self::release). Dropping the guard without
/// releasing spawns a best-effort release on the current Tokio runtime; with
/// no runtime (or if that release fails) the lease simply expires after its
/// TTL.
#[derive(Debug)]
pub struct LockGuard {
    shared: Arc<Shared>,
    released: bool,
}

impl LockGuard {
    /// Wraps a granted lease and starts its maintenance task. The lock's name
    /// must already be in `held`.
    pub(crate) fn start(
        backend: Arc<dyn LockBackend>,
        lease: Lease,
        opts: &LockOptions,
        held: HeldSet,
        acquired_at: Instant,
    ) -> Self {
        let backend_loss = backend.loss_signal(&lease);
        metrics::held(backend.kind(), &lease.name, 1.0);
        let renew_every = opts.renew_interval(lease.ttl);
        let max_hold_at = opts.max_hold.map(|m| acquired_at + m);
        let shared = Arc::new(Shared {
            backend,
            lease: Mutex::new(lease),
            extend_lock: tokio::sync::Mutex::new(()),
            lost: CancellationToken::new(),
            lost_reason: OnceLock::new(),
            stop: CancellationToken::new(),
            held,
            held_cleared: AtomicBool::new(false),
            acquired_at,
        });
        tokio::spawn(maintain(
            Arc::clone(&shared),
            renew_every,
            max_hold_at,
            backend_loss,
        ));
        Self {
            shared,
            released: false,
        }
    }

    /// The lock's name.
    pub fn name(&self) -> LockName {
        self.shared.name()
    }

    /// The fencing token of this grant.
    pub fn token(&self) -> FencingToken {
        self.shared
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .token
    }

    /// A snapshot of the lease (its deadline moves with each renewal).
    pub fn lease(&self) -> Lease {
        self.shared.lease()
    }

    /// How long the holder may still assume it holds the lock, counted from
    /// the instant before the last granting or renewing request was sent.
    /// Zero once the lease is lost.
    pub fn remaining(&self) -> Duration {
        if self.shared.lost.is_cancelled() {
            return Duration::ZERO;
        }
        self.shared.lease().remaining()
    }

    /// `true` once the lease is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.shared.lost.is_cancelled()
    }

    /// Why the lease was lost, once it is.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.shared.lost_reason.get().cloned()
    }

    /// A future that completes with the reason when the lease is lost. It
    /// does not borrow the guard, so it can be moved into a `select!` or a
    /// spawned task.
    pub fn lost(&self) -> impl Future<Output = LostReason> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        async move {
            shared.lost.cancelled().await;
            shared
                .lost_reason
                .get()
                .cloned()
                .unwrap_or(LostReason::NotHeld)
        }
    }

    /// A cancellation token that is cancelled when the lease is lost.
    /// Cancelling it yourself does not affect the guard.
    pub fn lost_token(&self) -> CancellationToken {
        self.shared.lost.child_token()
    }

    /// Fails with [`Error::Lost`] if the lease is lost or its local deadline
    /// has passed; call it right before a side effect that needs the lock.
    ///
    /// # Errors
    /// [`Error::Lost`] as described.
    pub fn ensure_held(&self) -> Result<()> {
        if self.shared.lost.is_cancelled() {
            return Err(self.shared.lost_error());
        }
        if self.shared.lease().remaining().is_zero() {
            self.shared.lose(LostReason::Expired);
            return Err(self.shared.lost_error());
        }
        Ok(())
    }

    /// Extends the lease to `ttl` from now (by the backend's clock).
    ///
    /// # Errors
    /// [`Error::InvalidTtl`] for a TTL out of bounds (before any I/O);
    /// [`Error::Lost`] if the lease is gone (the loss signal fires too);
    /// backend errors otherwise.
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        crate::ttl::validate_ttl(ttl)?;
        self.shared.extend(ttl).await.map(|_| ())
    }

    /// Releases the lock. Returns `true` if it was still held by this guard
    /// and is now free; `false` if it had already been lost (expired and
    /// taken over, force-released).
    ///
    /// Transient backend failures (a reset connection, a lost reply) are
    /// retried with jittered backoff for up to
    /// [`RELEASE_RETRY_FOR`](crate::RELEASE_RETRY_FOR) (5 s): releasing is
    /// idempotent per lease id, so a retry never touches another holder.
    ///
    /// # Errors
    /// A permanent backend error, or the last transient one after 5 s of
    /// retries; the lease then expires after its TTL.
    ///
    /// # Cancel safety
    /// If the future is dropped before it completes, the guard is dropped
    /// with it and the best-effort release of [`Drop`] takes over in the
    /// background (with the same retries), so the lock is still freed.
    pub async fn release(mut self) -> Result<bool> {
        self.shared.stop.cancel();
        // Wait for an in-flight renewal so we release the lease it produced.
        let serial = self.shared.extend_lock.lock().await;
        let lease = self.shared.lease();
        let was_lost = self.shared.lost.is_cancelled();
        self.shared.clear_held();
        let result = release_retrying(&*self.shared.backend, &lease).await;
        drop(serial);
        self.released = true;
        tracing::debug!(backend = self.shared.backend.kind(), lock = %lease.name, ?result, "released");
        match result {
            Ok(still_held) => Ok(still_held && !was_lost),
            Err(err) => Err(err),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.shared.stop.cancel();
        self.shared.clear_held();
        if self.shared.lost.is_cancelled() {
            // The maintenance task already released what it could.
            return;
        }
        let shared = Arc::clone(&self.shared);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let _serial = shared.extend_lock.lock().await;
                    let lease = shared.lease();
                    let outcome = release_retrying(&*shared.backend, &lease).await;
                    tracing::debug!(lock = %lease.name, ?outcome, "released on drop");
                });
            }
            Err(_) => {
                tracing::debug!(
                    lock = %self.shared.name(),
                    "guard dropped outside a Tokio runtime; the lease will expire after its TTL"
                );
            }
        }
    }
}

/// Waits for an optional token.
async fn cancelled(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until an optional instant.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The background task of a guard: renews, watches the deadline, the
/// backend's loss signal and the maximum hold time.
async fn maintain(
    shared: Arc<Shared>,
    renew_every: Option<Duration>,
    max_hold_at: Option<Instant>,
    backend_loss: Option<CancellationToken>,
) {
    let mut next_renewal = renew_every.map(|every| Instant::now() + every);
    let reason = loop {
        let deadline = shared.lease().deadline;
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            () = shared.lost.cancelled() => break None,
            () = cancelled(backend_loss.as_ref()) => {
                break Some(LostReason::NotHeld);
            }
            () = sleep_until(max_hold_at) => break Some(LostReason::MaxHoldExceeded),
            () = tokio::time::sleep_until(deadline) => {
                if Instant::now() >= shared.lease().deadline {
                    break Some(LostReason::Expired);
                }
            }
            () = sleep_until(next_renewal) => {
                let started = Instant::now();
                match renew(&shared).await {
                    Ok(()) => {
                        next_renewal = renew_every.map(|every| started + every);
                    }
                    Err(reason) => break reason,
                }
            }
        }
    };
    if let Some(reason) = reason {
        shared.lose(reason);
    }
    if shared.stop.is_cancelled() {
        return;
    }
    // Free the lock for others now rather than after the TTL; matching on the
    // lease id makes this harmless if someone else holds it.
    let lease = shared.lease();
    let outcome = release_retrying(&*shared.backend, &lease).await;
    tracing::debug!(lock = %lease.name, ?outcome, "best-effort release after loss");
}

/// Renews once, retrying transient errors until the local deadline.
/// `Err(None)` means the guard is being released; `Err(Some(_))` is a loss.
async fn renew(shared: &Shared) -> std::result::Result<(), Option<LostReason>> {
    let ttl = shared.lease().ttl;
    let mut backoff = PollPolicy::new(Duration::from_millis(20), ttl / 6).backoff();
    loop {
        let deadline = shared.lease().deadline;
        if Instant::now() >= deadline {
            return Err(Some(LostReason::Expired));
        }
        let attempt = tokio::select! {
            biased;
            () = shared.stop.cancelled() => return Err(None),
            attempt = tokio::time::timeout_at(deadline, shared.extend(ttl)) => attempt,
        };
        match attempt {
            Err(_elapsed) => return Err(Some(LostReason::Expired)),
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(err)) if err.is_lost() => return Err(Some(LostReason::NotHeld)),
            Ok(Err(err)) if err.is_retryable() => {
                tracing::debug!(lock = %shared.name(), error = %err, "renewal failed; retrying");
                let wake = (Instant::now() + backoff.next_delay()).min(deadline);
                tokio::select! {
                    biased;
                    () = shared.stop.cancelled() => return Err(None),
                    () = tokio::time::sleep_until(wake) => {}
                }
            }
            Ok(Err(err)) => return Err(Some(LostReason::RenewalFailed(err.to_string()))),
        }
    }
}
