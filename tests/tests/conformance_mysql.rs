//! The conformance kit against a private MariaDB server.
#![cfg(feature = "mysql")]

use lockkit_tests::sql_harness::{SqlHarness, SqlKind};

lockkit_core::conformance_suite! {
    harness: SqlHarness::start(SqlKind::MySql).await,
    except: [
        fifo_order => "unsupported on MySQL rows: waiters poll and race; there is no queue of waiters",
        permits_fifo_order => "MySQL rows have no queue of waiters: waiters poll and race",
    ],
}
