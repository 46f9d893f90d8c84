//! `LockGuard`: a held lease, kept alive by its locker's keeper, with a
//! loss signal — as an explicit state machine (`ARCHITECTURE.md` §4).
//!
//! ```text
//!            lose(reason)               begin_release() — first caller wins
//!   Held ───────────────────▶ Lost ─────────────────────────────┐
//!    │                                                           ▼
//!    └──── begin_release(): release(), Drop ───────────▶ Releasing ──▶ Released
//! ```
//!
//! Exactly one party releases the lease on the backend: whoever moves the
//! phase to `Releasing` first — an explicit [`LockGuard::release`], the
//! guard's `Drop`, or the loss handling (a lost lease may still be held by
//! the backend after `MaxHoldExceeded` or a local-deadline expiry, so it is
//! always released; the lease id makes that harmless).
//!
//! A guard has no task of its own: the [`Keeper`] of its locker wakes it
//! when its renewal, deadline or maximum hold comes due (it is a
//! [`Timed`] item), and backends' loss signals reach it through a
//! listener. The keeper holds only a `Weak` reference.

use std::collections::HashSet;
use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::LockBackend;
use crate::error::{Error, LostReason, Result};
use crate::keeper::Keeper;
use crate::lease::{FencingToken, Lease};
use crate::metrics;
use crate::name::LockName;
use crate::options::{LockOptions, Renewal};
use crate::release::release_retrying;
use crate::renew::align_down;
use crate::timers::{Timed, TimerQueue, TimerSlot};
use crate::wait::PollPolicy;

/// The set of names a [`Locker`](crate::Locker) currently holds.
pub(crate) type HeldSet = Arc<Mutex<HashSet<LockName>>>;

/// Where a guard is in its life (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Held,
    Lost,
    Releasing,
    Released,
}

/// State shared by a guard, its handles and its locker's keeper.
#[derive(Debug)]
pub(crate) struct Shared {
    backend: Arc<dyn LockBackend>,
    lease: Mutex<Lease>,
    phase: Mutex<Phase>,
    /// Woken when the phase leaves `Held` (stops a renewal in flight).
    left_held: Notify,
    /// Serialises extend calls so the stored deadline is that of the
    /// extension the backend applied last.
    extend_lock: tokio::sync::Mutex<()>,
    /// Made on first use by [`LeaseHandle::lost`] or
    /// [`LeaseHandle::lost_token`]; cancelled on loss.
    lost: OnceLock<CancellationToken>,
    lost_reason: OnceLock<LostReason>,
    held: HeldSet,
    held_cleared: AtomicBool,
    /// When the lock was granted (after any wait): the start of the hold.
    granted_at: Instant,
    renewal: Renewal,
    max_hold: Option<Duration>,
    keeper: Arc<Keeper>,
    /// This guard's live entry in the keeper's queue.
    timer: TimerSlot,
    /// A renewal task runs for this guard.
    renewing: AtomicBool,
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

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the renewal of `lease` is due, if renewal is on: rounded down
    /// to a grid of a quarter interval, so that guards of one TTL renew
    /// together, in one batch.
    fn renewal_at(&self, lease: &Lease) -> Option<Instant> {
        self.renewal
            .interval(lease.ttl)
            .map(|every| align_down(lease.sent_at + every, every / 4))
    }

    /// Claims the release of the lease on the backend; `true` for exactly
    /// one caller.
    fn begin_release(&self) -> bool {
        let claimed = {
            let mut phase = self.phase();
            match *phase {
                Phase::Held | Phase::Lost => {
                    *phase = Phase::Releasing;
                    true
                }
                Phase::Releasing | Phase::Released => false,
            }
        };
        self.left_held.notify_waiters();
        claimed
    }

    fn finish_release(&self) {
        *self.phase() = Phase::Released;
    }

