//! Locks this backend instance holds, each watched by a small task that
//! frees it when its holder stops extending it or its session dies.
//!
//! The key of a held lock is attached to a session lease that is kept
//! alive in the background, so etcd alone would keep it forever while the
//! process lives. The watchdog gives every lock its own TTL on top: when a
//! lock's deadline passes without an `extend`, the watchdog deletes its key
//! (only if it still carries the lock's create revision) and fires the loss
//! signal. If the process dies or loses etcd, the session lease expires on
//! the server instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use lockkit_core::LockName;
use lockkit_core::spi::LossSignal;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::session::Session;

/// One lock held through this backend instance.
#[derive(Debug)]
pub(crate) struct HeldLock {
    pub(crate) name: LockName,
    pub(crate) key: String,
    /// The key's create revision: the fencing token.
    pub(crate) token: i64,
    state: Mutex<HeldState>,
    /// Fired, with the reason, when the lock is known to be lost.
    pub(crate) lost: LossSignal,
    /// Cancelled when the lock is released (stops the watchdog).
    pub(crate) done: CancellationToken,
    /// Wakes the watchdog after an extend.
    pub(crate) changed: Notify,
}

#[derive(Debug, Clone)]
pub(crate) struct HeldState {
    /// The session whose lease carries the key.
    pub(crate) session: Arc<Session>,
    /// The rounded TTL in seconds the session was asked for (its map key).
    pub(crate) ttl_secs: u64,
    /// When the watchdog frees the lock unless extended.
    pub(crate) deadline: Instant,
}

impl HeldLock {
    pub(crate) fn new(name: LockName, key: String, token: i64, state: HeldState) -> Arc<Self> {
        Arc::new(Self {
            name,
            key,
            token,
            state: Mutex::new(state),
            lost: LossSignal::new(),
            done: CancellationToken::new(),
            changed: Notify::new(),
        })
    }

    pub(crate) fn state(&self) -> HeldState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a successful extend and wakes the watchdog.
    pub(crate) fn update(&self, state: HeldState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
        self.changed.notify_one();
    }
}

/// The held locks of one backend instance, by key.
#[derive(Debug, Default)]
pub(crate) struct HeldLocks {
    locks: Mutex<HashMap<String, Arc<HeldLock>>>,
}

impl HeldLocks {
    pub(crate) fn insert(&self, lock: Arc<HeldLock>) {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(lock.key.clone(), lock);
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<HeldLock>> {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Removes the entry for `key`, whatever it is.
    pub(crate) fn remove(&self, key: &str) -> Option<Arc<HeldLock>> {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
    }

    /// Removes `lock` if it is still the entry for its key.
    pub(crate) fn forget(&self, lock: &Arc<HeldLock>) {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if locks.get(&lock.key).is_some_and(|l| Arc::ptr_eq(l, lock)) {
            locks.remove(&lock.key);
        }
    }

    /// How many locks are held.
    pub(crate) fn len(&self) -> usize {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
