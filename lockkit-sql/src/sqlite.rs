//! SQLite: the embedded default (feature `sqlite`).
//!
//! - **Expiry follows the host's boot clock, not the wall clock.** SQLite
//!   runs inside each client process, so there is no database clock: a
//!   wall clock an hour behind would write rows that are already expired
//!   (two holders at once), one an hour ahead would leave a crashed
//!   holder's row blocking for an hour, and an NTP step would do either to
//!   everyone. Every process on one host shares the kernel's
//!   `CLOCK_BOOTTIME` (it never jumps, and counts suspended time), so each
//!   row stores the boot id and its expiry on that clock
//!   (`boot_id`, `boot_expires_ms`), and a row from another boot is
//!   expired. The reading is taken after the instant the client's own
//!   deadline counts from, so the row always outlives that deadline. See
//!   `host_clock.rs` for the limits: one host only (no network shares),
//!   no `boottime` time-namespace offsets; other systems than Linux fall
//!   back to the wall clock.
//! - `created_at` and `expires_at` are the granting process's wall clock in
//!   milliseconds since the Unix epoch, for people only; `current` and
//!   `list` report `expires_at` converted from the boot clock into the
//!   reader's wall clock.
//! - Files are opened in WAL mode with a busy timeout, so several processes
//!   can share one database file; `SQLITE_BUSY` after the timeout is a
//!   transient error that the waiting and renewal loops retry.
//! - `sqlite::memory:` gives a private in-memory database on a single
//!   connection (useful in tests; not shared between processes).
//! - **Wake-ups between processes**: SQLite has no notifications, so a
//!   release also writes one byte into a *wake file* next to the database
//!   (`<db>-lockkit-wake`, created on first use), and every backend on the
//!   file watches it (inotify, through `notify`): a waiting process hears
//!   of a release within milliseconds. Waiters still poll (jittered, 5 ms
//!   growing to 250 ms) for what the file cannot tell — a lease that
//!   simply expires — and on file systems without change events (network
//!   shares, which SQLite's locking does not support anyway). In-memory
//!   databases have no wake file.
//! - A table created by lockkit 0.1 (wall-clock expiry) is upgraded in
//!   place; its rows count as expired, so stop every process using the
//!   file before upgrading.

use std::str::FromStr;
use std::time::Duration;

use lockkit_core::spi::PollPolicy;
use lockkit_core::{Error, Result};
use sqlx::Sqlite;
use sqlx::pool::PoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use tokio::time::Instant;

use crate::backend::{SqlBackend, SqlOptions};
use crate::connect::sqlite_url;
use crate::dialect::{
    Announcer, Dialect, Param, Schema, SchemaStep, StartListener, Statement, Statements,
};
use crate::table::TableName;

/// The URL scheme of the SQLite dialect (`sqlite:path`, `sqlite:///abs`,
/// `sqlite::memory:`).
pub const URL_SCHEMES: &[&str] = &["sqlite"];

/// The SQLite dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteDialect;

/// A lock table in a SQLite database.
pub type SqliteBackend = SqlBackend<SqliteDialect>;

/// How long a connection waits for another process's write lock before
/// reporting `SQLITE_BUSY` (a transient error).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The wake file of a file-backed pool (`None` for in-memory databases,
/// whose waiters all live in this process and poll one connection).
fn wake_file(pool: &sqlx::Pool<Sqlite>) -> Option<std::path::PathBuf> {
    let options = pool.connect_options();
    let db = options.get_filename();
    let text = db.to_string_lossy();
    if text.is_empty() || text == ":memory:" || text.starts_with("file:") {
        return None;
    }
    Some(crate::wake_file::path_for(db))
}

impl Dialect for SqliteDialect {
    type Db = Sqlite;
    const KIND: &'static str = "sqlite";
    const HOST_CLOCK: bool = true;