    /// Completes once the phase is no longer `Held`.
    async fn wait_left_held(&self) {
        loop {
            let notified = self.left_held.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if *self.phase() != Phase::Held {
                return;
            }
            notified.await;
        }
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
            metrics::hold(self.backend.kind(), &name, self.granted_at.elapsed());
        }
    }

    /// Held → Lost: records the reason (the first one wins) and fires the
    /// signal. A guard that is being released is not "lost".
    fn lose(&self, reason: LostReason) {
        {
            let mut phase = self.phase();
            if *phase != Phase::Held {
                return;
            }
            *phase = Phase::Lost;
        }
        let _ = self.lost_reason.set(reason.clone());
        self.left_held.notify_waiters();
        if let Some(token) = self.lost.get() {
            token.cancel();
        }
        let name = self.name();
        tracing::warn!(backend = self.backend.kind(), lock = %name, %reason, "lease lost");
        metrics::lost(self.backend.kind(), &name, &reason);
        self.clear_held();
    }

    /// [`lose`](Self::lose), then releases the lease in the background
    /// unless another party already claimed that: a lost lease may still be
    /// held by the backend (max hold, a local deadline that ran out while
    /// the backend was slow); free it now rather than after its TTL. The
    /// lease id makes this harmless if someone else holds the lock.
    pub(crate) fn lose_and_release(self: &Arc<Self>, reason: LostReason) {
        self.lose(reason);
        if self.begin_release() {
            self.release_in_background("released after the loss");
        }
    }

    /// Runs the release (claimed with `begin_release`) in a task on the
    /// current runtime; without one, marks it done (the lease expires after
    /// its TTL) and returns `false`.
    fn release_in_background(self: &Arc<Self>, what: &'static str) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.finish_release();
            return false;
        };
        let shared = Arc::clone(self);
        runtime.spawn(async move {
            let outcome = shared.release_now().await;
            tracing::debug!(lock = %shared.name(), ?outcome, "{what}");
        });
        true
    }

    /// The loss token, made on first use (cancelled at once if the lease is
    /// already lost).
    fn lost_token(&self) -> &CancellationToken {
        let token = self.lost.get_or_init(CancellationToken::new);
        // `lose` records the reason before it looks for the token: one of
        // the two sides cancels it.
        if self.is_lost() {
            token.cancel();
        }
        token
    }

    fn is_lost(&self) -> bool {
        self.lost_reason.get().is_some()
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

    /// One extension, serialised with others: an explicit one straight to
    /// the backend (the keeper then queues the guard for the new TTL), a
    /// renewal through the batcher.
    async fn extend(self: &Arc<Self>, ttl: Duration, renewal: bool) -> Result<Lease> {
        let _serial = self.extend_lock.lock().await;
        if self.is_lost() {
            return Err(self.lost_error());
        }
        let current = self.lease();
        let kind = self.backend.kind();
        let outcome = if renewal {
            self.keeper.batcher().extend(current.clone(), ttl).await
        } else {
            self.backend.extend(&current, ttl).await
        };
        match outcome {
            Ok(renewed) => {
                metrics::extend(kind, &current.name, "ok");
                self.set_lease(renewed.clone());
                if !renewal {
                    self.keeper.schedule(self);
                }
                Ok(renewed)
            }
            Err(Error::Lost { name, reason }) => {
                metrics::extend(kind, &current.name, "lost");
                self.lose_and_release(reason.clone());
                Err(Error::Lost { name, reason })
            }
            Err(err) => {
                metrics::extend(kind, &current.name, "error");
                Err(err)
            }
        }
    }

    /// Releases on the backend (the caller claimed it with
    /// `begin_release`), after any in-flight renewal.
    async fn release_now(&self) -> Result<bool> {
        let _serial = self.extend_lock.lock().await;
        let lease = self.lease();
        self.clear_held();
        let result = release_retrying(&*self.backend, &lease).await;
        self.finish_release();
        tracing::debug!(backend = self.backend.kind(), lock = %lease.name, ?result, "released");
        result
    }
}

impl Timed for Shared {
    /// The next instant the keeper must look at this guard: its renewal,
    /// its local deadline or its maximum hold, whichever comes first.
    fn next_due(&self) -> Instant {
        let lease = self.lease();
        [
            Some(lease.deadline),
            self.renewal_at(&lease),
            self.max_hold.map(|m| self.granted_at + m),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(lease.deadline)
    }

    fn timer_slot(&self) -> &TimerSlot {
        &self.timer
    }

    /// Called by the keeper when this guard's entry comes up at `now`:
    /// ends the lease after its maximum hold or local deadline, starts a
    /// renewal when one is due, and otherwise queues the guard again.
    fn come_due(self: Arc<Self>, _: &Arc<TimerQueue<Self>>, now: Instant) {
        if *self.phase() != Phase::Held || self.renewing.load(Ordering::Acquire) {
            // Released or lost: forgotten. Renewing: the renewal queues
            // the guard again when it is done.
            return;
        }
        if self.max_hold.is_some_and(|m| now >= self.granted_at + m) {
            return self.lose_and_release(LostReason::MaxHoldExceeded);
        }
        let lease = self.lease();
        if now >= lease.deadline {
            return self.lose_and_release(LostReason::Expired);
        }
        if self.renewal_at(&lease).is_some_and(|at| now >= at) {
            self.renewing.store(true, Ordering::Release);
            tokio::spawn(renewal_task(self));
            return;
        }
        self.keeper.schedule(&self);
    }
}

/// A view of a held lease: its token, deadline and loss signal.
///
/// [`Locker::run_exclusive`](crate::Locker::run_exclusive) hands one to the
/// protected work; a [`LockGuard`] dereferences to one. Clones are cheap
/// and all see the same lease.
#[derive(Debug, Clone)]
pub struct LeaseHandle {
    shared: Arc<Shared>,
}

impl LeaseHandle {
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

