//! The in-memory reference backend.
//!
//! It is the contract in its plainest form, used to check the conformance
//! kit itself and to run application tests without a server. It is *not* a
//! distributed lock: it works between tasks of one process (clients made
//! with [`MemoryBackend::client`] share one lock table).
//!
//! Behaviour:
//! - **FIFO**: waiters are queued per name and granted in arrival order;
//!   `try_acquire` fails while anyone is queued, so nobody jumps the queue.
//! - **Push wake-up**: a release or a waiter leaving the queue wakes the
//!   queue at once; a holder's expiry wakes it at the expiry instant.
//! - **Semaphores**: a name holds up to its permit count of leases; a
//!   request is admitted while fewer are live and fewer waiters than free
//!   permits are queued ahead of it (FIFO for N permits too). Holders and
//!   waiters of a name must agree on the count.
//! - **Fencing**: a per-name counter, kept after the lock is released (one
//!   `u64` per name ever used, like Redis's fence keys).
//! - **Clock**: real time by default; [`MemoryBackend::with_manual_clock`]
//!   gives a clock that only moves when the test advances it, for
//!   deterministic expiry tests.
//! - **Loss**: force-release and observed expiry cancel the holder's
//!   [`loss_signal`](LockBackend::loss_signal), so its guard reports loss at once.

mod clock;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use self::clock::Clock;
pub use self::clock::ManualClock;
use crate::backend::{Capabilities, LockBackend};
use crate::error::{Error, LostReason, Result};
use crate::lease::{AcquireRequest, FencingToken, Lease, LeaseId, LockInfo};
use crate::loss::LossSignal;
use crate::name::LockName;
use crate::spi::{LockQueue, QueuePlace};
use crate::wait::{WakeHub, WakeSubscription};

/// The in-memory reference backend (see the [module docs](self)).
///
/// ```
/// use std::time::Duration;
/// use lockkit_core::{LockBackend, LockName, memory::MemoryBackend};
/// use lockkit_core::spi::AcquireRequest;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lockkit_core::Result<()> {
/// let (backend, clock) = MemoryBackend::with_manual_clock();
/// let name = LockName::new("node_b")?;
/// let a = AcquireRequest::new(name.clone(), "pipeline_1", Duration::from_secs(10))?;
/// let b = AcquireRequest::new(name.clone(), "pipeline_2", Duration::from_secs(10))?;
///
/// let lease = backend.try_acquire(&a).await?.expect("free");
/// assert!(backend.try_acquire(&b).await?.is_none());
/// clock.advance(Duration::from_secs(10)); // the lease expires, deterministically
/// let next = backend.try_acquire(&b).await?.expect("expired");
/// assert!(next.token > lease.token);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    clock: Clock,
    hub: Arc<WakeHub>,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<LockName, Slot>,
    fences: HashMap<LockName, u64>,
}

#[derive(Debug, Default)]
struct Slot {
    /// The live holders, at most their permit count, in grant order.
    holders: Vec<Holder>,
    /// Waiters by lease id with the permit count they asked with, in
    /// arrival order.
    queue: VecDeque<(LeaseId, u32)>,
}

#[derive(Debug)]
struct Holder {
    owner: String,
    lease_id: LeaseId,
    token: u64,
    permits: u32,
    acquired_at: Duration,
    expires_at: Duration,
    lost: LossSignal,
}

impl Slot {
    /// The permit count the name's live holders and waiters use, if any.
    fn agreed_permits(&self) -> Option<u32> {
        self.holders
            .first()
            .map(|h| h.permits)
            .or_else(|| self.queue.front().map(|(_, n)| *n))
    }

    /// Fails when `req` asks with a different permit count than the
    /// name's holders and waiters.
    fn check_permits(&self, req: &AcquireRequest) -> Result<()> {
        match self.agreed_permits() {
            Some(held) if held != req.permits => {
                Err(Error::permits_mismatch(&req.name, held, req.permits))
            }
            _ => Ok(()),
        }
    }

    /// Whether `req` may be admitted now: a permit is free and, in the
    /// queue, fewer waiters than free permits come before it.
    fn admits(&self, req: &AcquireRequest) -> bool {
        let free = (req.permits as usize).saturating_sub(self.holders.len());
        let ahead = self
            .queue
            .iter()
            .position(|(id, _)| *id == req.lease_id)
            .unwrap_or(self.queue.len());
        ahead < free
    }

    fn holder_mut(&mut self, lease_id: &LeaseId) -> Option<&mut Holder> {
        self.holders.iter_mut().find(|h| h.lease_id == *lease_id)
    }

