//! Instrumentation through the `metrics` facade. No exporter lives here:
//! install one (Prometheus, StatsD, …) in the application or use the CLI's.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `lockkit_acquire_total` | counter | `backend`, `lock`, `outcome` (`acquired`, `busy`, `timeout`, `would_deadlock`, `error`) |
//! | `lockkit_acquire_wait_seconds` | histogram | `backend`, `lock` |
//! | `lockkit_hold_seconds` | histogram | `backend`, `lock` |
//! | `lockkit_extend_total` | counter | `backend`, `lock`, `outcome` (`ok`, `lost`, `error`) |
//! | `lockkit_lost_total` | counter | `backend`, `lock`, `reason` |
//! | `lockkit_held` | gauge | `backend`, `lock` |

use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use crate::error::LostReason;
use crate::name::LockName;

/// Acquire attempts by outcome.
pub const ACQUIRE_TOTAL: &str = "lockkit_acquire_total";
/// Time spent waiting in acquire.
pub const ACQUIRE_WAIT_SECONDS: &str = "lockkit_acquire_wait_seconds";
/// Time a lease was held, recorded at release, drop or loss.
pub const HOLD_SECONDS: &str = "lockkit_hold_seconds";
/// Extensions (renewals) by outcome.
pub const EXTEND_TOTAL: &str = "lockkit_extend_total";
/// Leases lost, by reason.
pub const LOST_TOTAL: &str = "lockkit_lost_total";
/// Leases currently held by this process.
pub const HELD: &str = "lockkit_held";

/// Registers descriptions and units of every lockkit metric with the
/// installed recorder. Call once after installing an exporter.
pub fn describe_metrics() {
    describe_counter!(ACQUIRE_TOTAL, "Lock acquire attempts by outcome");
    describe_histogram!(
        ACQUIRE_WAIT_SECONDS,
        Unit::Seconds,
        "Time spent waiting for a lock"
    );
    describe_histogram!(HOLD_SECONDS, Unit::Seconds, "Time a lease was held");
    describe_counter!(EXTEND_TOTAL, "Lease extensions by outcome");
    describe_counter!(LOST_TOTAL, "Leases lost, by reason");
    describe_gauge!(HELD, "Leases currently held by this process");
}

pub(crate) fn acquire(
    backend: &'static str,
    name: &LockName,
    outcome: &'static str,
    waited: Duration,
) {
    let lock = name.to_string();
    counter!(ACQUIRE_TOTAL, "backend" => backend, "lock" => lock.clone(), "outcome" => outcome)
        .increment(1);
    histogram!(ACQUIRE_WAIT_SECONDS, "backend" => backend, "lock" => lock)
        .record(waited.as_secs_f64());
}

pub(crate) fn held(backend: &'static str, name: &LockName, delta: f64) {
    gauge!(HELD, "backend" => backend, "lock" => name.to_string()).increment(delta);
}

pub(crate) fn hold(backend: &'static str, name: &LockName, held_for: Duration) {
    histogram!(HOLD_SECONDS, "backend" => backend, "lock" => name.to_string())
        .record(held_for.as_secs_f64());
}

pub(crate) fn extend(backend: &'static str, name: &LockName, outcome: &'static str) {
    counter!(EXTEND_TOTAL, "backend" => backend, "lock" => name.to_string(), "outcome" => outcome)
        .increment(1);
}

pub(crate) fn lost(backend: &'static str, name: &LockName, reason: &LostReason) {
    counter!(LOST_TOTAL, "backend" => backend, "lock" => name.to_string(), "reason" => reason.label())
        .increment(1);
}
