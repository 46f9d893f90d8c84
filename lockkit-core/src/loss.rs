//! How a backend tells a guard that its lease is gone, and why.
//!
//! A guard does not wait on its lease's signal in a task of its own (that
//! task would cost several hundred bytes per held lock): it registers a
//! listener that [`LossSignal::fire`] calls, which hands the loss to the
//! locker's keeper (`ARCHITECTURE.md` §4).

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use tokio::sync::Notify;

use crate::error::LostReason;

/// Called once, with the reason, when a signal fires.
type Listener = Box<dyn FnOnce(&LostReason) + Send>;

/// The listeners of a signal. Almost every signal has one (its guard's),
/// kept inline: a vector's first allocation would cost more than the
/// listener itself.
#[derive(Default)]
struct Listeners {
    first: Option<Listener>,
    more: Vec<Listener>,
}

impl Listeners {
    fn push(&mut self, listener: Listener) {
        if self.first.is_none() {
            self.first = Some(listener);
        } else {
            self.more.push(listener);
        }
    }

    fn drain(self) -> impl Iterator<Item = Listener> {
        self.first.into_iter().chain(self.more)
    }
}

/// One signal's state, shared by its clones.
struct Inner {
    reason: OnceLock<LostReason>,
    /// Wakes [`LossSignal::fired`] futures.
    fired: Notify,
    listeners: Mutex<Listeners>,
}

/// A backend's "this lease is gone" signal for one lease, with the reason.
///
/// Backends that learn of a loss by themselves (a session that expired, a
/// node deleted by an admin, a lease observed expired) return one from
/// [`LockBackend::loss_signal`](crate::LockBackend::loss_signal); the guard
/// listens to it besides its own renewal and deadline, and reports the
/// reason the backend gave — not a generic one. Return one signal per
/// lease: every guard that gets the signal registers a listener on it,
/// which lives as long as the signal does.
///
/// The signal fires once: the first [`fire`](Self::fire) wins. Signals of
/// many leases can also fire together, through a [`LossGroup`] (a
/// session's).
///
/// ```
/// use lockkit_core::LostReason;
/// use lockkit_core::spi::LossSignal;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let signal = LossSignal::new();
/// let watching = signal.clone();
/// signal.fire(LostReason::NotHeld);
/// signal.fire(LostReason::Expired); // too late: the first reason stays
/// assert_eq!(watching.fired().await, LostReason::NotHeld);
/// # }
/// ```
#[derive(Clone)]
pub struct LossSignal {
    inner: Arc<Inner>,
}

impl fmt::Debug for LossSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LossSignal")
            .field("reason", &self.inner.reason.get())
            .finish_non_exhaustive()
    }
}

impl Default for LossSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl LossSignal {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                reason: OnceLock::new(),
                fired: Notify::new(),
                listeners: Mutex::new(Listeners::default()),
            }),
        }
    }

    /// A signal that also fires when `group` does (at once if it already
    /// has), with the group's reason.
    pub fn in_group(group: &LossGroup) -> Self {
        let signal = Self::new();
        group.add(&signal);
        signal
    }

    /// Fires the signal with `reason`, unless it already fired. Listeners
    /// run on the calling thread, after the signal's own lock is let go.
    pub fn fire(&self, reason: LostReason) {
        if self.inner.reason.set(reason).is_err() {
            return;
        }
        self.inner.fired.notify_waiters();
        let listeners = std::mem::take(
            &mut *self
                .inner
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if let Some(reason) = self.inner.reason.get() {
            for listener in listeners.drain() {
                listener(reason);
            }
        }
    }

    /// Whether the signal has fired.
    pub fn is_fired(&self) -> bool {
        self.inner.reason.get().is_some()
    }

    /// The reason, once fired.
    pub fn reason(&self) -> Option<LostReason> {
        self.inner.reason.get().cloned()
    }

    /// Waits until the signal fires and returns the reason.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting.
    pub async fn fired(&self) -> LostReason {
        loop {
            let notified = self.inner.fired.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.reason() {
                return reason;
            }
            notified.await;
        }
    }

    /// Calls `listener` once the signal fires — at once, on this thread, if
    /// it already has.
    pub(crate) fn on_fire(&self, listener: impl FnOnce(&LostReason) + Send + 'static) {
        {
            let mut listeners = self
                .inner
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Checked under the lock that `fire` takes after recording its
            // reason: a listener is either taken by `fire` or sees the
            // reason here.
            if self.inner.reason.get().is_none() {
                listeners.push(Box::new(listener));
                return;
            }
        }
        if let Some(reason) = self.inner.reason.get() {
            listener(reason);
        }
    }
}

