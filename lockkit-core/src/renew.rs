//! Renewal that does not grow per held lock (`ARCHITECTURE.md` §4).
//!
//! Guards do not extend their leases one by one. Each guard's renewal time
//! is rounded *down* to a grid of a quarter of its renewal interval, so
//! guards of one TTL come due at the same instants; their renewals meet in
//! a [`Batcher`] shared by a [`Locker`](crate::Locker) and its clones,
//! which hands every renewal that arrives within [`COALESCE`] to the
//! backend as one [`LockBackend::extend_many`] call: one pipeline (Redis),
//! one statement or transaction (SQL), one multi-write (ZooKeeper), or no
//! network at all where the session keep-alive already proves the leases
//! (etcd). Renewing up to a quarter interval early only extends a lease
//! sooner; it never shortens one.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::backend::LockBackend;
use crate::error::{Error, Result};
use crate::lease::Lease;

/// How long the first renewal of a batch waits for others due at the same
/// instant. Waking a thousand guard tasks on a loaded 2-core machine takes
/// longer than a couple of milliseconds, and renewals run a third of a TTL
/// early, so a wider window costs nothing and keeps one batch per tick.
pub(crate) const COALESCE: Duration = Duration::from_millis(20);

/// `at`, rounded down to a multiple of `grid` counted from one instant
/// shared by the whole process (so guards created at different times
/// share grid points).
pub(crate) fn align_down(at: Instant, grid: Duration) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    if grid.is_zero() || at <= epoch {
        return at;
    }
    let since = at - epoch;
    let grid_ns = grid.as_nanos().max(1);
    let offset = since.as_nanos() % grid_ns;
    at - Duration::from_nanos(u64::try_from(offset).unwrap_or(0))
}

/// One renewal waiting for its batch.
struct Pending {
    lease: Lease,
    ttl: Duration,
    reply: oneshot::Sender<Result<Lease>>,
}

/// Collects renewals due at the same instant into one
/// [`LockBackend::extend_many`] call.
pub(crate) struct Batcher {
    backend: Arc<dyn LockBackend>,
    pending: Mutex<Vec<Pending>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("backend", &self.backend.kind())
            .finish_non_exhaustive()
    }
}

impl Batcher {
    pub(crate) fn new(backend: Arc<dyn LockBackend>) -> Arc<Self> {
        Arc::new(Self {
            backend,
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Extends `lease` to `ttl`, together with every other renewal that
    /// arrives within [`COALESCE`].
    ///
    /// # Errors
    /// What the backend reports for this lease.
    ///
    /// # Cancel safety
    /// The batch runs in a task of its own; dropping this future only
    /// drops the answer (the lease may have been extended).
    pub(crate) async fn extend(self: &Arc<Self>, lease: Lease, ttl: Duration) -> Result<Lease> {
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.push(Pending { lease, ttl, reply });
            pending.len() == 1
        };
        if first {
            let batcher = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(COALESCE).await;
                batcher.flush().await;
            });
        }
        answer.await.unwrap_or_else(|_| {
            Err(Error::transient(
                self.backend.kind(),
                "the renewal batch was dropped",
                None,
            ))
        })
    }

    /// Sends everything pending as one batch and answers each renewal.
    async fn flush(&self) {
        let batch: Vec<Pending> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        if batch.is_empty() {
            return;
        }
        let requests: Vec<(Lease, Duration)> =
            batch.iter().map(|p| (p.lease.clone(), p.ttl)).collect();
        let mut results = self.backend.extend_many(&requests).await.into_iter();
        for pending in batch {
            let result = results.next().unwrap_or_else(|| {
                Err(Error::backend(
                    self.backend.kind(),
                    "extend_many returned fewer results than leases",
                    None,
                ))
            });
            let _ = pending.reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_rounds_down_to_shared_grid_points() {
        let grid = Duration::from_millis(100);
        let cell = align_down(Instant::now() + Duration::from_secs(1), grid);
        assert_eq!(align_down(cell, grid), cell);
        assert_eq!(align_down(cell + grid / 4, grid), cell, "one cell meets");
        assert_eq!(align_down(cell + grid * 3 / 4, grid), cell);
        assert_eq!(align_down(cell + grid, grid), cell + grid);
        let t = Instant::now() + Duration::from_millis(1234);
        assert!(align_down(t, grid) <= t, "never later");
    }
}