    fn statements(table: &TableName) -> Statements {
        let t = table.quoted("", '"');
        let f = table.quoted("_fence", '"');
        // What `current` and `list` return: the expiry shown in the
        // reader's wall clock, converted from the boot clock.
        let columns = "lock_name, owner_id, lease_id, fence, created_at, \
                       ?3 + (boot_expires_ms - ?1), permits";
        // ?1 = boot clock now, ?2 = boot id (in `live` and `expired`).
        let live = "CASE WHEN boot_id = ?2 AND boot_expires_ms > ?1 THEN 1 ELSE 0 END";
        // The grant's parameters: ?1 name, ?2 owner, ?3 lease id, ?4 TTL,
        // ?5 boot clock now, ?6 boot id, ?7 wall clock, ?8 permits.
        const GRANT: &[Param] = &[
            Param::Name,
            Param::Owner,
            Param::LeaseId,
            Param::TtlMillis,
            Param::NowMillis,
            Param::BootId,
            Param::WallMillis,
            Param::Permits,
        ];
        // The name's live permits of other lease ids.
        let others = format!(
            "FROM {t} WHERE lock_name = ?1 AND lease_id <> ?3 AND boot_id = ?6 AND boot_expires_ms > ?5"
        );
        Statements {
            // Refused attempts stop at this read and never take the
            // database's write lock, which every process shares.
            precheck: Some(Statement::rows(
                format!(
                    "SELECT \
                       (SELECT fence FROM {t} WHERE lock_name = ?1 AND lease_id = ?3 \
                          AND boot_id = ?6 AND boot_expires_ms > ?5), \
                       (SELECT COUNT(*) {others}), \
                       (SELECT permits {others} AND permits <> ?8 LIMIT 1), \
                       (SELECT COUNT(*) FROM {t} WHERE lock_name = ?1 AND lease_id <> ?3 \
                          AND (boot_id <> ?6 OR boot_expires_ms <= ?5))"
                ),
                GRANT,
            )),
            // Expired rows of the name, deleted before a grant (their
            // fences go to the high-water mark through the trigger).
            purge: Some(Statement::affected(
                format!(
                    "DELETE FROM {t} WHERE lock_name = ?1 AND lease_id <> ?3 \
                       AND (boot_id <> ?6 OR boot_expires_ms <= ?5)"
                ),
                GRANT,
            )),
            // One statement: SQLite runs one writing statement at a time
            // and reads the latest data inside it (a stale WAL snapshot
            // fails with SQLITE_BUSY_SNAPSHOT, which is retried), so the
            // count of live permits and the high-water mark it reads
            // cannot be stale. A new row's fence is above every row of the
            // name and the high-water mark of deleted ones. A row of this
            // very lease id is renewed, keeping its fence while it is live.
            grant: vec![Statement::rows(
                format!(
                    "INSERT INTO {t} (lock_name, lease_id, owner_id, fence, permits, created_at, expires_at, boot_id, boot_expires_ms) \
                     SELECT ?1, ?3, ?2, \
                       MAX(COALESCE((SELECT MAX(fence) FROM {t} WHERE lock_name = ?1), 0), \
                           COALESCE((SELECT fence FROM {f} WHERE lock_name = ?1), 0)) + 1, \
                       ?8, ?7, ?7 + ?4, ?6, ?5 + ?4 \
                     WHERE (SELECT COUNT(*) {others}) < ?8 \
                       AND NOT EXISTS (SELECT 1 {others} AND permits <> ?8) \
                     ON CONFLICT (lock_name, lease_id) DO UPDATE SET \
                       owner_id = excluded.owner_id, permits = excluded.permits, \
                       fence = CASE WHEN {t}.boot_id = excluded.boot_id AND {t}.boot_expires_ms > ?5 \
                                    THEN {t}.fence ELSE excluded.fence END, \
                       created_at = excluded.created_at, expires_at = excluded.expires_at, \
                       boot_id = excluded.boot_id, boot_expires_ms = excluded.boot_expires_ms \
                     RETURNING fence, 0"
                ),
                GRANT,
            )],
            extend: Statement::rows(
                format!(
                    "UPDATE {t} SET boot_expires_ms = ?4 + ?3, expires_at = ?6 + ?3 \
                     WHERE lock_name = ?1 AND lease_id = ?2 AND boot_id = ?5 AND boot_expires_ms > ?4 \
                     RETURNING boot_expires_ms"
                ),
                &[
                    Param::Name,
                    Param::LeaseId,
                    Param::TtlMillis,
                    Param::NowMillis,
                    Param::BootId,
                    Param::WallMillis,
                ],
            ),
            release: Statement::rows(
                format!("DELETE FROM {t} WHERE lock_name = ?3 AND lease_id = ?4 RETURNING {live}"),
                &[Param::NowMillis, Param::BootId, Param::Name, Param::LeaseId],
            ),
            release_expired: None,
            current: Statement::rows(
                format!(
                    "SELECT {columns} FROM {t} \
                     WHERE lock_name = ?4 AND boot_id = ?2 AND boot_expires_ms > ?1 ORDER BY fence"
                ),
                &[
                    Param::NowMillis,
                    Param::BootId,
                    Param::WallMillis,
                    Param::Name,
                ],
            ),
            list: Statement::rows(
                format!("SELECT {columns} FROM {t} WHERE boot_id = ?2 AND boot_expires_ms > ?1"),
                &[Param::NowMillis, Param::BootId, Param::WallMillis],
            ),
            force_release: Statement::rows(
                format!("DELETE FROM {t} WHERE lock_name = ?3 RETURNING {live}"),
                &[Param::NowMillis, Param::BootId, Param::Name],
            ),
            cleanup: Statement::affected(
                format!("DELETE FROM {t} WHERE boot_id <> ?2 OR boot_expires_ms <= ?1"),
                &[Param::NowMillis, Param::BootId],
            ),
            queue: None,
        }
    }