    /// The permit count the lease was granted under (1 for a lock).
    pub fn permits(&self) -> u32 {
        self.shared
            .lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .permits
    }

    /// How long the holder may still assume it holds the lock, counted from
    /// the instant before the last granting or renewing request was sent.
    /// Zero once the lease is lost.
    pub fn remaining(&self) -> Duration {
        if self.shared.is_lost() {
            return Duration::ZERO;
        }
        self.shared.lease().remaining()
    }

    /// `true` once the lease is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.shared.is_lost()
    }

    /// Why the lease was lost, once it is.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.shared.lost_reason.get().cloned()
    }

    /// A future that completes with the reason when the lease is lost. It
    /// does not borrow, so it can be moved into a `select!` or a spawned
    /// task.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping it only stops waiting.
    pub fn lost(&self) -> impl Future<Output = LostReason> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        let token = shared.lost_token().clone();
        async move {
            token.cancelled().await;
            shared
                .lost_reason
                .get()
                .cloned()
                .unwrap_or(LostReason::NotHeld)
        }
    }

    /// A cancellation token that is cancelled when the lease is lost.
    /// Cancelling it yourself does not affect the lease.
    pub fn lost_token(&self) -> CancellationToken {
        self.shared.lost_token().child_token()
    }

    /// Fails with [`Error::Lost`] if the lease is lost or its local deadline
    /// has passed; call it right before a side effect that needs the lock.
    ///
    /// # Errors
    /// [`Error::Lost`] as described.
    pub fn ensure_held(&self) -> Result<()> {
        if self.shared.is_lost() {
            return Err(self.shared.lost_error());
        }
        if self.shared.lease().remaining().is_zero() {
            self.shared.lose_and_release(LostReason::Expired);
            return Err(self.shared.lost_error());
        }
        Ok(())
    }

    /// Extends the lease to `ttl` from now (by the backend's clock). Renewal
    /// continues at the interval for the new TTL (a third of it by
    /// default), shorter or longer.
    ///
    /// # Errors
    /// [`Error::InvalidTtl`] for a TTL out of bounds (before any I/O);
    /// [`Error::Lost`] if the lease is gone (the loss signal fires too);
    /// backend errors otherwise (the lease is unchanged).
    ///
    /// # Cancel safety
    /// If the future is dropped, the extension may or may not have been
    /// applied by the backend; the guard keeps the deadline it knew, which
    /// is the earlier one, so it never believes it holds too long.
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        crate::ttl::validate_ttl(ttl)?;
        self.shared.extend(ttl, false).await.map(|_| ())
    }
}

/// A held lock. Obtained from [`Locker::acquire`](crate::Locker::acquire).
///
/// While the guard lives, its locker's keeper renews the lease (unless
/// renewal is off) and watches for its loss; an idle guard costs no task
/// of its own. The guard's
/// [`lost`](LeaseHandle::lost) future completes, and
/// [`is_lost`](LeaseHandle::is_lost) turns true, when:
/// - the backend says the lease is no longer held (expired and taken over,
///   force-released by an admin), with the backend's reason,
/// - renewal fails with an error retrying cannot fix,
/// - the local safe deadline passes without a successful renewal (for
///   example while the backend is unreachable),
/// - the backend's session carrying the lease dies,
/// - the maximum hold time, counted from the grant, passes.
///
/// Work protected by the lock should stop when that happens, and pass
/// [`token`](LeaseHandle::token) to storage that checks fencing tokens. The
/// guard dereferences to a [`LeaseHandle`] for all of these.
///
/// Release with [`release`](Self::release). Dropping the guard releases in
/// the background on the current Tokio runtime (with retries, see
/// [`RELEASE_RETRY_FOR`](crate::RELEASE_RETRY_FOR)); with no runtime the
/// lease simply expires after its TTL. After a loss the lease is released
/// too, by exactly one of these paths.
#[must_use = "dropping a LockGuard releases the lock at once"]
#[derive(Debug)]
pub struct LockGuard {
    handle: LeaseHandle,
}

impl Deref for LockGuard {
    type Target = LeaseHandle;

    fn deref(&self) -> &LeaseHandle {
        &self.handle
    }
}

