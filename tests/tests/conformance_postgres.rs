//! The conformance kit against a private Postgres server.
#![cfg(feature = "postgres")]

use lockkit_tests::sql_harness::{SqlHarness, SqlKind};

lockkit_core::conformance_suite! {
    harness: SqlHarness::start(SqlKind::Postgres).await,
    except: [
        fifo_order => "unsupported on Postgres rows: waiters are woken by NOTIFY and race; there is no queue of waiters",
    ],
}
