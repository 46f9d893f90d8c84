//! A backend wrapper that counts calls (to prove validation happens before
//! I/O) and injects extend and release failures (to exercise the retries of
//! renewal and release).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::backend::{Capabilities, LockBackend};
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Lease, LockInfo};
use crate::loss::LossSignal;
use crate::name::LockName;
use crate::spi::{LockQueue, QueuePlace};
use crate::wait::{PollPolicy, WakeSubscription};

/// Wraps a backend, counts every call that could reach the server, and can
/// make the next `extend` or `release` calls fail (a fault hook for renewal
/// and release tests).
#[derive(Debug)]
pub struct CountingBackend {
    inner: Arc<dyn LockBackend>,
    calls: AtomicUsize,
    extend_calls: AtomicUsize,
    batch_calls: AtomicUsize,
    batched_leases: AtomicUsize,
    extends: Injector,
    releases: Injector,
    acquires: Injector,
}

/// Failures still to inject into one kind of call.
#[derive(Debug, Default)]
struct Injector {
    remaining: AtomicUsize,
    transient: AtomicBool,
    /// Apply the call to the backend first, then fail (a lost reply).
    after_applying: AtomicBool,
    /// Apply the call, then never answer (a reply that never arrives).
    stall: AtomicBool,
}

impl Injector {
    fn arm(&self, count: usize, failure: InjectedFailure, after_applying: bool) {
        self.transient
            .store(failure == InjectedFailure::Transient, Ordering::SeqCst);
        self.after_applying.store(after_applying, Ordering::SeqCst);
        self.stall.store(false, Ordering::SeqCst);
        self.remaining.store(count, Ordering::SeqCst);
    }

    fn arm_stall(&self, count: usize) {
        self.after_applying.store(true, Ordering::SeqCst);
        self.stall.store(true, Ordering::SeqCst);
        self.remaining.store(count, Ordering::SeqCst);
    }

    fn stalls(&self) -> bool {
        self.stall.load(Ordering::SeqCst)
    }

    /// The failure to inject now, if any, and whether to apply the call first.
    fn take(&self, kind: &'static str, what: &str) -> Option<(Error, bool)> {
        self.remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()?;
        let message = format!("injected {what} failure");
        let err = if self.transient.load(Ordering::SeqCst) {
            Error::transient(kind, message, None)
        } else {
            Error::backend(kind, message, None)
        };
        Some((err, self.after_applying.load(Ordering::SeqCst)))
    }
}

/// The kind of failure [`CountingBackend::fail_extends`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFailure {
    /// [`Error::Transient`]: renewal should retry.
    Transient,
    /// [`Error::Backend`]: renewal should give up and report the loss.
    Permanent,
}

