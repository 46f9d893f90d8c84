//! The conformance kit against SQLite (a database file per test).

use lockkit_tests::sqlite::SqliteHarness;

lockkit_core::conformance_suite! {
    harness: SqliteHarness::start().await,
    except: [
        fifo_order => "unsupported on SQLite: rows have no queue of waiters; they poll and the first to retry after a release wins",
        permits_fifo_order => "SQLite rows have no queue of waiters: waiters poll and race",
    ],
}
