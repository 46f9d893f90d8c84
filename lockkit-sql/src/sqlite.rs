//! SQLite: the embedded default (feature `sqlite`).
//!
//! - Times are integer milliseconds since the Unix epoch, read from
//!   SQLite's clock (`julianday('now')`, the same value for a whole
//!   statement) — never from the client.
//! - Files are opened in WAL mode with a busy timeout, so several processes
//!   can share one database file; `SQLITE_BUSY` after the timeout is a
//!   transient error that the waiting and renewal loops retry.
//! - `sqlite::memory:` gives a private in-memory database on a single
//!   connection (useful in tests; not shared between processes).
//! - Waiters poll (jittered, 5 ms growing to 250 ms): SQLite has no
//!   notifications between processes.

use std::str::FromStr;
use std::time::Duration;

use lockkit_core::wait::PollPolicy;
use lockkit_core::{Error, Result, redact_url};
use sqlx::Sqlite;
use sqlx::pool::PoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use tokio::time::Instant;

use crate::backend::{SqlBackend, SqlOptions};
use crate::dialect::{Dialect, Param, Schema, Statement, Statements};
use crate::table::TableName;

/// The SQLite dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteDialect;

/// A lock table in a SQLite database.
pub type SqliteBackend = SqlBackend<SqliteDialect>;

/// How long a connection waits for another process's write lock before
/// reporting `SQLITE_BUSY` (a transient error).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The database clock in milliseconds since the Unix epoch.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

impl Dialect for SqliteDialect {
    type Db = Sqlite;
    const KIND: &'static str = "sqlite";

    fn statements(table: &TableName) -> Statements {
        let t = table.quoted("", '"');
        let f = table.quoted("_fence", '"');
        let columns = "lock_name, owner_id, lease_id, fence, created_at, expires_at";
        let live = format!("CASE WHEN expires_at > {NOW_MS} THEN 1 ELSE 0 END");
        Statements {
            // SQLite runs one writing statement at a time and reads the
            // latest data inside it, so the high-water mark read here
            // cannot be stale.
            fence_counter: None,
            // Insert, or take over a row that the database clock says has
            // expired. A new row continues from the name's high-water mark
            // (kept in the fence table when rows are deleted).
            acquire: Statement::rows(
                format!(
                    "INSERT INTO {t} ({columns}) \
                     VALUES (?1, ?2, ?3, COALESCE((SELECT fence FROM {f} WHERE lock_name = ?1), 0) + 1, {NOW_MS}, {NOW_MS} + ?4) \
                     ON CONFLICT (lock_name) DO UPDATE SET \
                       owner_id = excluded.owner_id, lease_id = excluded.lease_id, fence = {t}.fence + 1, \
                       created_at = excluded.created_at, expires_at = excluded.expires_at \
                     WHERE {t}.expires_at <= excluded.created_at \
                     RETURNING fence"
                ),
                &[Param::Name, Param::Owner, Param::LeaseId, Param::TtlMillis],
            ),
            extend: Statement::rows(
                format!(
                    "UPDATE {t} SET expires_at = {NOW_MS} + ?3 \
                     WHERE lock_name = ?1 AND lease_id = ?2 AND expires_at > {NOW_MS} \
                     RETURNING expires_at"
                ),
                &[Param::Name, Param::LeaseId, Param::TtlMillis],
            ),
            release: Statement::rows(
                format!("DELETE FROM {t} WHERE lock_name = ?1 AND lease_id = ?2 RETURNING {live}"),
                &[Param::Name, Param::LeaseId],
            ),
            current: Statement::rows(
                format!("SELECT {columns} FROM {t} WHERE lock_name = ?1 AND expires_at > {NOW_MS}"),
                &[Param::Name],
            ),
            list: Statement::rows(
                format!("SELECT {columns} FROM {t} WHERE expires_at > {NOW_MS}"),
                &[],
            ),
            force_release: Statement::rows(
                format!("DELETE FROM {t} WHERE lock_name = ?1 RETURNING {live}"),
                &[Param::Name],
            ),
            cleanup: Statement::affected(
                format!("DELETE FROM {t} WHERE expires_at <= {NOW_MS}"),
                &[],
            ),
        }
    }

