//! What differs between SQL databases, isolated in one small trait.
//!
//! A dialect supplies the statement texts (with its placeholders, quoting
//! and clock expression), the order in which the generic backend binds
//! values to them, how each statement reports its outcome, the schema,
//! which error codes are transient and, optionally, a push channel for
//! wake-ups. The backend in [`crate::backend`] is written once for all
//! dialects.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use lockkit_core::spi::{PollPolicy, Wakes};
use lockkit_core::{Capabilities, Result};

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
    /// Dialects that keep time on the client ([`Dialect::HOST_CLOCK`]):
    /// the host's boot clock in milliseconds, read just before the
    /// statement is sent (integer; 0 otherwise).
    NowMillis,
    /// With [`Dialect::HOST_CLOCK`]: the boot id the `NowMillis` reading
    /// belongs to (text; empty otherwise).
    BootId,
    /// The client's wall clock in milliseconds since the Unix epoch, read
    /// with `NowMillis` — only for showing times to people (integer).
    WallMillis,
    /// Dialects with a waiter queue ([`Statements::queue`], whose step is [`Statements::grant`]): how long the
    /// attempt's queue entry lives unless refreshed, in milliseconds; 0
    /// for an attempt that must not join the queue (`try_acquire`).
    QueueTtlMillis,
    /// The request's permit count N (integer; 1 for a lock; 0 for
    /// statements that are not about a request).
    Permits,
}

/// A value bound to a [`Param`], for dialects that inline values into a
/// batch of statements (see [`Dialect::grant_batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// A text value.
    Text(&'a str),
    /// An integer value.
    Int(i64),
}

/// How a statement reports its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It returns rows (`RETURNING`, `SELECT`); see [`Statements`] for the
    /// columns of each.
    Rows,
    /// It returns no rows; the affected-row count is the outcome (for
    /// MySQL, which counts matched rows).
    AffectedRows,
}

/// One statement, the values it takes and how it reports its outcome.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The SQL text (table names already quoted in).
    pub sql: Arc<str>,
    /// What to bind, in order (a dialect with positional `?` placeholders
    /// repeats a value where it is used twice).
    pub params: &'static [Param],
    /// How the outcome is read.
    pub outcome: Outcome,
}

impl Statement {
    /// A statement that returns rows.
    pub fn rows(sql: String, params: &'static [Param]) -> Self {
        Self::new(sql, params, Outcome::Rows)
    }

    /// A statement whose outcome is the affected-row count.
    pub fn affected(sql: String, params: &'static [Param]) -> Self {
        Self::new(sql, params, Outcome::AffectedRows)
    }

    /// A statement with an explicit outcome style.
    pub fn new(sql: String, params: &'static [Param], outcome: Outcome) -> Self {
        Self {
            sql: sql.into(),
            params,
            outcome,
        }
    }
}

