//! The fault suite's tools (`ARCHITECTURE.md` §12): taker processes and
//! their event history, the fenced store, the mutex-model check, and the
//! reliability report.
//!
//! - [`event`]: what a taker reports, stamped on `CLOCK_MONOTONIC`.
//! - [`taker`]: spawning and driving taker processes.
//! - [`store`]: the fenced store (a counter behind a
//!   [`Fence`](lockkit_core::fence::Fence)).
//! - [`history`]: claims, overlaps and token order.
//! - [`report`]: the backend × fault table in `docs/RELIABILITY.md`.
//! - [`scenario`]: the faults, each a plain `pub async fn` run by the
//!   per-backend suites in `tests/tests/faults_*.rs`.

pub mod event;
pub mod history;
pub mod report;
pub mod scenario;
pub mod store;
pub mod taker;
