//! The conformance kit against a private Postgres server.
#![cfg(feature = "postgres")]

use lockkit_tests::sql_harness::{SqlHarness, SqlKind};

lockkit_core::conformance_suite! {
    harness: SqlHarness::start(SqlKind::Postgres).await,
}
