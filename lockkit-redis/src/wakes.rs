//! Where release messages go in this process: waiters of a name (the
//! unfair mode polls and is woken by any release of its name) and FIFO
//! waiters by lease id (only the new head of the queue is woken, so one
//! release costs one retry, not one per queued waiter).
//!
//! A message's payload is `<name>` or `<name>\n<lease id of the head>`
//! (ARCHITECTURE.md §6).

use std::sync::Arc;

use lockkit_core::spi::{WakeHub, WakeSubscription};
use lockkit_core::{LeaseId, LockName};

/// The two wake-up hubs of one backend instance.
#[derive(Debug)]
pub(crate) struct Wakes {
    names: Arc<WakeHub>,
    turns: Arc<WakeHub>,
}

impl Wakes {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            names: WakeHub::new(),
            turns: WakeHub::new(),
        })
    }

    /// Woken by every release of `name`.
    pub(crate) fn subscribe_name(&self, name: &LockName) -> WakeSubscription {
        self.names.subscribe(name)
    }

    /// Woken when the FIFO waiter `lease_id` becomes the head of a queue.
    /// `None` if a lease id could not key the hub (then it only polls).
    pub(crate) fn subscribe_turn(&self, lease_id: &LeaseId) -> Option<WakeSubscription> {
        LockName::new(lease_id.as_str())
            .ok()
            .map(|key| self.turns.subscribe(&key))
    }

    /// Delivers one message payload.
    pub(crate) fn deliver(&self, payload: &str) {
        match payload.split_once('\n') {
            Some((name, head)) => {
                self.names.notify_str(name);
                self.turns.notify_str(head);
            }
            None => self.names.notify_str(payload),
        }
    }

    /// Wakes everyone (after a reconnect, messages may have been missed).
    pub(crate) fn notify_all(&self) {
        self.names.notify_all();
        self.turns.notify_all();
    }
}
