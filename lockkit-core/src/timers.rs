//! A timer queue served by one task: many items that each need attention
//! at some instant, without a task or a tokio timer per item
//! (`ARCHITECTURE.md` §4).
//!
//! The core's keeper uses it for held guards; a backend with per-lease
//! work of its own (etcd's per-lock deadline) uses it too.
//!
//! Entries are never removed early: an item that is scheduled again gets
//! a new entry with a new sequence number, and an entry whose number is no
//! longer its item's is skipped when it comes up. An item that no longer
//! needs attention simply does not schedule itself again. The queue holds
//! its items weakly.
//!
//! The task exits when the queue is empty and is started again by the next
//! entry; should its runtime shut down under it, the next entry starts one
//! on the caller's runtime.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use tokio::sync::Notify;
use tokio::time::Instant;

/// Something a [`TimerQueue`] wakes when it comes due.
pub trait Timed: Send + Sync + Sized + 'static {
    /// The next instant this item needs attention (read when it is
    /// scheduled).
    fn next_due(&self) -> Instant;

    /// Where the queue records this item's live entry.
    fn timer_slot(&self) -> &TimerSlot;

    /// Called on the queue's task when the item's live entry comes up at
    /// `now`. Schedule the item again from here if it still needs
    /// attention; long work belongs in a task of its own, so that the
    /// other items are not held up.
    fn come_due(self: Arc<Self>, queue: &Arc<TimerQueue<Self>>, now: Instant);
}

/// An item's live entry in a [`TimerQueue`] (embed one in the item).
#[derive(Debug, Default)]
pub struct TimerSlot(AtomicU64);

impl TimerSlot {
    /// A slot with no entry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes any entry of the item stale (it is skipped when it comes up).
    pub fn clear(&self) {
        self.0.store(0, Ordering::Release);
    }
}

/// One item's place in the queue.
struct Entry<T> {
    at: Instant,
    seq: u64,
    item: Weak<T>,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct State<T> {
    /// Earliest first.
    due: BinaryHeap<Reverse<Entry<T>>>,
    /// The last sequence number handed out (entries and tasks).
    seq: u64,
    /// The running task's number, if one runs.
    task: Option<u64>,
}

/// Items woken at their due instants by one task (see the module docs).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use lockkit_core::spi::{Timed, TimerQueue, TimerSlot};
/// use tokio::time::{Duration, Instant};
///
/// struct Alarm { at: Instant, slot: TimerSlot, rang: AtomicBool }
///
/// impl Timed for Alarm {
///     fn next_due(&self) -> Instant { self.at }
///     fn timer_slot(&self) -> &TimerSlot { &self.slot }
///     fn come_due(self: Arc<Self>, _: &Arc<TimerQueue<Self>>, _: Instant) {
///         self.rang.store(true, Ordering::SeqCst);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let queue = TimerQueue::new();
/// let alarm = Arc::new(Alarm {
///     at: Instant::now() + Duration::from_secs(5),
///     slot: TimerSlot::new(),
///     rang: AtomicBool::new(false),
/// });
/// queue.schedule(&alarm);
/// tokio::time::sleep(Duration::from_secs(6)).await;
/// assert!(alarm.rang.load(Ordering::SeqCst));
/// # }
/// ```
pub struct TimerQueue<T> {
    state: Mutex<State<T>>,
    /// Wakes the task for an entry earlier than the one it sleeps for.
    wake: Notify,
}

impl<T> fmt::Debug for TimerQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("TimerQueue")
            .field("entries", &state.due.len())
            .field("running", &state.task.is_some())
            .finish()
    }
}