impl LockGuard {
    /// Wraps a granted lease and hands it to the keeper. The lock's name
    /// must already be in `held`; `granted_at` is when the grant reached
    /// the caller (the hold starts there, not when waiting began).
    pub(crate) fn start(
        backend: Arc<dyn LockBackend>,
        lease: Lease,
        opts: &LockOptions,
        held: HeldSet,
        granted_at: Instant,
        keeper: Arc<Keeper>,
    ) -> Self {
        let backend_loss = backend.loss_signal(&lease);
        metrics::held(backend.kind(), &lease.name, 1.0);
        let shared = Arc::new(Shared {
            backend,
            lease: Mutex::new(lease),
            phase: Mutex::new(Phase::Held),
            left_held: Notify::new(),
            extend_lock: tokio::sync::Mutex::new(()),
            lost: OnceLock::new(),
            lost_reason: OnceLock::new(),
            held,
            held_cleared: AtomicBool::new(false),
            granted_at,
            renewal: opts.renewal,
            max_hold: opts.max_hold,
            keeper: Arc::clone(&keeper),
            timer: TimerSlot::new(),
            renewing: AtomicBool::new(false),
        });
        keeper.schedule(&shared);
        if let Some(signal) = backend_loss {
            // Handled on the firing thread: the state changes at once and
            // the release runs in a task of its own.
            let guard = Arc::downgrade(&shared);
            signal.on_fire(move |reason| {
                if let Some(guard) = guard.upgrade() {
                    guard.lose_and_release(reason.clone());
                }
            });
        }
        Self {
            handle: LeaseHandle { shared },
        }
    }

    /// A cheap handle on the same lease (token, deadline, loss signal)
    /// that does not own the lock.
    pub fn handle(&self) -> LeaseHandle {
        self.handle.clone()
    }

    /// Releases the lock. Returns `true` if it was still held by this guard
    /// and is now free; `false` if it had already been lost (expired and
    /// taken over, force-released, given up after `max_hold`).
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
    /// Dropping this future does not stop the release: what is left of it
    /// runs again in the background (releasing is idempotent per lease id),
    /// so the lock is still freed.
    pub async fn release(self) -> Result<bool> {
        let shared = Arc::clone(&self.handle.shared);
        if !shared.begin_release() {
            // The loss handling is releasing a lost lease, or did.
            return Ok(false);
        }
        let was_lost = shared.is_lost();
        // Inline, not in a task of its own: a spawn and its join cost more
        // than a whole Redis round trip. Should this future be dropped
        // half-way, the finisher releases again in the background
        // (idempotent per lease id).
        let mut finisher = FinishOnDrop(Some(Arc::clone(&shared)));
        let outcome = shared.release_now().await;
        finisher.0 = None;
        outcome.map(|still_held| still_held && !was_lost)
    }
}

/// Finishes a release whose future was dropped before it completed, in the
/// background ([`LockGuard::release`]).
struct FinishOnDrop(Option<Arc<Shared>>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.release_in_background("release finished after its caller left");
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let shared = &self.handle.shared;
        shared.clear_held();
        if shared.begin_release() && !shared.release_in_background("released on drop") {
            tracing::debug!(
                lock = %shared.name(),
                "guard dropped outside a Tokio runtime; the lease will expire after its TTL"
            );
        }
    }
}

/// Renews `shared` once (see [`renew`]), then queues it again with the
/// keeper or ends its lease.
async fn renewal_task(shared: Arc<Shared>) {
    // Boxed: only a renewal in flight carries this state.
    let outcome = Box::pin(renew(&shared)).await;
    shared.renewing.store(false, Ordering::Release);
    match outcome {
        Ok(()) => shared.keeper.schedule(&shared),
        Err(None) => {}
        Err(Some(reason)) => shared.lose_and_release(reason),
    }
}

/// Renews once, retrying transient errors until the local deadline.
/// `Err(None)` means the guard is being released; `Err(Some(_))` is a loss.
async fn renew(shared: &Arc<Shared>) -> std::result::Result<(), Option<LostReason>> {
    let ttl = shared.lease().ttl;
    let mut backoff = PollPolicy::new(Duration::from_millis(20), ttl / 6).backoff();
    loop {
        let deadline = shared.lease().deadline;
        if Instant::now() >= deadline {
            return Err(Some(LostReason::Expired));
        }
        let attempt = tokio::select! {
            biased;
            () = shared.wait_left_held() => return Err(None),
            attempt = tokio::time::timeout_at(deadline, shared.extend(ttl, true)) => attempt,
        };
        match attempt {
            Err(_elapsed) => return Err(Some(LostReason::Expired)),
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(Error::Lost { reason, .. })) => return Err(Some(reason)),
            Ok(Err(err)) if err.is_retryable() => {
                tracing::debug!(lock = %shared.name(), error = %err, "renewal failed; retrying");
                let wake = (Instant::now() + backoff.next_delay()).min(deadline);
                tokio::select! {
                    biased;
                    () = shared.wait_left_held() => return Err(None),
                    () = tokio::time::sleep_until(wake) => {}
                }
            }
            Ok(Err(err)) => return Err(Some(LostReason::RenewalFailed(Arc::new(err)))),
        }
    }
}