    fn take_holder(&mut self, lease_id: &LeaseId) -> Option<Holder> {
        let at = self.holders.iter().position(|h| h.lease_id == *lease_id)?;
        Some(self.holders.remove(at))
    }

    /// The earliest expiry among the holders.
    fn next_expiry(&self) -> Option<Duration> {
        self.holders.iter().map(|h| h.expires_at).min()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// A new, empty lock table on the real clock.
    pub fn new() -> Self {
        Self::with_clock(Clock::system())
    }

    /// A new, empty lock table on a [`ManualClock`], returned alongside.
    pub fn with_manual_clock() -> (Self, ManualClock) {
        let clock = ManualClock::new();
        (Self::with_clock(Clock::Manual(clock.clone())), clock)
    }

    fn with_clock(clock: Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                clock,
                hub: WakeHub::new(),
            }),
        }
    }

    /// Another client of the same lock table (what a second process would
    /// be for a server backend).
    pub fn client(&self) -> Self {
        self.clone()
    }

    /// How many waiters are queued for `name`.
    pub fn waiting(&self, name: &LockName) -> usize {
        self.state()
            .slots
            .get(name)
            .map_or(0, |slot| slot.queue.len())
    }

    /// The fence counter of `name`: the last token handed out, if any.
    pub fn fence_counter(&self, name: &LockName) -> Option<u64> {
        self.state().fences.get(name).copied()
    }

    /// Whether anything (a holder, live or expired, or a waiter) is stored
    /// for `name`.
    pub fn has_record(&self, name: &LockName) -> bool {
        self.state().slots.contains_key(name)
    }

    /// How many names have a record (a holder, live or expired, or waiters).
    /// Zero when nothing is held or awaited: released, timed-out and
    /// cancelled acquires leave nothing behind.
    pub fn records(&self) -> usize {
        self.state().slots.len()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn info(&self, name: &LockName, holder: &Holder) -> LockInfo {
        LockInfo::new(
            name.clone(),
            holder.owner.clone(),
            holder.lease_id.clone(),
            FencingToken::new(holder.token),
            self.inner.clock.wall(holder.acquired_at),
            Some(self.inner.clock.wall(holder.expires_at)),
        )
        .with_permits(holder.permits)
    }

    fn lease_for(&self, req: &AcquireRequest, token: u64, sent_at: Instant) -> Lease {
        Lease::granted(req, FencingToken::new(token), sent_at)
    }
}

impl State {
    /// Drops the holders of `name` that have expired by `now`, firing
    /// their loss signals; returns the slot.
    fn slot(&mut self, name: &LockName, now: Duration) -> &mut Slot {
        let slot = self.slots.entry(name.clone()).or_default();
        slot.holders.retain(|h| {
            let live = h.expires_at > now;
            if !live {
                h.lost.fire(LostReason::Expired);
            }
            live
        });
        slot
    }

    /// Forgets `name` if nothing is held or awaited.
    fn prune(&mut self, name: &LockName) {
        if self
            .slots
            .get(name)
            .is_some_and(|s| s.holders.is_empty() && s.queue.is_empty())
        {
            self.slots.remove(name);
        }
    }

    /// Grants one permit of `name` to `req` (the caller has checked one is
    /// free).
    fn grant(&mut self, req: &AcquireRequest, now: Duration) -> u64 {
        let fence = self.fences.entry(req.name.clone()).or_insert(0);
        *fence += 1;
        let token = *fence;
        let slot = self.slots.entry(req.name.clone()).or_default();
        slot.queue.retain(|(id, _)| *id != req.lease_id);
        slot.holders.push(Holder {
            owner: req.owner.clone(),
            lease_id: req.lease_id.clone(),
            token,
            permits: req.permits,
            acquired_at: now,
            expires_at: now + req.ttl,
            lost: LossSignal::new(),
        });
        token
    }
}

impl MemoryBackend {
    /// The grant for `req` if it already holds a permit of `name` (a retry
    /// after a lost reply): same token, TTL restarted.
    fn regrant(state: &mut State, req: &AcquireRequest, now: Duration) -> Option<u64> {
        let holder = state.slot(&req.name, now).holder_mut(&req.lease_id)?;
        holder.expires_at = now + req.ttl;
        Some(holder.token)
    }

    /// Removes every trace of `req` (its queue entry, a lease granted to
    /// it) and wakes the queue.
    fn forget(&self, req: &AcquireRequest) {
        let mut state = self.state();
        let Some(slot) = state.slots.get_mut(&req.name) else {
            return;
        };
        slot.queue.retain(|(id, _)| *id != req.lease_id);
        slot.take_holder(&req.lease_id);
        state.prune(&req.name);
        drop(state);
        self.inner.hub.notify(&req.name);
    }
}