impl<T: Timed> TimerQueue<T> {
    /// An empty queue (its task starts with the first entry).
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                due: BinaryHeap::new(),
                seq: 0,
                task: None,
            }),
            wake: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// (Re)schedules `item` at its [`next_due`](Timed::next_due); any
    /// earlier entry of it is skipped from now on. Starts the queue's task
    /// on the current Tokio runtime if none runs (outside a runtime the
    /// entry waits for the next call made on one).
    pub fn schedule(self: &Arc<Self>, item: &Arc<T>) {
        let at = item.next_due();
        let mut state = self.state();
        state.seq += 1;
        let seq = state.seq;
        item.timer_slot().0.store(seq, Ordering::Release);
        state.due.push(Reverse(Entry {
            at,
            seq,
            item: Arc::downgrade(item),
        }));
        let earliest = state.due.peek().is_some_and(|Reverse(e)| e.seq == seq);
        if !self.start_if_idle(&mut state) && earliest {
            self.wake.notify_one();
        }
    }

    /// How many entries are queued, stale ones included.
    pub fn len(&self) -> usize {
        self.state().due.len()
    }

    /// Whether no entry is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts the task if none runs; `true` if it did.
    fn start_if_idle(self: &Arc<Self>, state: &mut State<T>) -> bool {
        if state.task.is_some() {
            return false;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        state.seq += 1;
        state.task = Some(state.seq);
        runtime.spawn(Arc::clone(self).run(state.seq));
        true
    }

    /// The queue's task.
    async fn run(self: Arc<Self>, task: u64) {
        let _running = Running {
            queue: Arc::downgrade(&self),
            task,
        };
        loop {
            let now = Instant::now();
            let (due, next) = {
                let mut state = self.state();
                let mut due = Vec::new();
                while state.due.peek().is_some_and(|Reverse(e)| e.at <= now) {
                    if let Some(Reverse(entry)) = state.due.pop() {
                        due.push(entry);
                    }
                }
                let next = state.due.peek().map(|Reverse(e)| e.at);
                if due.is_empty() && next.is_none() {
                    state.task = None;
                    return;
                }
                (due, next)
            };
            for entry in due {
                if let Some(item) = entry.item.upgrade()
                    && item.timer_slot().0.load(Ordering::Acquire) == entry.seq
                {
                    item.come_due(&self, now);
                }
            }
            let Some(next) = next else {
                // What was handled may have queued new entries.
                continue;
            };
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}

/// Marks the queue idle if its task's future is dropped without finishing
/// (its runtime shut down), so that the next entry starts a new one.
struct Running<T: Timed> {
    queue: Weak<TimerQueue<T>>,
    task: u64,
}

impl<T: Timed> Drop for Running<T> {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.upgrade() {
            let mut state = queue.state();
            if state.task == Some(self.task) {
                state.task = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    struct Counted {
        at: Mutex<Instant>,
        slot: TimerSlot,
        calls: AtomicUsize,
    }

    impl Timed for Counted {
        fn next_due(&self) -> Instant {
            *self.at.lock().unwrap_or_else(PoisonError::into_inner)
        }
        fn timer_slot(&self) -> &TimerSlot {
            &self.slot
        }
        fn come_due(self: Arc<Self>, _: &Arc<TimerQueue<Self>>, _: Instant) {
            self.calls.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counted(at: Instant) -> Arc<Counted> {
        Arc::new(Counted {
            at: Mutex::new(at),
            slot: TimerSlot::new(),
            calls: AtomicUsize::new(0),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_rescheduled_item_comes_due_once_at_its_new_time() {
        let queue = TimerQueue::new();
        let start = Instant::now();
        let item = counted(start + Duration::from_secs(10));
        queue.schedule(&item);
        // Moved earlier: the task, asleep for 10 s, must wake for it.
        *item.at.lock().unwrap_or_else(PoisonError::into_inner) = start + Duration::from_secs(1);
        queue.schedule(&item);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(item.calls.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            item.calls.load(Ordering::SeqCst),
            1,
            "the stale entry is skipped"
        );
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cleared_or_dropped_item_is_skipped_and_the_task_ends() {
        let queue = TimerQueue::new();
        let at = Instant::now() + Duration::from_secs(1);
        let (kept, cleared, dropped) = (counted(at), counted(at), counted(at));
        for item in [&kept, &cleared, &dropped] {
            queue.schedule(item);
        }
        cleared.slot.clear();
        drop(dropped);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(kept.calls.load(Ordering::SeqCst), 1);
        assert_eq!(cleared.calls.load(Ordering::SeqCst), 0);
        assert!(queue.is_empty());
        assert!(queue.state().task.is_none(), "the idle task exits");
        // And a new entry starts a new one.
        let later = counted(Instant::now() + Duration::from_secs(1));
        queue.schedule(&later);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(later.calls.load(Ordering::SeqCst), 1);
    }
}