/// The statements of the row-lease recipe (`ARCHITECTURE.md` §6): one
/// row per held permit, keyed by `(lock_name, lease_id)`.
///
/// With [`Outcome::Rows`], statements return, in this column order:
/// - `precheck`: one row `own_fence, live_others, mismatched_permits,
///   expired`: the fence of this lease id's live row (NULL if none), how
///   many live rows of other lease ids the name has, the permit count of
///   a live row that differs from the request's (NULL if none), and how
///   many expired rows the name has.
/// - the last statement of `grant`: rows `fence, mismatched_permits`. A
///   fence above 0 is a grant (a row of this very lease id — a retry after
///   a lost reply — keeps its fence while it is live: acquire is
///   idempotent per lease id). A `mismatched_permits` above 0 refuses the
///   request with [`lockkit_core::Error::PermitsMismatch`]. A fence of 0
///   (and no mismatch) asks the backend to run the attempt again at once:
///   a holder's row changed while the attempt recorded itself as a waiter
///   (Postgres' `waiters` flag, which decides whether a release
///   notifies), or the lock looked free but was not granted. No row: the
///   name's permits are all held.
/// - `queue.leave`: as `release`, but one row whatever was deleted.
/// - `extend`: any single column; no row when the lease is not held.
/// - `release`, `force_release`: one integer per deleted row, 1 if it was
///   unexpired by the database clock, 0 otherwise.
///
/// `current` and `list` always return rows `lock_name, owner_id, lease_id,
/// fence, created_at, expires_at, permits` with times as integer
/// milliseconds since the Unix epoch, only rows unexpired by the database
/// clock; `cleanup` and `purge` always report affected rows.
#[derive(Debug, Clone)]
pub struct Statements {
    /// For dialects whose grant would write (or lock) even when every
    /// permit is held: a read run first (see above). A live row of this
    /// very lease (a retry after a lost reply) is renewed with `extend` and
    /// its fence returned; a mismatched permit count fails; a full
    /// semaphore refuses the attempt without any write.
    pub precheck: Option<Statement>,
    /// Deletes the expired rows of one name; run after a `precheck` that
    /// saw some, before the grant (dialects whose grant does not purge
    /// them itself).
    pub purge: Option<Statement>,
    /// The grant: statements run in order in one transaction (sent as one
    /// batch with the values inlined where the dialect can, see
    /// [`Dialect::grant_batch`]); the last one returns the rows described
    /// above. With a waiter queue, [`Param::QueueTtlMillis`] above 0 makes
    /// it a waiter's step: granted only within the first free permits of
    /// the queue, else it joins the queue or refreshes its entry.
    pub grant: Vec<Statement>,
    /// Move `expires_at` of an unexpired row matching name and lease id.
    pub extend: Statement,
    /// Delete the row matching name and lease id.
    pub release: Statement,
    /// For dialects whose `release` can only count deleted rows (MySQL):
    /// `release` deletes the row only while it is unexpired, and this one,
    /// run when `release` deleted nothing, deletes the lease's expired row
    /// (the release then reports `false`: other permits may have been
    /// granted past it).
    pub release_expired: Option<Statement>,
    /// The unexpired rows of one name, by fence.
    pub current: Statement,
    /// Every unexpired row.
    pub list: Statement,
    /// Delete every row of one name, whoever holds it.
    pub force_release: Statement,
    /// Delete expired rows (and expired queue entries).
    pub cleanup: Statement,
    /// Dialects with a FIFO queue of waiters (Postgres); `None`: no queue,
    /// waiters poll and race.
    pub queue: Option<QueueStatements>,
}

/// The statements of a waiter queue (see [`Statements`]); a waiter's step
/// is [`Statements::grant`] with [`Param::QueueTtlMillis`] above 0.
#[derive(Debug, Clone)]
pub struct QueueStatements {
    /// Deletes the row of this lease id, if any, and its queue entry, and
    /// wakes the queue when that frees a turn (an abandoned request).
    pub leave: Statement,
}

/// One step of creating or upgrading a lock table.
#[derive(Debug, Clone)]
pub enum SchemaStep {
    /// An idempotent statement (`CREATE … IF NOT EXISTS`).
    Ddl(String),
    /// Statements run only when `probe` (a query returning one integer)
    /// returns 0: upgrading a table an older lockkit created, such as
    /// adding a column.
    Upgrade {
        /// Returns 0 when the upgrade is still needed.
        probe: String,
        /// What the upgrade runs.
        apply: Vec<String>,
    },
}

impl From<String> for SchemaStep {
    fn from(ddl: String) -> Self {
        Self::Ddl(ddl)
    }
}

/// The DDL that creates a lock table, run in order on one connection.
#[derive(Debug, Clone)]
pub struct Schema {
    /// The steps, in order.
    pub statements: Vec<SchemaStep>,
    /// Run them inside one transaction (Postgres: transactional DDL under
    /// an advisory lock, so concurrent starts serialise).
    pub in_transaction: bool,
}

/// A running push listener; dropping it stops the listener.
pub struct ListenerTask(pub tokio::task::JoinHandle<()>);

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for ListenerTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListenerTask")
    }
}

/// Starts a push listener that feeds release messages into [`Wakes`]; the
/// returned future completes once the listener is subscribed, so no hint
/// sent afterwards is missed.
pub type StartListener = Box<
    dyn Fn(Arc<Wakes>) -> Pin<Box<dyn Future<Output = Result<ListenerTask>> + Send>> + Send + Sync,
>;

/// Announces a release to other processes, where the dialect has no
/// in-band notification (SQLite's wake file); called after a delete that
/// removed a lease.
pub type Announcer = Arc<dyn Fn() + Send + Sync>;