/// What a queued request waits with: nothing beyond its lease id.
struct Queued;

#[async_trait]
impl LockQueue for MemoryBackend {
    async fn step(
        &self,
        req: &AcquireRequest,
        place: &mut Option<QueuePlace>,
    ) -> Result<Option<Lease>> {
        let sent_at = Instant::now();
        let now = self.inner.clock.now();
        let mut state = self.state();
        if let Some(token) = Self::regrant(&mut state, req, now) {
            *place = None;
            return Ok(Some(self.lease_for(req, token, sent_at)));
        }
        let slot = state.slot(&req.name, now);
        slot.check_permits(req)?;
        if slot.admits(req) {
            let token = state.grant(req, now);
            *place = None;
            return Ok(Some(self.lease_for(req, token, sent_at)));
        }
        if !slot.queue.iter().any(|(id, _)| *id == req.lease_id) {
            slot.queue.push_back((req.lease_id.clone(), req.permits));
        }
        *place = Some(QueuePlace::new(Queued));
        Ok(None)
    }

    async fn wait_turn(
        &self,
        req: &AcquireRequest,
        _place: &mut QueuePlace,
        until: Option<Instant>,
    ) -> Result<()> {
        // Subscribe before looking, so a release in between is not missed.
        let mut wake = self.inner.hub.subscribe(&req.name);
        let holder_expiry = {
            let now = self.inner.clock.now();
            let mut state = self.state();
            let slot = state.slot(&req.name, now);
            if slot.admits(req) {
                return Ok(());
            }
            slot.next_expiry()
        };
        tokio::select! {
            () = wake.changed() => {}
            () = sleep_until_clock(self, holder_expiry) => {}
            () = crate::spi::sleep_until(until) => {}
        }
        Ok(())
    }
}

#[async_trait]
impl LockBackend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fifo: true,
            push_wakeup: true,
            durable_tokens: false,
            ttl_granularity: Duration::from_nanos(1),
            expiry_slack: Duration::from_millis(5),
            max_permits: crate::MAX_PERMITS,
        }
    }

    async fn try_acquire(&self, req: &AcquireRequest) -> Result<Option<Lease>> {
        let sent_at = Instant::now();
        let now = self.inner.clock.now();
        let mut state = self.state();
        if let Some(token) = Self::regrant(&mut state, req, now) {
            return Ok(Some(self.lease_for(req, token, sent_at)));
        }
        let slot = state.slot(&req.name, now);
        slot.check_permits(req)?;
        // Nobody jumps the queue: with waiters, a free permit is theirs.
        if !slot.queue.is_empty() || !slot.admits(req) {
            state.prune(&req.name);
            return Ok(None);
        }
        let token = state.grant(req, now);
        Ok(Some(self.lease_for(req, token, sent_at)))
    }

    fn queue(&self) -> Option<&dyn LockQueue> {
        Some(self)
    }

    async fn abandon(&self, req: &AcquireRequest) -> Result<()> {
        self.forget(req);
        Ok(())
    }

    /// In memory this needs no task: the request's traces go at once.
    fn abandon_in_background(&self, req: AcquireRequest) {
        self.forget(&req);
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let sent_at = Instant::now();
        let now = self.inner.clock.now();
        let mut state = self.state();
        if let Some(holder) = state.slot(&lease.name, now).holder_mut(&lease.lease_id) {
            holder.expires_at = now + ttl;
            return Ok(lease.renewed(ttl, sent_at));
        }
        state.prune(&lease.name);
        Err(Error::lost(&lease.name, LostReason::NotHeld))
    }

    async fn release(&self, lease: &Lease) -> Result<bool> {
        let now = self.inner.clock.now();
        let mut state = self.state();
        let slot = state.slots.entry(lease.name.clone()).or_default();
        let taken = slot.take_holder(&lease.lease_id);
        let ours = taken.is_some();
        let mut was_live = false;
        if let Some(holder) = taken {
            was_live = holder.expires_at > now;
            if !was_live {
                holder.lost.fire(LostReason::Expired);
            }
        }
        state.prune(&lease.name);
        drop(state);
        if ours {
            self.inner.hub.notify(&lease.name);
        }
        Ok(was_live)
    }

    async fn holders(&self, name: &LockName) -> Result<Vec<LockInfo>> {
        let now = self.inner.clock.now();
        let mut state = self.state();
        let infos = state
            .slot(name, now)
            .holders
            .iter()
            .map(|h| self.info(name, h))
            .collect();
        state.prune(name);
        Ok(infos)
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let now = self.inner.clock.now();
        let state = self.state();
        let mut infos: Vec<LockInfo> = state
            .slots
            .iter()
            .flat_map(|(name, slot)| {
                slot.holders
                    .iter()
                    .filter(|h| h.expires_at > now)
                    .map(|h| self.info(name, h))
            })
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name).then(a.token.cmp(&b.token)));
        Ok(infos)
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let now = self.inner.clock.now();
        let mut state = self.state();
        let removed = std::mem::take(&mut state.slot(name, now).holders);
        state.prune(name);
        drop(state);
        for holder in &removed {
            holder.lost.fire(LostReason::NotHeld);
        }
        if !removed.is_empty() {
            self.inner.hub.notify(name);
        }
        Ok(!removed.is_empty())
    }

    async fn cleanup_expired(&self) -> Result<u64> {
        let now = self.inner.clock.now();
        let mut state = self.state();
        let mut removed = 0;
        for slot in state.slots.values_mut() {
            slot.holders.retain(|h| {
                let live = h.expires_at > now;
                if !live {
                    h.lost.fire(LostReason::Expired);
                    removed += 1;
                }
                live
            });
        }
        state
            .slots
            .retain(|_, s| !s.holders.is_empty() || !s.queue.is_empty());
        Ok(removed)
    }

    async fn subscribe_releases(&self, name: &LockName) -> Result<Option<WakeSubscription>> {
        Ok(Some(self.inner.hub.subscribe(name)))
    }

    fn loss_signal(&self, lease: &Lease) -> Option<LossSignal> {
        let state = self.state();
        state
            .slots
            .get(&lease.name)
            .and_then(|slot| slot.holders.iter().find(|h| h.lease_id == lease.lease_id))
            .map(|h| h.lost.clone())
    }
}

