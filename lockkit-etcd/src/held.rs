//! Locks this backend instance holds, and how each one ends.
//!
//! The key of a held lock is attached to a session lease that is kept
//! alive in the background, so etcd alone would keep it forever while the
//! process lives. Every lock therefore has its own deadline on top: when
//! it passes without an `extend`, the lock is freed (its key is deleted,
//! only if it still carries the lock's create revision) and its loss
//! signal fires. If the process dies or loses etcd, the session lease
//! expires on the server instead.
//!
//! No lock has a task of its own (each would cost kilobytes per held
//! lock): the deadlines sit in one [`TimerQueue`], deletions by someone
//! else arrive on one shared watch stream ([`Deletions`]), and a
//! session's loss ends all of its locks at once
//! ([`HeldLocks::lose_session`]).
//!
//! [`Deletions`]: crate::deletions::Deletions

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use lockkit_core::spi::{AcquireRequest, LossSignal, Timed, TimerQueue, TimerSlot};
use lockkit_core::{Lease, LostReason, Result};
use tokio::time::Instant;

use crate::session::Session;
use crate::shared::{Shared, capped, token_of, ttl_secs};

/// One lock held through this backend instance.
#[derive(Debug)]
pub(crate) struct HeldLock {
    /// Shared with the map key and the lease's handle (it names the lock).
    pub(crate) key: Arc<str>,
    /// The key's create revision: the fencing token.
    pub(crate) token: i64,
    state: Mutex<HeldState>,
    /// Fired, with the reason, when the lock is known to be lost.
    pub(crate) lost: LossSignal,
    /// This lock's id on the shared deletion watch.
    pub(crate) watch_id: i64,
    /// Its entry in the deadline queue.
    timer: TimerSlot,
    shared: Weak<Shared>,
}

#[derive(Debug, Clone)]
pub(crate) struct HeldState {
    /// The session whose lease carries the key.
    pub(crate) session: Arc<Session>,
    /// The rounded TTL in seconds the session was asked for (its map key).
    pub(crate) ttl_secs: u64,
    /// When the lock is freed unless extended.
    pub(crate) deadline: Instant,
}

impl HeldLock {
    pub(crate) fn state(&self) -> HeldState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a successful extend; a deadline that moved earlier (a
    /// shorter TTL) is queued again at once, a later one when the old
    /// entry comes up.
    pub(crate) fn update(self: &Arc<Self>, state: HeldState) {
        let earlier = {
            let mut current = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let earlier = state.deadline < current.deadline;
            *current = state;
            earlier
        };
        if earlier && let Some(shared) = self.shared.upgrade() {
            shared.deadlines.schedule(self);
        }
    }

    /// Stops the deadline and the deletion watch (the lock left the map).
    fn stop(&self) {
        self.timer.clear();
        if let Some(shared) = self.shared.upgrade() {
            shared.deletions.unwatch(self.watch_id);
        }
    }
}

impl Timed for HeldLock {
    fn next_due(&self) -> Instant {
        self.state().deadline
    }

    fn timer_slot(&self) -> &TimerSlot {
        &self.timer
    }

    /// The deadline came: free the lock unless it was extended meanwhile.
    fn come_due(self: Arc<Self>, queue: &Arc<TimerQueue<Self>>, now: Instant) {
        let state = self.state();
        if now < state.deadline {
            queue.schedule(&self);
            return;
        }
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        tracing::debug!(key = %self.key, "lease not extended before its TTL; freeing it");
        shared.held.forget(&self);
        self.lost.fire(LostReason::Expired);
        tokio::spawn(async move {
            shared
                .delete_eventually(self.key.to_string(), Some(self.token), state.session)
                .await;
        });
    }
}

/// The held locks of one backend instance, by key.
#[derive(Debug, Default)]
pub(crate) struct HeldLocks {
    locks: Mutex<HashMap<Arc<str>, Arc<HeldLock>>>,
}

impl HeldLocks {
    fn locks(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<HeldLock>>> {
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, lock: Arc<HeldLock>) {
        let old = self.locks().insert(Arc::clone(&lock.key), lock);
        if let Some(old) = old {
            old.stop();
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<HeldLock>> {
        self.locks().get(key).cloned()
    }

    /// Removes the entry for `key`, whatever it is, and stops its deadline
    /// and deletion watch.
    pub(crate) fn remove(&self, key: &str) -> Option<Arc<HeldLock>> {
        let lock = self.locks().remove(key)?;
        lock.stop();
        Some(lock)
    }

    /// Removes `lock` if it is still the entry for its key.
    pub(crate) fn forget(&self, lock: &Arc<HeldLock>) {
        let removed = {
            let mut locks = self.locks();
            let current = locks.get(&lock.key).is_some_and(|l| Arc::ptr_eq(l, lock));
            current && locks.remove(&lock.key).is_some()
        };
        if removed {
            lock.stop();
        }
    }

    /// Ends every lock carried by `session`, which was lost: forgets it and
    /// fires its signal with the session's reason.
    pub(crate) fn lose_session(&self, session: &Arc<Session>) {
        let lost: Vec<Arc<HeldLock>> = {
            let mut locks = self.locks();
            let keys: Vec<Arc<str>> = locks
                .iter()
                .filter(|(_, l)| Arc::ptr_eq(&l.state().session, session))
                .map(|(k, _)| Arc::clone(k))
                .collect();
            keys.iter().filter_map(|k| locks.remove(k)).collect()
        };
        let reason = LostReason::SessionLost(session.lost_reason());
        for lock in lost {
            lock.stop();
            lock.lost.fire(reason.clone());
        }
    }

    /// How many locks are held.
    pub(crate) fn len(&self) -> usize {
        self.locks().len()
    }
}

/// Registers a granted lock — its deadline and its deletion watch — and
/// builds the lease.
pub(crate) fn grant(
    shared: &Arc<Shared>,
    req: &AcquireRequest,
    key: String,
    revision: i64,
    session: Arc<Session>,
    sent_at: Instant,
) -> Result<Lease> {
    let token = token_of(revision)?;
    let ttl = session.ttl();
    let key: Arc<str> = key.into();
    let lock = Arc::new(HeldLock {
        key: Arc::clone(&key),
        token: revision,
        state: Mutex::new(HeldState {
            session: Arc::clone(&session),
            ttl_secs: ttl_secs(req.ttl),
            deadline: sent_at + ttl,
        }),
        lost: LossSignal::new(),
        watch_id: shared.deletions.next_id(),
        timer: TimerSlot::new(),
        shared: Arc::downgrade(shared),
    });
    shared.held.insert(Arc::clone(&lock));
    shared.deadlines.schedule(&lock);
    shared.deletions.watch(shared, &lock);
    let lease = Lease::granted(req, token, sent_at)
        .with_effective_ttl(ttl)
        .with_handle(key);
    Ok(capped(lease, &session))
}
