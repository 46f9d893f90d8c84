//! Release messages of a push channel, routed to this process's waiters
//! (`ARCHITECTURE.md` §6): waiters of a name that poll are woken by any
//! release of it; FIFO waiters only when they become the head of the
//! queue, so a release costs one retry, not one per queued waiter.
//!
//! A message payload is one of
//! - `<name>`: wakes the name's polling waiters;
//! - `<name>\n<lease id>`: also wakes the FIFO waiter with that lease id,
//!   the new head of the name's queue;
//! - `<name>\n` (no lease id): the sender could not tell the head (Postgres
//!   reads the queue in the releasing statement's snapshot, which may miss
//!   a waiter that joined at that moment): wakes every FIFO waiter of the
//!   name, which re-check.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::lease::LeaseId;
use crate::name::LockName;
use crate::wait::{Backoff, WakeHub, WakeSubscription};

/// The wake-up hubs of one backend instance (see the module docs).
#[derive(Debug)]
pub struct Wakes {
    names: Arc<WakeHub>,
    queued: Arc<WakeHub>,
    turns: Arc<WakeHub>,
}

impl Wakes {
    /// New, empty hubs.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            names: WakeHub::new(),
            queued: WakeHub::new(),
            turns: WakeHub::new(),
        })
    }

    /// Woken by every release of `name` (waiters that poll).
    pub fn subscribe_name(&self, name: &LockName) -> WakeSubscription {
        self.names.subscribe(name)
    }

    /// Woken when the FIFO waiter `lease_id` of `name` becomes the head of
    /// the queue, or when a release could not tell the head.
    pub fn subscribe_turn(&self, name: &LockName, lease_id: &LeaseId) -> TurnSubscription {
        TurnSubscription {
            // Lease ids are valid lock names (short, printable); should one
            // not be, the waiter is woken with all waiters of the name.
            turn: LockName::new(lease_id.as_str())
                .ok()
                .map(|key| self.turns.subscribe(&key)),
            queued: self.queued.subscribe(name),
        }
    }

    /// Delivers one message payload (see the module docs).
    pub fn deliver(&self, payload: &str) {
        match payload.split_once('\n') {
            Some((name, "")) => {
                self.names.notify_str(name);
                self.queued.notify_str(name);
            }
            Some((name, head)) => {
                self.names.notify_str(name);
                // A head waiting in another process: nobody here wakes.
                self.turns.notify_str(head);
            }
            None => self.names.notify_str(payload),
        }
    }

    /// Wakes everyone (after a reconnect, messages may have been missed).
    pub fn notify_all(&self) {
        self.names.notify_all();
        self.queued.notify_all();
        self.turns.notify_all();
    }
}

/// A FIFO waiter's subscription (see [`Wakes::subscribe_turn`]).
#[derive(Debug)]
pub struct TurnSubscription {
    turn: Option<WakeSubscription>,
    queued: WakeSubscription,
}

impl TurnSubscription {
    /// Resolves at the next hint for this waiter after the previous call.
    ///
    /// # Cancel safety
    /// Cancel safe: a hint that arrives after the future is dropped wakes
    /// the next call.
    pub async fn changed(&mut self) {
        match &mut self.turn {
            Some(turn) => tokio::select! {
                () = turn.changed() => {}
                () = self.queued.changed() => {}
            },
            None => self.queued.changed().await,
        }
    }
}

/// A queued waiter's wait between two steps (a backend's
/// [`LockQueue::wait_turn`](crate::spi::LockQueue::wait_turn)): until its
/// turn hint, the next `backoff` step or `refresh` from now (so the waiter
/// refreshes its queue entry in time), whichever comes first, and never
/// past `until`. A hint resets the backoff. Without a subscription it only
/// sleeps.
///
/// # Cancel safety
/// Cancel safe: nothing is consumed but a hint, which the next step acts
/// on anyway.
pub async fn wait_for_turn(
    wake: Option<&mut TurnSubscription>,
    backoff: &mut Backoff,
    refresh: Duration,
    until: Option<Instant>,
) {
    let now = Instant::now();
    let mut wake_at = (now + backoff.next_delay()).min(now + refresh);
    if let Some(until) = until {
        wake_at = wake_at.min(until);
    }
    match wake {
        Some(wake) => tokio::select! {
            () = wake.changed() => backoff.reset(),
            () = tokio::time::sleep_until(wake_at) => {}
        },
        None => tokio::time::sleep_until(wake_at).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Did the subscription have a hint waiting?
    fn woken(sub: &mut TurnSubscription) -> bool {
        tokio_test_now(sub.changed())
    }

    fn tokio_test_now(fut: impl std::future::Future<Output = ()>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(fut);
        fut.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn a_release_naming_the_head_wakes_only_the_head() {
        let wakes = Wakes::new();
        let name = LockName::new("job").unwrap();
        let (a, b) = (LeaseId::random(), LeaseId::random());
        let mut first = wakes.subscribe_turn(&name, &a);
        let mut second = wakes.subscribe_turn(&name, &b);
        let mut poller = wakes.subscribe_name(&name);
        wakes.deliver(&format!("job\n{a}"));
        assert!(woken(&mut first));
        assert!(!woken(&mut second));
        assert!(tokio_test_now(poller.changed()));
        // The head of another process's queue: nobody here.
        wakes.deliver(&format!("job\n{}", LeaseId::random()));
        assert!(!woken(&mut first));
        assert!(!woken(&mut second));
    }

    #[test]
    fn a_release_without_a_head_wakes_every_queued_waiter() {
        let wakes = Wakes::new();
        let name = LockName::new("job").unwrap();
        let mut first = wakes.subscribe_turn(&name, &LeaseId::random());
        let mut second = wakes.subscribe_turn(&name, &LeaseId::random());
        wakes.deliver("job\n");
        assert!(woken(&mut first));
        assert!(woken(&mut second));
        // A bare name is for polling waiters only.
        wakes.deliver("job");
        assert!(!woken(&mut first));
        wakes.notify_all();
        assert!(woken(&mut second));
    }
}