async fn sleep_until_clock(backend: &MemoryBackend, at: Option<Duration>) {
    match at {
        Some(at) => backend.inner.clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, owner: &str, ttl_secs: u64) -> AcquireRequest {
        AcquireRequest::new(
            LockName::new(name).unwrap(),
            owner,
            Duration::from_secs(ttl_secs),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn manual_clock_expiry_is_exact() {
        let (backend, clock) = MemoryBackend::with_manual_clock();
        let a = backend
            .try_acquire(&req("n", "a", 10))
            .await
            .unwrap()
            .unwrap();
        clock.advance(Duration::from_millis(9_999));
        assert!(
            backend
                .try_acquire(&req("n", "b", 10))
                .await
                .unwrap()
                .is_none()
        );
        assert!(backend.current(&a.name).await.unwrap().is_some());
        clock.advance(Duration::from_millis(1));
        assert!(backend.current(&a.name).await.unwrap().is_none());
        let b = backend
            .try_acquire(&req("n", "b", 10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.token.get(), a.token.get() + 1);
        assert!(matches!(
            backend.extend(&a, Duration::from_secs(1)).await,
            Err(Error::Lost { .. })
        ));
        assert!(!backend.release(&a).await.unwrap());
        assert!(backend.release(&b).await.unwrap());
        assert_eq!(backend.records(), 0);
    }

    #[tokio::test]
    async fn waiter_is_granted_when_manual_clock_passes_expiry() {
        let (backend, clock) = MemoryBackend::with_manual_clock();
        let a = backend
            .try_acquire(&req("n", "a", 5))
            .await
            .unwrap()
            .unwrap();
        let waiter = {
            let backend = backend.clone();
            tokio::spawn(async move { backend.acquire(&req("n", "b", 5), None).await })
        };
        while backend.waiting(&a.name) == 0 {
            tokio::task::yield_now().await;
        }
        clock.advance(Duration::from_secs(5));
        let b = waiter.await.unwrap().unwrap();
        assert!(b.token > a.token);
        assert_eq!(backend.waiting(&a.name), 0);
    }

    #[tokio::test]
    async fn cleanup_removes_expired_only() {
        let (backend, clock) = MemoryBackend::with_manual_clock();
        backend
            .try_acquire(&req("short", "a", 1))
            .await
            .unwrap()
            .unwrap();
        backend
            .try_acquire(&req("long", "a", 100))
            .await
            .unwrap()
            .unwrap();
        clock.advance(Duration::from_secs(2));
        assert_eq!(backend.cleanup_expired().await.unwrap(), 1);
        assert_eq!(backend.records(), 1);
        let names: Vec<_> = backend
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.name.into_string())
            .collect();
        assert_eq!(names, ["long"]);
    }
}