    fn schema(table: &TableName) -> Schema {
        let t = table.quoted("", '"');
        let f = table.quoted("_fence", '"');
        let index = table.quoted_bare("_expires_at", '"');
        let trigger = table.quoted("_keep_fence", '"');
        let statements = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                   lock_name  TEXT    NOT NULL PRIMARY KEY, \
                   owner_id   TEXT    NOT NULL, \
                   lease_id   TEXT    NOT NULL, \
                   fence      INTEGER NOT NULL, \
                   created_at INTEGER NOT NULL, \
                   expires_at INTEGER NOT NULL)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {} (expires_at)",
                table.quoted_bare("", '"')
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {f} (\
                   lock_name TEXT    NOT NULL PRIMARY KEY, \
                   fence     INTEGER NOT NULL)"
            ),
            format!(
                "CREATE TRIGGER IF NOT EXISTS {trigger} AFTER DELETE ON {} BEGIN \
                   INSERT INTO {} (lock_name, fence) VALUES (OLD.lock_name, OLD.fence) \
                   ON CONFLICT (lock_name) DO UPDATE SET fence = MAX(fence, excluded.fence); \
                 END",
                table.quoted_bare("", '"'),
                table.quoted_bare("_fence", '"'),
            ),
        ];
        Schema {
            statements,
            in_transaction: false,
        }
    }

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn is_transient_code(code: &str) -> bool {
        // Primary result codes SQLITE_BUSY (5) and SQLITE_LOCKED (6), also
        // when extended (e.g. 517 SQLITE_BUSY_SNAPSHOT).
        code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
    }
}

/// Opens (creating if needed) the SQLite database at `url` with the default
/// [`SqlOptions`].
///
/// URLs: `sqlite:///absolute/path.db`, `sqlite://relative/path.db`,
/// `sqlite:path.db`, `sqlite::memory:`.
///
/// # Errors
/// [`Error::Configuration`] for a malformed URL (password redacted) or a file
/// that cannot be opened; backend errors creating the schema.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lockkit_core::Result<()> {
/// use lockkit_core::LockBackend;
///
/// let dir = tempfile::tempdir().expect("tempdir");
/// let url = format!("sqlite://{}/locks.db", dir.path().display());
/// let backend = lockkit_sql::sqlite::connect(&url).await?;
/// assert_eq!(backend.kind(), "sqlite");
/// # Ok(())
/// # }
/// ```
pub async fn connect(url: &str) -> Result<SqliteBackend> {
    connect_with(url, SqlOptions::default()).await
}

/// Opens the SQLite database at `url` with `options`.
///
/// # Errors
/// As [`connect`].
pub async fn connect_with(url: &str, options: SqlOptions) -> Result<SqliteBackend> {
    let parsed = SqliteConnectOptions::from_str(url).map_err(|e| Error::Configuration {
        message: format!("invalid SQLite URL {:?}: {e}", redact_url(url)),
        source: Some(Box::new(e)),
    })?;
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let connect = parsed
        .create_if_missing(true)
        .busy_timeout(BUSY_TIMEOUT)
        .journal_mode(if in_memory {
            SqliteJournalMode::Memory
        } else {
            SqliteJournalMode::Wal
        })
        .synchronous(SqliteSynchronous::Normal);
    let pool_options = PoolOptions::<Sqlite>::new()
        // One connection for a private in-memory database, so every query
        // sees the same database; a few for files.
        .max_connections(if in_memory { 1 } else { 4 })
        .acquire_timeout(BUSY_TIMEOUT);
    // Several processes opening a new file at once race to create it and
    // switch it to WAL; the losers see SQLITE_BUSY or a transient I/O error
    // before any busy handler applies. Retry those for a while.
    let give_up = Instant::now() + BUSY_TIMEOUT * 2;
    let mut backoff =
        PollPolicy::new(Duration::from_millis(5), Duration::from_millis(200)).backoff();
    let pool = loop {
        match pool_options.clone().connect_with(connect.clone()).await {
            Ok(pool) => break pool,
            Err(e) if is_contended_open(&e) && Instant::now() < give_up => {
                tracing::debug!(error = %e, "SQLite file busy while opening; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => {
                return Err(Error::Configuration {
                    message: format!("cannot open SQLite database {:?}: {e}", redact_url(url)),
                    source: Some(Box::new(e)),
                });
            }
        }
    };
    SqliteBackend::from_pool(pool, options).await
}

/// Whether opening failed because another process was creating or
/// converting the same file (busy, locked, or an I/O error on a file that
/// is being set up).
fn is_contended_open(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6 | 10)),
        sqlx::Error::PoolTimedOut => true,
        _ => false,
    }
}
