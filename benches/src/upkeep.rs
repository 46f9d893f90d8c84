//! P6: the cost of holding many locks — backend requests per renewal
//! period, counted at the server, and client heap per held lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lockkit::{LockGuard, LockOptions};
use serde::Serialize;

use crate::alloc;
use crate::probe::Counter;
use crate::subject::Result;
use crate::subjects::lockkit::LockkitSubject;

/// Lease TTL in P6: renewals every TTL/3.
pub const TTL: Duration = Duration::from_secs(3);

/// One P6 measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Upkeep {
    /// Locks held.
    pub held: usize,
    /// Seconds it took to take them (16 at a time).
    pub acquire_seconds: f64,
    /// Renewal periods observed.
    pub periods: u32,
    /// Server requests per renewal period while holding (`None` when the
    /// backend has no server to count at).
    pub requests_per_period: Option<f64>,
    /// Server requests per period with nothing held, same window length.
    pub idle_requests_per_period: Option<f64>,
    /// Client heap bytes per held lock.
    pub heap_bytes_per_lock: f64,
    /// Guards that were lost during the window (must be 0).
    pub lost: usize,
}

/// Holds `held` locks on one locker for `periods` renewal periods.
pub async fn upkeep(
    subject: &LockkitSubject,
    counter: Option<&Counter>,
    held: usize,
    periods: u32,
    tag: &str,
) -> Result<Upkeep> {
    let period = TTL / 3;
    let window = period * periods;
    let locker = Arc::new(subject.locker("bench-upkeep").await?);
    let idle = match counter {
        Some(counter) => {
            // What came before (an earlier run's releases) is counted first.
            tokio::time::sleep(counter.settle()).await;
            Some(count_over(counter, window).await?)
        }
        None => None,
    };
    let before = alloc::live_bytes();
    let started = Instant::now();
    let options = LockOptions::new().ttl(TTL);
    let guards: Vec<LockGuard> = futures::stream::iter(0..held)
        .map(|i| {
            let (locker, options) = (Arc::clone(&locker), options.clone());
            let name = format!("p6-{tag}-{i}");
            async move { locker.try_acquire_with(name.as_str(), &options).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|r| {
            r.map_err(Into::into)
                .and_then(|g| g.ok_or_else(|| "a P6 lock was busy".into()))
        })
        .collect::<Result<_>>()?;
    let acquire_seconds = started.elapsed().as_secs_f64();
    let heap = (alloc::live_bytes() - before) as f64 / held as f64;
    // Let the renewal grid settle and the server count the acquires, then
    // count.
    tokio::time::sleep(period.max(counter.map_or(Duration::ZERO, Counter::settle))).await;
    let busy = match counter {
        Some(counter) => Some(count_over(counter, window).await?),
        None => {
            tokio::time::sleep(window).await;
            None
        }
    };
    let lost = guards.iter().filter(|g| g.is_lost()).count();
    futures::stream::iter(guards)
        .for_each_concurrent(16, |guard| async move {
            let _ = guard.release().await;
        })
        .await;
    Ok(Upkeep {
        held,
        acquire_seconds,
        periods,
        requests_per_period: busy.map(|b| b / f64::from(periods)),
        idle_requests_per_period: idle.map(|i| i / f64::from(periods)),
        heap_bytes_per_lock: heap,
        lost,
    })
}

/// Requests the server counted during `window`, less what one read of
/// the counter itself costs (measured by two reads back to back).
async fn count_over(counter: &Counter, window: Duration) -> Result<f64> {
    let zero = counter.read().await?;
    let first = counter.read().await?;
    let own = first - zero;
    tokio::time::sleep(window).await;
    let second = counter.read().await?;
    Ok((second - first - own).max(0.0))
}