/// Signals that fire together — those of every lease carried by one
/// session, for example. The group holds its members weakly: a released
/// lease's signal is not kept alive by it.
///
/// ```
/// use lockkit_core::LostReason;
/// use lockkit_core::spi::{LossGroup, LossSignal};
///
/// let session = LossGroup::new();
/// let lease = LossSignal::in_group(&session);
/// session.fire(LostReason::SessionLost("expired".into()));
/// assert!(lease.is_fired());
/// // A lease joining a group that already fired is lost from the start.
/// assert!(LossSignal::in_group(&session).is_fired());
/// ```
#[derive(Clone, Default)]
pub struct LossGroup {
    inner: Arc<GroupInner>,
}

#[derive(Default)]
struct GroupInner {
    reason: OnceLock<LostReason>,
    members: Mutex<Vec<Weak<Inner>>>,
}

impl fmt::Debug for LossGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LossGroup")
            .field("reason", &self.inner.reason.get())
            .finish_non_exhaustive()
    }
}

impl LossGroup {
    /// A group that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires every member with `reason` (clones of it), unless the group
    /// already fired; members added later fire at once.
    pub fn fire(&self, reason: LostReason) {
        if self.inner.reason.set(reason.clone()).is_err() {
            return;
        }
        let members = std::mem::take(
            &mut *self
                .inner
                .members
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for member in members.iter().filter_map(Weak::upgrade) {
            LossSignal { inner: member }.fire(reason.clone());
        }
    }

    /// Whether the group has fired.
    pub fn is_fired(&self) -> bool {
        self.inner.reason.get().is_some()
    }

    fn add(&self, signal: &LossSignal) {
        {
            let mut members = self
                .inner
                .members
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if self.inner.reason.get().is_none() {
                // Forget released members before the vector would grow, so
                // its length follows the leases alive, not all ever made.
                if members.len() == members.capacity() {
                    members.retain(|m| m.strong_count() > 0);
                }
                members.push(Arc::downgrade(&signal.inner));
                return;
            }
        }
        if let Some(reason) = self.inner.reason.get() {
            signal.fire(reason.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_listener_runs_once_whether_it_came_before_or_after_the_fire() {
        let calls = Arc::new(AtomicUsize::new(0));
        let signal = LossSignal::new();
        let before = Arc::clone(&calls);
        signal.on_fire(move |r| {
            assert_eq!(*r, LostReason::NotHeld);
            before.fetch_add(1, Ordering::SeqCst);
        });
        signal.fire(LostReason::NotHeld);
        signal.fire(LostReason::Expired);
        let after = Arc::clone(&calls);
        signal.on_fire(move |r| {
            assert_eq!(*r, LostReason::NotHeld, "the first reason stays");
            after.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_group_fires_its_live_members_and_forgets_dropped_ones() {
        let group = LossGroup::new();
        let kept = LossSignal::in_group(&group);
        for _ in 0..100 {
            drop(LossSignal::in_group(&group));
        }
        let live = group
            .inner
            .members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!(live <= 64, "dropped members are pruned ({live} kept)");
        group.fire(LostReason::Expired);
        assert_eq!(kept.reason(), Some(LostReason::Expired));
    }

    #[tokio::test]
    async fn fired_wakes_a_waiter_that_started_before_the_fire() {
        let signal = LossSignal::new();
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move { signal.fired().await }
        });
        tokio::task::yield_now().await;
        signal.fire(LostReason::NotHeld);
        assert_eq!(waiter.await.ok(), Some(LostReason::NotHeld));
    }
}
