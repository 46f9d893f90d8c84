//! The keeper: what keeps the leases of a [`Locker`](crate::Locker)'s
//! guards (and its clones') alive, with no task per guard
//! (`ARCHITECTURE.md` §4).
//!
//! Every guard has one entry in the keeper's [`TimerQueue`], at the next
//! instant it needs attention — its renewal time, its local deadline or
//! its maximum hold, whichever comes first. When it comes due, the guard
//! decides what it needs: a renewal (run in a short-lived task, so that a
//! slow backend does not hold up the others, and meeting the other
//! renewals of that instant in the [`Batcher`]), or the end of its lease.
//! Losses the backend reports reach the guard through a
//! [`LossSignal`](crate::spi::LossSignal) listener. An idle held lock costs
//! one queue entry, not a task.

use std::sync::Arc;

use crate::backend::LockBackend;
use crate::guard::Shared;
use crate::renew::Batcher;
use crate::timers::TimerQueue;

/// A locker's timer queue of guards and its renewal batcher.
#[derive(Debug)]
pub(crate) struct Keeper {
    batcher: Arc<Batcher>,
    timers: Arc<TimerQueue<Shared>>,
}

impl Keeper {
    pub(crate) fn new(backend: Arc<dyn LockBackend>) -> Arc<Self> {
        Arc::new(Self {
            batcher: Batcher::new(backend),
            timers: TimerQueue::new(),
        })
    }

    /// Where this keeper's renewals meet.
    pub(crate) fn batcher(&self) -> &Arc<Batcher> {
        &self.batcher
    }

    /// (Re)schedules `guard` for the next instant it needs attention.
    pub(crate) fn schedule(&self, guard: &Arc<Shared>) {
        self.timers.schedule(guard);
    }
}
