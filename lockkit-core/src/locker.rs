//! `Locker`: what applications use to take locks.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::time::Instant;
use tracing::Instrument;

use crate::backend::LockBackend;
use crate::error::{Error, LostReason, Result};
use crate::guard::{HeldSet, LeaseHandle, LockGuard};
use crate::keeper::Keeper;
use crate::lease::{AcquireRequest, validate_owner};
use crate::metrics;
use crate::name::{IntoLockName, LockName};
use crate::options::LockOptions;

/// Takes locks on one backend for one owner.
///
/// The owner label (`pipeline_1`, a host name, a job id) is stored with every
/// lease so operators can see who holds what; each acquisition additionally
/// gets a unique lease id, so two processes using the same label still
/// exclude each other.
///
/// A `Locker` remembers which names it holds: asking for one of them again
/// fails at once with [`Error::WouldDeadlock`] instead of waiting for itself.
/// Clones share that memory (they are the same owner); use
/// [`Locker::for_owner`] for an independent owner on the same backend.
///
/// ```
/// use std::sync::Arc;
/// use lockkit_core::{Locker, LockOptions, memory::MemoryBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lockkit_core::Result<()> {
/// let backend = Arc::new(MemoryBackend::new());
/// let locker = Locker::new(backend, "pipeline_1")?;
///
/// let guard = locker.acquire("node_b").await?;
/// println!("running node_b with fencing token {}", guard.token());
/// assert!(guard.release().await?);
///
/// // Or let the locker release for you, and stop the work if the lease is lost:
/// let rows = locker
///     .run_exclusive("node_b", &LockOptions::new(), |lease| async move {
///         // write with lease.token(), checking lease.ensure_held() first …
///         42
///     })
///     .await?;
/// assert_eq!(rows, 42);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Locker {
    backend: Arc<dyn LockBackend>,
    owner: String,
    defaults: LockOptions,
    held: HeldSet,
    /// Keeps the leases of every guard of this locker, its clones and
    /// [`for_owner`](Self::for_owner) lockers alive: one task and one
    /// batch of renewals per renewal tick, however many locks are held.
    keeper: Arc<Keeper>,
}

