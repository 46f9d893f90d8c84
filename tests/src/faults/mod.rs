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

/// Stamps one `#[tokio::test]` per line, each setting a fixture up,
/// running a scenario on it and [`record`](report::record)ing the outcome:
///
/// ```ignore
/// lockkit_tests::fault_tests! {
///     holder_paused: shared().await => |t| scenario::holder_paused(&t);
///     server_paused: private().await => |(t, mut server)| scenario::server_paused(&t, &mut server);
/// }
/// ```
#[macro_export]
macro_rules! fault_tests {
    ($($name:ident: $setup:expr => |$fixture:pat_param| $run:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            #[allow(unused_mut)]
            let $fixture = $setup;
            $crate::faults::report::record(&$run.await);
        }
    )*};
}
