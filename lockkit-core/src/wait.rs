//! Waiting for a lock: jittered capped polling and in-process wake-ups.
//!
//! The acquisition driver (`LockBackend::acquire`) waits with these;
//! backends only provide a try and, if they can, a [`WakeSubscription`]
//! fed from their push channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::name::LockName;

/// How a waiter polls when it has no (or missed a) push notification.
///
/// Sleeps grow from `initial` by `factor` up to `max`; each sleep is drawn
/// at random from its upper half ("equal jitter"), so many waiters do not
/// retry in lock-step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollPolicy {
    /// First sleep.
    pub initial: Duration,
    /// Longest sleep.
    pub max: Duration,
    /// Growth per attempt (≥ 1).
    pub factor: f64,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(500),
            factor: 2.0,
        }
    }
}

impl PollPolicy {
    /// A policy with the given bounds and the default growth factor.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            ..Self::default()
        }
    }

    /// Starts a fresh backoff sequence.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            current: self.initial,
        }
    }
}

/// A running jittered, capped backoff (see [`PollPolicy`]).
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: PollPolicy,
    current: Duration,
}

impl Backoff {
    /// The next sleep: random within the upper half of the current step.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current.min(self.policy.max);
        let half = step / 2;
        let jitter = half.mul_f64(fastrand::f64());
        let grown = self.current.mul_f64(self.policy.factor.max(1.0));
        self.current = grown.min(self.policy.max);
        half + jitter
    }

    /// Back to the first step (after a wake-up).
    pub fn reset(&mut self) {
        self.current = self.policy.initial;
    }
}

/// In-process fan-out of "lock may have been released" hints, keyed by lock
/// name. A backend feeds it from its push channel (Postgres `NOTIFY`, Redis
/// pub/sub, its own release path) with [`notify`](Self::notify); waiters hold a
/// [`WakeSubscription`]. Entries exist only while someone is subscribed.
#[derive(Debug, Default)]
pub struct WakeHub {
    senders: Mutex<HashMap<LockName, watch::Sender<u64>>>,
}

impl WakeHub {
    /// A new, empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Subscribes to hints for `name`. Only hints sent after this call wake
    /// the subscription.
    pub fn subscribe(self: &Arc<Self>, name: &LockName) -> WakeSubscription {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = senders
            .entry(name.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        WakeSubscription {
            rx,
            hub: Arc::clone(self),
            name: name.clone(),
        }
    }

    /// Wakes every subscription for `name`.
    pub fn notify(&self, name: &LockName) {
        let senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = senders.get(name) {
            tx.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// Wakes every subscription for a name given as a string (for push
    /// channels that deliver raw payloads); ignores invalid names.
    pub fn notify_str(&self, name: &str) {
        let senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = senders.get(name) {
            tx.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// Wakes every subscription (after a reconnect, when hints may have been
    /// missed).
    pub fn notify_all(&self) {
        let senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        for tx in senders.values() {
            tx.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }

    /// How many names currently have subscribers.
    pub fn subscribed_names(&self) -> usize {
        self.senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn unsubscribe(&self, name: &LockName) {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        // Called from Drop while the departing receiver still exists.
        if senders.get(name).is_some_and(|tx| tx.receiver_count() <= 1) {
            senders.remove(name);
        }
    }
}

/// One waiter's subscription to release hints for one lock name (see
/// [`WakeHub`]). Dropping it unsubscribes.
#[derive(Debug)]
pub struct WakeSubscription {
    rx: watch::Receiver<u64>,
    hub: Arc<WakeHub>,
    name: LockName,
}

impl WakeSubscription {
    /// Resolves at the next hint sent after the previous call (or after
    /// subscribing).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The hub dropped the sender: no more hints will come; the
            // caller's poll timer takes over.
            std::future::pending::<()>().await;
        }
    }

    /// The lock this subscription is for.
    pub fn name(&self) -> &LockName {
        &self.name
    }
}

impl Drop for WakeSubscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let policy = PollPolicy::new(Duration::from_millis(10), Duration::from_millis(100));
        let mut b = policy.backoff();
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(100), "{d:?}");
            assert!(d >= Duration::from_millis(5), "{d:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }

    #[tokio::test]
    async fn hub_wakes_only_after_subscription_and_cleans_up() {
        let hub = WakeHub::new();
        let name = LockName::new("n").unwrap();
        hub.notify(&name); // nobody subscribed: no entry is created
        assert_eq!(hub.subscribed_names(), 0);
        let mut a = hub.subscribe(&name);
        let mut b = hub.subscribe(&name);
        hub.notify(&name);
        a.changed().await;
        b.changed().await;
        drop(a);
        assert_eq!(hub.subscribed_names(), 1);
        drop(b);
        assert_eq!(hub.subscribed_names(), 0);
    }
}
