//! The scenarios P1–P6. Every contended run counts overlapping holders and
//! checks that fencing tokens increase strictly in grant order.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::stats::{Percentiles, jain};
use crate::subject::{Client, Result, Subject};

/// Wait bound of every contended acquire.
pub const WAIT: Duration = Duration::from_secs(5);

/// P1: `iterations` uncontended acquire+release pairs of each subject,
/// interleaved in rounds so that machine noise hits all alike. Each
/// subject has a lock name of its own; a subject that fails (an error, or
/// its own previous release not yet visible) drops out with its error
/// while the others go on.
pub async fn uncontended(
    subjects: &[Arc<dyn Subject>],
    iterations: usize,
    tag: &str,
) -> Result<Vec<std::result::Result<Percentiles, String>>> {
    let mut clients = Vec::new();
    for subject in subjects {
        clients.push(subject.client().await?);
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(iterations); subjects.len()];
    let mut failed: Vec<Option<String>> = vec![None; subjects.len()];
    let round = 50.min(iterations).max(1);
    let locks: Vec<String> = (0..subjects.len())
        .map(|i| format!("p1-{tag}-{i}"))
        .collect();
    // The first round warms up (connections, prepared statements, script
    // caches) and is not recorded.
    let mut done = 0;
    let mut warm = false;
    while done < iterations {
        for (i, client) in clients.iter().enumerate() {
            if failed[i].is_some() {
                continue;
            }
            for _ in 0..round {
                match pair(client.as_ref(), &locks[i]).await {
                    Ok(took) if warm => samples[i].push(took),
                    Ok(_) => {}
                    Err(e) => {
                        failed[i] = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        if warm {
            done += round;
        }
        warm = true;
    }
    Ok(samples
        .iter()
        .zip(failed)
        .map(|(s, failed)| match failed {
            Some(e) => Err(e),
            None => Ok(Percentiles::of(s)),
        })
        .collect())
}

async fn pair(client: &dyn Client, lock: &str) -> Result<Duration> {
    let start = Instant::now();
    let grant = client
        .acquire(lock, Duration::ZERO)
        .await?
        .ok_or("an uncontended acquire found the lock held")?;
    grant.held.release().await?;
    Ok(start.elapsed())
}

/// One grant as the contention runner saw it.
#[derive(Debug, Clone, Copy)]
struct GrantRecord {
    who: usize,
    requested: Instant,
    granted: Instant,
    /// When the holder started its release.
    released: Option<Instant>,
    token: Option<u64>,
}

/// The outcome of one contended run.
#[derive(Debug, Clone, Serialize)]
pub struct Contention {
    /// Contenders.
    pub contenders: usize,
    /// Hold time per grant (µs).
    pub hold_us: u64,
    /// Length of the run (s).
    pub seconds: f64,
    /// Grants in all.
    pub grants: usize,
    /// Grants per second.
    pub grants_per_s: f64,
    /// Release → a *different* contender's acquire returns.
    pub cross_handoff: Percentiles,
    /// Share of handoffs back to the releaser.
    pub self_regrant: f64,
    /// From the acquire call to its grant.
    pub wait: Percentiles,
    /// [`wait`](Self::wait) of the grants that followed another
    /// contender's: what a waiter waits for a lock someone else holds
    /// (self-regrants, which barely wait, left out).
    pub waiter_wait: Percentiles,
    /// Acquires that ran out of [`WAIT`].
    pub timeouts: u64,
    /// Errors from acquire or release (the first one in `first_error`).
    pub errors: u64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// Grants that began while another holder held the lock.
    pub overlaps: u64,
    /// Grants whose token was not larger than the previous grant's.
    pub token_violations: u64,
    /// Grants per contender.
    pub per_contender: Vec<u64>,
    /// Jain's index over `per_contender`.
    pub jain: f64,
    /// Cross-handoff samples (µs), sorted, for the CDF chart.
    #[serde(skip)]
    pub cross_samples: Vec<f64>,
}

/// P2–P4 and P7: `contenders` clients loop acquire → hold `hold` →
/// release on one lock for `duration`. `capacity` is how many may hold it
/// at once (1 for a lock, N for a semaphore of N permits): a grant while
/// `capacity` others hold counts as an overlap. With a capacity above 1,
/// grants may be logged out of token order (replies race), so tokens are
/// checked for reuse instead of order.
pub async fn contend(
    subject: &Arc<dyn Subject>,
    contenders: usize,
    hold: Duration,
    duration: Duration,
    lock: &str,
    capacity: usize,
) -> Result<Contention> {
    let mut clients = Vec::with_capacity(contenders);
    for _ in 0..contenders {
        clients.push(subject.client().await?);
    }
    warm_up(&clients, lock).await?;
    let holders = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicU64::new(0));
    let timeouts = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let log: Arc<Mutex<Vec<GrantRecord>>> = Arc::new(Mutex::new(Vec::with_capacity(1 << 16)));
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for (who, client) in clients.into_iter().enumerate() {
        let (holders, overlaps, timeouts, errors, first_error, log) = (
            holders.clone(),
            overlaps.clone(),
            timeouts.clone(),
            errors.clone(),
            first_error.clone(),
            log.clone(),
        );
        let lock = lock.to_owned();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let requested = Instant::now();
                let grant = match client.acquire(&lock, WAIT).await {
                    Ok(Some(grant)) => grant,
                    Ok(None) => {
                        timeouts.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert_with(|| e.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let granted = Instant::now();
                if holders.fetch_add(1, Ordering::SeqCst) >= capacity {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                let index = {
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.push(GrantRecord {
                        who,
                        requested,
                        granted,
                        released: None,
                        token: grant.token,
                    });
                    log.len() - 1
                };
                if hold.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(hold).await;
                }
                holders.fetch_sub(1, Ordering::SeqCst);
                let released = Instant::now();
                log.lock().unwrap_or_else(|e| e.into_inner())[index].released = Some(released);
                if let Err(e) = grant.held.release().await {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert_with(|| e.to_string());
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let log = std::mem::take(&mut *log.lock().unwrap_or_else(|e| e.into_inner()));
    let mut per_contender = vec![0u64; contenders];
    let mut waits = Vec::with_capacity(log.len());
    let mut waiter_waits = Vec::with_capacity(log.len());
    let mut cross = Vec::new();
    let (mut pairs, mut selfs, mut token_violations) = (0usize, 0usize, 0u64);
    for (i, record) in log.iter().enumerate() {
        per_contender[record.who] += 1;
        waits.push(record.granted.saturating_duration_since(record.requested));
        if i == 0 {
            continue;
        }
        let before = &log[i - 1];
        if capacity == 1
            && let (Some(previous), Some(token)) = (before.token, record.token)
            && token <= previous
        {
            token_violations += 1;
        }
        pairs += 1;
        if before.who == record.who {
            selfs += 1;
        } else {
            waiter_waits.push(record.granted.saturating_duration_since(record.requested));
            if let Some(released) = before.released {
                cross.push(record.granted.saturating_duration_since(released));
            }
        }
    }
    if capacity > 1 {
        let mut seen = std::collections::HashSet::new();
        token_violations = log
            .iter()
            .filter_map(|r| r.token)
            .filter(|t| !seen.insert(*t))
            .count() as u64;
    }
    let mut cross_samples: Vec<f64> = cross.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    cross_samples.sort_by(f64::total_cmp);
    Ok(Contention {
        contenders,
        hold_us: hold.as_micros() as u64,
        seconds,
        grants: log.len(),
        grants_per_s: log.len() as f64 / seconds,
        cross_handoff: Percentiles::of(&cross),
        self_regrant: if pairs == 0 {
            0.0
        } else {
            selfs as f64 / pairs as f64
        },
        wait: Percentiles::of(&waits),
        waiter_wait: Percentiles::of(&waiter_waits),
        timeouts: timeouts.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        first_error: first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        overlaps: overlaps.load(Ordering::SeqCst),
        token_violations,
        jain: jain(&per_contender),
        per_contender,
        cross_samples,
    })
}

/// Every client takes `lock` once, all at once, before the clock starts:
/// connections, push listeners and prepared statements are set up outside
/// the measured run (a first acquire of lockkit Postgres, for one, opens
/// its `LISTEN` connection and waited ~100 ms more than the steady state).
async fn warm_up(clients: &[Box<dyn Client>], lock: &str) -> Result<()> {
    let rounds = clients.iter().map(|client| async move {
        if let Some(grant) = client.acquire(lock, WAIT).await? {
            grant.held.release().await?;
        }
        Result::Ok(())
    });
    for result in futures::future::join_all(rounds).await {
        result?;
    }
    Ok(())
}

/// P5: `tasks` clients, each on a lock of its own, loop acquire+release
/// for `duration`; grants per second over all.
pub async fn scale_out(
    subject: &Arc<dyn Subject>,
    tasks: usize,
    duration: Duration,
    tag: &str,
) -> Result<f64> {
    let mut clients = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        clients.push(subject.client().await?);
    }
    let grants = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + duration;
    let mut handles = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let grants = grants.clone();
        let lock = format!("p5-{tag}-{tasks}-{i}");
        handles.push(tokio::spawn(async move {
            while Instant::now() < end {
                pair(client.as_ref(), &lock).await?;
                grants.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), crate::subject::BoxError>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(grants.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}