impl Locker {
    /// A locker for `owner` on `backend` with [`LockOptions::default`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty or over-long owner label or one
    /// with control characters.
    pub fn new(backend: Arc<dyn LockBackend>, owner: impl Into<String>) -> Result<Self> {
        let owner = owner.into();
        validate_owner(&owner)?;
        Ok(Self {
            keeper: Keeper::new(Arc::clone(&backend)),
            backend,
            owner,
            defaults: LockOptions::default(),
            held: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    /// The same locker with other default options.
    ///
    /// # Errors
    /// What [`LockOptions::validate`] reports.
    pub fn with_options(mut self, defaults: LockOptions) -> Result<Self> {
        defaults.validate()?;
        self.defaults = defaults;
        Ok(self)
    }

    /// An independent locker for another owner on the same backend, with
    /// the same defaults and its own set of held names.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid owner label.
    pub fn for_owner(&self, owner: impl Into<String>) -> Result<Self> {
        let mut other =
            Self::new(Arc::clone(&self.backend), owner)?.with_defaults(self.defaults.clone());
        other.keeper = Arc::clone(&self.keeper);
        Ok(other)
    }

    fn with_defaults(mut self, defaults: LockOptions) -> Self {
        self.defaults = defaults;
        self
    }

    /// The owner label.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The default options.
    pub fn options(&self) -> &LockOptions {
        &self.defaults
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn LockBackend> {
        &self.backend
    }

    /// Waits for `name` with the default options.
    ///
    /// # Errors
    /// [`Error::InvalidName`] before any I/O; [`Error::WouldDeadlock`] if this
    /// locker already holds `name`; [`Error::Timeout`] when the wait timeout
    /// passes; backend errors.
    ///
    /// # Cancel safety
    /// Dropping the future cancels the wait; whatever the request left (a
    /// queue entry, a grant whose reply was still on its way) is abandoned
    /// by lease id in the background, so nothing of it is left behind.
    pub async fn acquire(&self, name: impl IntoLockName) -> Result<LockGuard> {
        let opts = self.defaults.clone();
        self.acquire_with(name, &opts).await
    }

    /// Waits for `name` with `opts`.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), plus [`Error::InvalidTtl`] /
    /// [`Error::InvalidInput`] for invalid options (before any I/O).
    ///
    /// # Cancel safety
    /// Dropping the future cancels the wait; whatever the request left (a
    /// queue entry, a grant whose reply was still on its way) is abandoned
    /// by lease id in the background, so nothing of it is left behind.
    pub async fn acquire_with(
        &self,
        name: impl IntoLockName,
        opts: &LockOptions,
    ) -> Result<LockGuard> {
        self.take(name, opts, true)
            .await?
            .ok_or_else(|| Error::backend(self.backend.kind(), "acquire returned no lease", None))
    }

    /// Tries once to take `name` with the default options; `Ok(None)` if it
    /// is held by someone else.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), without the timeout.
    ///
    /// # Cancel safety
    /// Dropping the future abandons a grant the attempt may have made, in
    /// the background.
    pub async fn try_acquire(&self, name: impl IntoLockName) -> Result<Option<LockGuard>> {
        let opts = self.defaults.clone();
        self.try_acquire_with(name, &opts).await
    }

    /// Tries once to take `name` with `opts`.
    ///
    /// # Errors
    /// As [`acquire_with`](Self::acquire_with), without the timeout.
    ///
    /// # Cancel safety
    /// Dropping the future abandons a grant the attempt may have made, in
    /// the background.
    pub async fn try_acquire_with(
        &self,
        name: impl IntoLockName,
        opts: &LockOptions,
    ) -> Result<Option<LockGuard>> {
        self.take(name, opts, false).await
    }

    /// Runs `work` under the lock `name` and releases it afterwards.
    ///
    /// `work` receives a [`LeaseHandle`]: its [`token`](LeaseHandle::token)
    /// for fenced writes, and [`ensure_held`](LeaseHandle::ensure_held)
    /// for a check right before a side effect. If the lease is lost while
    /// `work` runs, `work` is dropped (cancelled at its next `.await`) and
    /// [`Error::Lost`] is returned; if the backend reports at release time
    /// that the lease was no longer held, [`Error::Lost`] is returned too,
    /// because the work may have overlapped with another holder.
    ///
    /// # Errors
    /// Those of [`acquire_with`](Self::acquire_with), and [`Error::Lost`].
    ///
    /// # Cancel safety
    /// Dropping the future drops `work` and the guard, whose drop releases
    /// the lock in the background.
    pub async fn run_exclusive<F, Fut, T>(
        &self,
        name: impl IntoLockName,
        opts: &LockOptions,
        work: F,
    ) -> Result<T>
    where
        F: FnOnce(LeaseHandle) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self.acquire_with(name, opts).await?;
        let lost = guard.lost();
        let work = work(guard.handle());
        tokio::select! {
            biased;
            reason = lost => {
                let name = guard.name();
                drop(guard);
                Err(Error::Lost { name, reason })
            }
            output = work => {
                let name = guard.name();
                match guard.release().await {
                    Ok(true) => Ok(output),
                    Ok(false) => Err(Error::Lost { name, reason: LostReason::NotHeld }),
                    Err(err) => {
                        tracing::warn!(lock = %name, error = %err, "release after run_exclusive failed; the lease will expire");
                        Ok(output)
                    }
                }
            }
        }
    }

    async fn take(
        &self,
        name: impl IntoLockName,
        opts: &LockOptions,
        wait: bool,
    ) -> Result<Option<LockGuard>> {
        let name = name.into_lock_name()?;
        opts.validate()?;
        let req = AcquireRequest::new(name.clone(), self.owner.clone(), opts.ttl)?
            .with_permits(opts.permits)?;
        crate::permits::check_supported(&*self.backend, &req)?;
        let kind = self.backend.kind();
        let started = Instant::now();
        let Some(reservation) = Reservation::new(&self.held, &name) else {
            metrics::acquire(kind, &name, "would_deadlock", started.elapsed());
            return Err(Error::WouldDeadlock { name });
        };
        let span = tracing::debug_span!("lockkit.acquire", backend = kind, lock = %name, owner = %self.owner, wait);
        let outcome = async {
            if wait {
                let deadline = opts.wait.map(|w| started + w);
                self.backend.acquire(&req, deadline).await.map(Some)
            } else {
                crate::acquire::try_once(&*self.backend, &req).await
            }
        }
        .instrument(span)
        .await;
        let waited = started.elapsed();
        match outcome {
            Ok(Some(lease)) => {
                metrics::acquire(kind, &name, "acquired", waited);
                tracing::debug!(backend = kind, lock = %name, token = %lease.token, ?waited, "acquired");
                reservation.keep();
                // The hold (max hold, hold-time metric) starts at the grant.
                Ok(Some(LockGuard::start(
                    Arc::clone(&self.backend),
                    lease,
                    opts,
                    Arc::clone(&self.held),
                    Instant::now(),
                    Arc::clone(&self.keeper),
                )))
            }
            Ok(None) => {
                metrics::acquire(kind, &name, "busy", waited);
                Ok(None)
            }
            Err(err) => {
                let outcome = if matches!(err, Error::Timeout { .. }) {
                    "timeout"
                } else {
                    "error"
                };
                metrics::acquire(kind, &name, outcome, waited);
                Err(err)
            }
        }
    }
}

/// A name reserved in a locker's held set while it is being acquired;
/// removed again unless [`keep`](Self::keep) hands it to the guard.
struct Reservation<'a> {
    held: &'a HeldSet,
    name: LockName,
    kept: bool,
}

impl<'a> Reservation<'a> {
    fn new(held: &'a HeldSet, name: &LockName) -> Option<Self> {
        let inserted = held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone());
        inserted.then(|| Self {
            held,
            name: name.clone(),
            kept: false,
        })
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.name);
        }
    }
}