impl CountingBackend {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn LockBackend>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: AtomicUsize::new(0),
            extend_calls: AtomicUsize::new(0),
            batch_calls: AtomicUsize::new(0),
            batched_leases: AtomicUsize::new(0),
            extends: Injector::default(),
            releases: Injector::default(),
            acquires: Injector::default(),
        })
    }

    /// Calls made so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Single `extend` calls made so far (explicit extensions).
    pub fn extend_calls(&self) -> usize {
        self.extend_calls.load(Ordering::SeqCst)
    }

    /// `extend_many` calls made so far (renewal batches).
    pub fn batch_calls(&self) -> usize {
        self.batch_calls.load(Ordering::SeqCst)
    }

    /// Leases carried by all `extend_many` calls so far.
    pub fn batched_leases(&self) -> usize {
        self.batched_leases.load(Ordering::SeqCst)
    }

    /// Makes the next `count` calls to `extend` fail with `failure`
    /// without reaching the backend.
    pub fn fail_extends(&self, count: usize, failure: InjectedFailure) {
        self.extends.arm(count, failure, false);
    }

    /// Extend failures still to be injected.
    pub fn pending_extend_failures(&self) -> usize {
        self.extends.remaining.load(Ordering::SeqCst)
    }

    /// Makes the next `count` calls to `release` fail with `failure`. With
    /// `after_applying`, each call first reaches the backend (the lease is
    /// released there) and only its reply is replaced by the failure — a
    /// reply lost on the way back.
    pub fn fail_releases(&self, count: usize, failure: InjectedFailure, after_applying: bool) {
        self.releases.arm(count, failure, after_applying);
    }

    /// Makes the next `count` acquire attempts (`try_acquire`, and queue
    /// steps of FIFO backends) fail with `failure`. With `after_applying`,
    /// each attempt first reaches the backend — it may grant the lock or
    /// queue the request there — and only its reply is replaced by the
    /// failure: the lost reply that the driver's retry must recover from.
    pub fn fail_acquires(&self, count: usize, failure: InjectedFailure, after_applying: bool) {
        self.acquires.arm(count, failure, after_applying);
    }

    /// Makes the next `count` acquire attempts reach the backend (grant or
    /// queue there) and then never return: the reply that never arrives.
    /// Only dropping the future (cancelling the acquire) ends them.
    pub fn stall_acquires(&self, count: usize) {
        self.acquires.arm_stall(count);
    }

    /// Acquire failures still to be injected.
    pub fn pending_acquire_failures(&self) -> usize {
        self.acquires.remaining.load(Ordering::SeqCst)
    }

    /// Release failures still to be injected.
    pub fn pending_release_failures(&self) -> usize {
        self.releases.remaining.load(Ordering::SeqCst)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

/// Forwards to the wrapped backend's queue, with the same counting and
/// acquire-failure injection as `try_acquire`.
#[async_trait]
impl LockQueue for CountingBackend {
    async fn step(
        &self,
        req: &AcquireRequest,
        place: &mut Option<QueuePlace>,
    ) -> Result<Option<Lease>> {
        self.count();
        let queue = self.inner.queue().ok_or_else(|| {
            Error::backend(self.inner.kind(), "the wrapped backend has no queue", None)
        })?;
        if let Some((err, apply)) = self.acquires.take(self.inner.kind(), "queue step") {
            if apply {
                let _ = queue.step(req, place).await;
            }
            if self.acquires.stalls() {
                std::future::pending::<()>().await;
            }
            return Err(err);
        }
        queue.step(req, place).await
    }

    async fn wait_turn(
        &self,
        req: &AcquireRequest,
        place: &mut QueuePlace,
        until: Option<Instant>,
    ) -> Result<()> {
        self.count();
        let queue = self.inner.queue().ok_or_else(|| {
            Error::backend(self.inner.kind(), "the wrapped backend has no queue", None)
        })?;
        queue.wait_turn(req, place, until).await
    }
}

#[async_trait]
impl LockBackend for CountingBackend {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn try_acquire(&self, req: &AcquireRequest) -> Result<Option<Lease>> {
        self.count();
        if let Some((err, apply)) = self.acquires.take(self.inner.kind(), "acquire") {
            if apply {
                let _ = self.inner.try_acquire(req).await;
            }
            if self.acquires.stalls() {
                std::future::pending::<()>().await;
            }
            return Err(err);
        }
        self.inner.try_acquire(req).await
    }

    fn queue(&self) -> Option<&dyn LockQueue> {
        self.inner.queue().map(|_| self as &dyn LockQueue)
    }

    async fn abandon(&self, req: &AcquireRequest) -> Result<()> {
        self.count();
        self.inner.abandon(req).await
    }

    fn abandon_in_background(&self, req: AcquireRequest) {
        self.count();
        self.inner.abandon_in_background(req);
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.count();
        self.extend_calls.fetch_add(1, Ordering::SeqCst);
        if let Some((err, apply)) = self.extends.take(self.inner.kind(), "extend") {
            if apply {
                let _ = self.inner.extend(lease, ttl).await;
            }
            return Err(err);
        }
        self.inner.extend(lease, ttl).await
    }

    /// One call for the whole batch; injected extend failures apply per
    /// lease, the rest goes to the wrapped backend's `extend_many`.
    async fn extend_many(&self, batch: &[(Lease, Duration)]) -> Vec<Result<Lease>> {
        self.count();
        self.batch_calls.fetch_add(1, Ordering::SeqCst);
        self.batched_leases.fetch_add(batch.len(), Ordering::SeqCst);
        let mut injected: Vec<Option<Error>> = Vec::with_capacity(batch.len());
        let mut forward = Vec::new();
        for (lease, ttl) in batch {
            match self.extends.take(self.inner.kind(), "extend") {
                Some((err, apply)) => {
                    if apply {
                        let _ = self.inner.extend(lease, *ttl).await;
                    }
                    injected.push(Some(err));
                }
                None => {
                    injected.push(None);
                    forward.push((lease.clone(), *ttl));
                }
            }
        }
        let mut forwarded = self.inner.extend_many(&forward).await.into_iter();
        injected
            .into_iter()
            .map(|failure| match failure {
                Some(err) => Err(err),
                None => forwarded.next().unwrap_or_else(|| {
                    Err(Error::backend(
                        self.inner.kind(),
                        "a result went missing",
                        None,
                    ))
                }),
            })
            .collect()
    }

    async fn release(&self, lease: &Lease) -> Result<bool> {
        self.count();
        if let Some((err, apply)) = self.releases.take(self.inner.kind(), "release") {
            if apply {
                let _ = self.inner.release(lease).await;
            }
            return Err(err);
        }
        self.inner.release(lease).await
    }

    async fn holders(&self, name: &LockName) -> Result<Vec<LockInfo>> {
        self.count();
        self.inner.holders(name).await
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        self.count();
        self.inner.list().await
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        self.count();
        self.inner.force_release(name).await
    }

    async fn cleanup_expired(&self) -> Result<u64> {
        self.count();
        self.inner.cleanup_expired().await
    }

    async fn subscribe_releases(&self, name: &LockName) -> Result<Option<WakeSubscription>> {
        self.count();
        self.inner.subscribe_releases(name).await
    }

    fn poll_policy(&self) -> PollPolicy {
        self.inner.poll_policy()
    }

    fn loss_signal(&self, lease: &Lease) -> Option<LossSignal> {
        self.inner.loss_signal(lease)
    }
}
