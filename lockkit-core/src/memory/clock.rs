//! The memory backend's clock: real time, or a manual clock for tests.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

/// The clock the memory backend decides expiry by.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    /// Real monotonic time since `base`.
    System { base: Instant, wall: SystemTime },
    /// Time that only moves when the test says so.
    Manual(ManualClock),
}

impl Clock {
    pub(crate) fn system() -> Self {
        Self::System {
            base: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Time elapsed on this clock since it started.
    pub(crate) fn now(&self) -> Duration {
        match self {
            Self::System { base, .. } => base.elapsed(),
            Self::Manual(manual) => manual.now(),
        }
    }

    /// The wall-clock time of a point on this clock.
    pub(crate) fn wall(&self, at: Duration) -> SystemTime {
        match self {
            Self::System { wall, .. } => *wall + at,
            Self::Manual(manual) => manual.inner.wall + at,
        }
    }

    /// Sleeps until this clock reads at least `at`.
    pub(crate) async fn sleep_until(&self, at: Duration) {
        match self {
            Self::System { base, .. } => tokio::time::sleep_until(*base + at).await,
            Self::Manual(manual) => manual.sleep_until(at).await,
        }
    }
}

#[derive(Debug)]
struct ManualInner {
    now: watch::Sender<Duration>,
    wall: SystemTime,
}

/// A clock for deterministic expiry tests: it starts at zero and moves only
/// when [`advance`](Self::advance) is called. Obtain one with
/// [`MemoryBackend::with_manual_clock`](super::MemoryBackend::with_manual_clock).
///
/// Only the backend's notion of time is manual. The holder's local safe
/// deadline (and so the guard's `lost` on expiry) still follows real time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

impl ManualClock {
    pub(crate) fn new() -> Self {
        Self {
            inner: Arc::new(ManualInner {
                now: watch::channel(Duration::ZERO).0,
                wall: SystemTime::now(),
            }),
        }
    }

    /// How far the clock has been advanced.
    pub fn now(&self) -> Duration {
        *self.inner.now.borrow()
    }

    /// Moves the clock forward by `by`, waking anything waiting for that time.
    pub fn advance(&self, by: Duration) {
        self.inner.now.send_modify(|now| *now += by);
    }

    async fn sleep_until(&self, at: Duration) {
        let mut rx = self.inner.now.subscribe();
        loop {
            if *rx.borrow_and_update() >= at {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