    fn schema(table: &TableName) -> Schema {
        let t = table.quoted("", '"');
        let f = table.quoted("_fence", '"');
        let bare = table.quoted_bare("", '"');
        let rebuilt = table.quoted("_upgrade", '"');
        let index = table.quoted_bare("_boot_expires", '"');
        let trigger = table.quoted("_keep_fence", '"');
        let has_column = |column: &str| {
            format!(
                "SELECT COUNT(*) FROM pragma_table_info('{}') WHERE name = '{column}'",
                table.table()
            )
        };
        let create = |name: &str| {
            format!(
                "CREATE TABLE {name} (\
                   lock_name       TEXT    NOT NULL, \
                   owner_id        TEXT    NOT NULL, \
                   lease_id        TEXT    NOT NULL, \
                   fence           INTEGER NOT NULL, \
                   created_at      INTEGER NOT NULL, \
                   expires_at      INTEGER NOT NULL, \
                   boot_id         TEXT    NOT NULL DEFAULT '', \
                   boot_expires_ms INTEGER NOT NULL DEFAULT 0, \
                   permits         INTEGER NOT NULL DEFAULT 1, \
                   PRIMARY KEY (lock_name, lease_id))"
            )
        };
        let old_columns = "lock_name, owner_id, lease_id, fence, created_at, expires_at, boot_id, boot_expires_ms";
        let statements = vec![
            SchemaStep::Ddl(create(&format!("IF NOT EXISTS {t}"))),
            // Tables from lockkit 0.1 expired rows by the wall clock; their
            // rows count as written in another boot, i.e. expired.
            SchemaStep::Upgrade {
                probe: has_column("boot_expires_ms"),
                apply: vec![
                    format!("ALTER TABLE {t} ADD COLUMN boot_id TEXT NOT NULL DEFAULT ''"),
                    format!(
                        "ALTER TABLE {t} ADD COLUMN boot_expires_ms INTEGER NOT NULL DEFAULT 0"
                    ),
                ],
            },
            // Tables from before semaphores had one row per name (primary
            // key `lock_name`): rebuilt with one row per permit, keyed by
            // `(lock_name, lease_id)`; the rows move over as locks of one
            // permit. SQLite cannot change a primary key in place.
            SchemaStep::Upgrade {
                probe: has_column("permits"),
                apply: vec![
                    format!("DROP TABLE IF EXISTS {rebuilt}"),
                    create(&rebuilt),
                    format!(
                        "INSERT INTO {rebuilt} ({old_columns}, permits) SELECT {old_columns}, 1 FROM {t}"
                    ),
                    format!("DROP TABLE {t}"),
                    format!("ALTER TABLE {rebuilt} RENAME TO {bare}"),
                ],
            },
            SchemaStep::Ddl(format!(
                "CREATE INDEX IF NOT EXISTS {index} ON {bare} (boot_expires_ms)"
            )),
            SchemaStep::Ddl(format!(
                "CREATE TABLE IF NOT EXISTS {f} (\
                   lock_name TEXT    NOT NULL PRIMARY KEY, \
                   fence     INTEGER NOT NULL)"
            )),
            SchemaStep::Ddl(format!(
                "CREATE TRIGGER IF NOT EXISTS {trigger} AFTER DELETE ON {bare} BEGIN \
                   INSERT INTO {} (lock_name, fence) VALUES (OLD.lock_name, OLD.fence) \
                   ON CONFLICT (lock_name) DO UPDATE SET fence = MAX(fence, excluded.fence); \
                 END",
                table.quoted_bare("_fence", '"'),
            )),
        ];
        Schema {
            statements,
            // One transaction, so processes upgrading an old table at once
            // serialise (the loser's write fails as busy and is retried,
            // then finds the columns in place).
            in_transaction: true,
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

    /// Cross-process wake-ups through the wake file (`wake_file.rs`).
    fn listener(pool: &sqlx::Pool<Sqlite>, _table: &TableName) -> Option<StartListener> {
        wake_file(pool).map(crate::wake_file::listener)
    }

    fn announcer(pool: &sqlx::Pool<Sqlite>, _table: &TableName) -> Option<Announcer> {
        wake_file(pool).map(crate::wake_file::announcer)
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
    options.validate()?;
    let checked = sqlite_url(url)?;
    let options = checked.apply(options);
    let pool = open_checked(&checked).await?;
    SqliteBackend::from_pool(pool, options).await
}

/// Opens the SQLite database at `url` the way the lock backend does (WAL,
/// a busy timeout of [`BUSY_TIMEOUT`], created if missing, a retried open
/// while another process creates the same file) and returns the pool, for
/// tables of other components in the same file (`lockkit-dag`'s catalog).
///
/// `url` must not carry lockkit's `table` parameter: it names the lock
/// table, which this pool does not use.
///
/// # Errors
/// [`Error::Configuration`] for a malformed URL, a `table` parameter, or a
/// file that cannot be opened.
pub async fn open_pool(url: &str) -> Result<sqlx::SqlitePool> {
    let checked = sqlite_url(url)?;
    if checked.table.is_some() {
        return Err(Error::configuration(format!(
            "unknown URL parameter \"table\" in {:?}: it names a lock table, and this database holds none",
            checked.redacted
        )));
    }
    open_checked(&checked).await
}

async fn open_checked(checked: &crate::connect::SqlUrl) -> Result<sqlx::SqlitePool> {
    let url = checked.driver.as_str();
    let parsed = SqliteConnectOptions::from_str(url).map_err(|e| Error::Configuration {
        message: format!("invalid SQLite URL {:?}: {e}", checked.redacted),
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
        .acquire_timeout(BUSY_TIMEOUT)
        // A file connection does not die idle; a ping per statement would
        // only add a trip to the connection's worker thread.
        .test_before_acquire(false);
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
                    message: format!("cannot open SQLite database {:?}: {e}", checked.redacted),
                    source: Some(Box::new(e)),
                });
            }
        }
    };
    Ok(pool)
}

/// The lock library's error for a failed SQLite statement of another
/// component: transient (busy, retry), configuration or backend, by the
/// same rules as the lock statements.
pub fn classify_error(err: sqlx::Error, doing: &str) -> Error {
    crate::error::classify::<SqliteDialect>(err, doing)
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