/// A dialect's one-statement renewal of many leases: whether each was
/// still held, in order.
pub type BatchFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<bool>>> + Send + 'a>>;

/// A dialect's one-round-trip grant: the rows `fence, mismatched_permits`
/// of the batch's last statement.
pub type GrantFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<(i64, i64)>>> + Send + 'a>>;

/// One SQL database flavour.
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx driver.
    type Db: sqlx::Database;

    /// The backend kind for metrics and errors (`"sqlite"`, `"postgres"`, …).
    const KIND: &'static str;

    /// Whether rows expire by a clock the client binds (the host's boot
    /// clock, [`Param::NowMillis`] with [`Param::BootId`]) instead of the
    /// database server's clock read inside each statement. Only SQLite,
    /// which runs inside the client process, does.
    const HOST_CLOCK: bool = false;

    /// The URL schemes of a server dialect (lower-case); empty for SQLite,
    /// whose URLs are paths.
    const SCHEMES: &'static [&'static str] = &[];

    /// The URL parameters the driver understands; any other parameter
    /// (besides lockkit's `table`) is rejected before connecting.
    const DRIVER_PARAMS: &'static [&'static str] = &[];

    /// The statements for `table`.
    fn statements(table: &TableName) -> Statements;

    /// Idempotent DDL creating the table and its companions.
    fn schema(table: &TableName) -> Schema;

    /// The number of rows a statement affected (MySQL: matched).
    fn rows_affected(result: &<Self::Db as sqlx::Database>::QueryResult) -> u64;

    /// Whether a database error code means "try again" (busy, deadlock,
    /// serialization failure, connection lost).
    fn is_transient_code(code: &str) -> bool;

    /// Whether a database error code means bad credentials or a missing
    /// database (a configuration error, not a backend failure).
    fn is_configuration_code(code: &str) -> bool {
        let _ = code;
        false
    }

    /// One statement renewing many leases on `conn`, if the dialect has
    /// one: it resolves to whether each lease (in order) was still held.
    /// `None` (the default) renews them in one transaction of `extend`s.
    fn extend_many<'a>(
        conn: &'a mut <Self::Db as sqlx::Database>::Connection,
        table: &'a TableName,
        batch: &'a [(lockkit_core::Lease, Duration)],
    ) -> Option<BatchFuture<'a>> {
        let _ = (conn, table, batch);
        None
    }

    /// Whether [`extend_many`](Self::extend_many) returns a statement.
    const HAS_EXTEND_MANY: bool = false;

    /// The grant ([`Statements::grant`], in one transaction) sent as one
    /// batch with the values inlined, if the dialect can: one round trip
    /// instead of one per statement plus `BEGIN` and `COMMIT`. `value`
    /// gives what each [`Param`] is bound to. `None` (the default) runs
    /// the transaction statement by statement.
    fn grant_batch<'a, 'v>(
        conn: &'a mut <Self::Db as sqlx::Database>::Connection,
        statements: &[Statement],
        value: &dyn Fn(Param) -> Value<'v>,
    ) -> Option<GrantFuture<'a>> {
        let _ = (conn, statements, value);
        None
    }

    /// Whether [`grant_batch`](Self::grant_batch) returns a batch.
    const HAS_GRANT_BATCH: bool = false;

    /// A push channel for release hints, if the database has one.
    fn listener(pool: &sqlx::Pool<Self::Db>, table: &TableName) -> Option<StartListener> {
        let _ = (pool, table);
        None
    }

    /// What a release must do besides its statement so that other
    /// processes hear of it (none where the statement notifies itself).
    fn announcer(pool: &sqlx::Pool<Self::Db>, table: &TableName) -> Option<Announcer> {
        let _ = (pool, table);
        None
    }

    /// What the dialect can do.
    fn capabilities() -> Capabilities {
        Capabilities {
            fifo: false,
            push_wakeup: false,
            durable_tokens: true,
            ttl_granularity: Duration::from_millis(1),
            expiry_slack: Duration::from_millis(20),
            max_permits: lockkit_core::MAX_PERMITS,
        }
    }

    /// How waiters poll by default.
    fn poll_policy() -> PollPolicy {
        PollPolicy::new(Duration::from_millis(5), Duration::from_millis(250))
    }
}
