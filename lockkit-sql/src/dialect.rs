//! What differs between SQL databases, isolated in one small trait.
//!
//! A dialect supplies the statement texts (with its placeholders, quoting
//! and clock expression), the order in which the generic backend binds
//! values to them, the schema, and which error codes are transient. The
//! backend in [`crate::backend`] is written once for all dialects.

use std::sync::Arc;
use std::time::Duration;

use lockkit_core::Capabilities;
use lockkit_core::wait::PollPolicy;

use crate::table::TableName;

/// A value the backend binds to a statement placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// The lock name (text).
    Name,
    /// The owner label (text).
    Owner,
    /// The lease id (text).
    LeaseId,
    /// The TTL in milliseconds (integer).
    TtlMillis,
}

/// One statement and the values it takes, in placeholder order.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The SQL text (table names already quoted in).
    pub sql: Arc<str>,
    /// What to bind, in order (a dialect with positional `?` placeholders
    /// repeats a value where it is used twice).
    pub params: &'static [Param],
}

impl Statement {
    /// A statement from its text and parameters.
    pub fn new(sql: String, params: &'static [Param]) -> Self {
        Self {
            sql: sql.into(),
            params,
        }
    }
}

/// The statements of the row-lease recipe (DESIGN §3).
///
/// Row-returning statements return, in this column order:
/// - `acquire`: `fence` (integer); no row when the lock is held.
/// - `extend`: `expires_at` in ms; no row when the lease is not held.
/// - `release`, `force_release`: one integer per deleted row, 1 if it was
///   unexpired by the database clock, 0 otherwise.
/// - `current`, `list`: `lock_name, owner_id, lease_id, fence, created_at,
///   expires_at` with times in milliseconds since the Unix epoch, only rows
///   unexpired by the database clock.
/// - `cleanup`: no rows; the affected-row count is the result.
#[derive(Debug, Clone)]
pub struct Statements {
    /// Insert, or take over a row expired by the database clock.
    pub acquire: Statement,
    /// Move `expires_at` of an unexpired row matching name and lease id.
    pub extend: Statement,
    /// Delete the row matching name and lease id.
    pub release: Statement,
    /// The unexpired row of one name.
    pub current: Statement,
    /// Every unexpired row.
    pub list: Statement,
    /// Delete the row of one name, whoever holds it.
    pub force_release: Statement,
    /// Delete expired rows.
    pub cleanup: Statement,
}

/// One SQL database flavour.
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx driver.
    type Db: sqlx::Database;

    /// The backend kind for metrics and errors (`"sqlite"`, `"postgres"`, …).
    const KIND: &'static str;

    /// The statements for `table`.
    fn statements(table: &TableName) -> Statements;

    /// Idempotent DDL creating the table and its companions.
    fn schema(table: &TableName) -> Vec<String>;

    /// Whether a database error code means "try again" (busy, deadlock,
    /// serialization failure, connection lost).
    fn is_transient_code(code: &str) -> bool;

    /// The number of rows a statement affected.
    fn rows_affected(result: &<Self::Db as sqlx::Database>::QueryResult) -> u64;

    /// What the dialect can do.
    fn capabilities() -> Capabilities {
        Capabilities {
            fifo: false,
            push_wakeup: false,
            durable_tokens: true,
            ttl_granularity: Duration::from_millis(1),
            expiry_slack: Duration::from_millis(20),
        }
    }

    /// How waiters poll by default.
    fn poll_policy() -> PollPolicy {
        PollPolicy::new(Duration::from_millis(5), Duration::from_millis(250))
    }
}
