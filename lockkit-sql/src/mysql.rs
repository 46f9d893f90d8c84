//! MySQL 8 and MariaDB 10.6+ (feature `mysql`).
//!
//! - Times are `DATETIME(6)` in UTC from the server's `UTC_TIMESTAMP(6)`
//!   (stable within a statement, independent of session time zones, no
//!   2038 limit) — never from the client.
//! - Lock names are `VARBINARY(255)`: byte-exact and without the trailing
//!   space padding of MySQL's `PAD SPACE` collations, under which `node_b`
//!   and `node_b ` would be one lock.
//! - Acquire first reads the live row (`lease_id, fence`). Held by someone
//!   else: refused, **without any write or row lock**. Held by this very
//!   lease id (a retry after a lost reply): renewed, same token. Free: one
//!   transaction of two statements — the name's counter in `<table>_fence`
//!   is incremented (`LAST_INSERT_ID(fence + 1)`, its row lock held until
//!   commit, so acquirers of one name serialise and tokens rise in commit
//!   order), then an `INSERT … ON DUPLICATE KEY UPDATE` whose assignments
//!   only change an expired row grants with that value and reports it
//!   through `LAST_INSERT_ID(expr)` in the OK packet — 0 when someone got
//!   in first (MySQL has no `RETURNING` on upserts). A single statement
//!   reading a high-water mark would read a snapshot that can miss a
//!   release committed meanwhile and hand out a token twice. The
//!   transaction goes to the server as **one batch** (`START TRANSACTION;
//!   …; …; COMMIT` in one text-protocol request, values inlined as hex
//!   literals, which need no escaping): a free lock costs two round trips
//!   (the read and the batch) instead of five, a held one one. A batch that
//!   fails part-way, or whose future is dropped, closes its connection
//!   rather than keep it with a transaction open (the server rolls it
//!   back).
//! - Extend, release and force-release report matched rows (sqlx connects
//!   with `CLIENT_FOUND_ROWS`). Release deletes the row with this lease id
//!   and returns `true` if one was found; unlike SQLite and Postgres it
//!   cannot tell "expired but still ours" from "live" — harmless, because
//!   a row still carrying our lease id means nobody else was granted the
//!   lock in between.
//! - No notifications: waiters poll, jittered, from 5 ms up to 250 ms.
//!
//! ## Schema for DBAs
//!
//! With `create_schema: false`, create (replacing `locks` by your table):
//!
//! ```sql
//! CREATE TABLE locks (
//!   lock_name  VARBINARY(255) NOT NULL PRIMARY KEY,
//!   owner_id   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
//!   lease_id   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
//!   fence      BIGINT NOT NULL,
//!   created_at DATETIME(6) NOT NULL,  -- UTC
//!   expires_at DATETIME(6) NOT NULL,  -- UTC
//!   KEY locks_expires_at (expires_at)
//! ) ENGINE=InnoDB;
//! CREATE TABLE locks_fence (lock_name VARBINARY(255) NOT NULL PRIMARY KEY, fence BIGINT NOT NULL) ENGINE=InnoDB;
//! ```

use std::fmt::Write as _;

use futures::TryStreamExt as _;
use lockkit_core::Result;
use sqlx::mysql::MySqlQueryResult;
use sqlx::{AssertSqlSafe, MySql};

use crate::backend::{SqlBackend, SqlOptions};
use crate::connect::{server_pool, server_url};
use crate::dialect::{
    Dialect, GrantFuture, Outcome, Param, Schema, SchemaStep, Statement, Statements, Value,
};
use crate::error::classify;
use crate::table::TableName;
#[cfg(doc)]
use lockkit_core::Error;

/// The URL schemes of the MySQL / MariaDB dialect.
pub const URL_SCHEMES: &[&str] = &["mysql", "mariadb"];

/// The MySQL / MariaDB dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct MySqlDialect;

/// A lock table in a MySQL or MariaDB database.
pub type MySqlBackend = SqlBackend<MySqlDialect>;

const NOW: &str = "UTC_TIMESTAMP(6)";

/// Milliseconds since the Unix epoch of a UTC `DATETIME(6)` column.
fn millis(column: &str) -> String {
    format!("CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {column}) DIV 1000 AS SIGNED)")
}

impl Dialect for MySqlDialect {
    type Db = MySql;
    const KIND: &'static str = "mysql";
    const SCHEMES: &'static [&'static str] = URL_SCHEMES;
    /// What sqlx 0.9 reads from a MySQL URL.
    const DRIVER_PARAMS: &'static [&'static str] = &[
        "sslmode",
        "ssl-mode",
        "sslca",
        "ssl-ca",
        "charset",
        "collation",
        "sslcert",
        "ssl-cert",
        "sslkey",
        "ssl-key",
        "statement-cache-capacity",
        "socket",
        "timezone",
        "time-zone",
    ];

    fn statements(table: &TableName) -> Statements {
        let t = table.quoted("", '`');
        let f = table.quoted("_fence", '`');
        let columns = format!(
            "CONVERT(lock_name USING utf8mb4), owner_id, lease_id, fence, {}, {}",
            millis("created_at"),
            millis("expires_at")
        );
        // Every assignment tests the *old* expires_at, so it must come last.
        let expired = "expires_at <= VALUES(created_at)";
        Statements {
            // Refused attempts stop at this read: no write, no row lock.
            precheck: Some(Statement::rows(
                format!(
                    "SELECT lease_id, fence FROM {t} WHERE lock_name = ? AND expires_at > {NOW}"
                ),
                &[Param::Name],
            )),
            fence_counter: Some(Statement::affected(
                format!(
                    "INSERT INTO {f} (lock_name, fence) VALUES (?, LAST_INSERT_ID(1)) \
                     ON DUPLICATE KEY UPDATE fence = LAST_INSERT_ID(fence + 1)"
                ),
                &[Param::Name],
            )),
            acquire: Statement::new(
                format!(
                    "INSERT INTO {t} (lock_name, owner_id, lease_id, fence, created_at, expires_at) \
                     VALUES (?, ?, ?, LAST_INSERT_ID(LAST_INSERT_ID()), {NOW}, {NOW} + INTERVAL (? * 1000) MICROSECOND) \
                     ON DUPLICATE KEY UPDATE \
                       owner_id = IF({expired}, VALUES(owner_id), owner_id), \
                       lease_id = IF({expired}, VALUES(lease_id), lease_id), \
                       fence = IF({expired}, LAST_INSERT_ID(VALUES(fence)), fence + LAST_INSERT_ID(0)), \
                       created_at = IF({expired}, VALUES(created_at), created_at), \
                       expires_at = IF({expired}, VALUES(expires_at), expires_at)"
                ),
                &[Param::Name, Param::Owner, Param::LeaseId, Param::TtlMillis],
                Outcome::LastInsertId,
            ),
            extend: Statement::affected(
                format!(
                    "UPDATE {t} SET expires_at = {NOW} + INTERVAL (? * 1000) MICROSECOND \
                     WHERE lock_name = ? AND lease_id = ? AND expires_at > {NOW}"
                ),
                &[Param::TtlMillis, Param::Name, Param::LeaseId],
            ),
            release: Statement::affected(
                format!("DELETE FROM {t} WHERE lock_name = ? AND lease_id = ?"),
                &[Param::Name, Param::LeaseId],
            ),
            current: Statement::rows(
                format!("SELECT {columns} FROM {t} WHERE lock_name = ? AND expires_at > {NOW}"),
                &[Param::Name],
            ),
            list: Statement::rows(
                format!("SELECT {columns} FROM {t} WHERE expires_at > {NOW}"),
                &[],
            ),
            force_release: Statement::affected(
                format!("DELETE FROM {t} WHERE lock_name = ?"),
                &[Param::Name],
            ),
            cleanup: Statement::affected(format!("DELETE FROM {t} WHERE expires_at <= {NOW}"), &[]),
            queue: None,
        }
    }

    fn schema(table: &TableName) -> Schema {
        let t = table.quoted("", '`');
        let f = table.quoted("_fence", '`');
        let index = table.quoted_bare("_expires_at", '`');
        let mut statements = Vec::new();
        if let Some(schema) = table.schema() {
            statements.push(format!("CREATE DATABASE IF NOT EXISTS `{schema}`"));
        }
        statements.extend([
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                   lock_name  VARBINARY(255) NOT NULL, \
                   owner_id   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
                   lease_id   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
                   fence      BIGINT NOT NULL, \
                   created_at DATETIME(6) NOT NULL, \
                   expires_at DATETIME(6) NOT NULL, \
                   PRIMARY KEY (lock_name), \
                   KEY {index} (expires_at)\
                 ) ENGINE=InnoDB"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {f} (\
                   lock_name VARBINARY(255) NOT NULL PRIMARY KEY, \
                   fence     BIGINT NOT NULL\
                 ) ENGINE=InnoDB"
            ),
        ]);
        Schema {
            statements: statements.into_iter().map(SchemaStep::from).collect(),
            in_transaction: false,
        }
    }

    fn rows_affected(result: &MySqlQueryResult) -> u64 {
        result.rows_affected()
    }

    fn last_insert_id(result: &MySqlQueryResult) -> u64 {
        result.last_insert_id()
    }

    fn is_transient_code(sqlstate: &str) -> bool {
        // Deadlock / serialization failure (1213), connection errors, a
        // query killed by KILL QUERY (70100), server shutting down.
        sqlstate == "40001" || sqlstate == "70100" || sqlstate.starts_with("08")
    }

    const HAS_GRANT_BATCH: bool = true;

    /// `START TRANSACTION; <counter>; <acquire>; COMMIT` as one request.
    /// The caller keeps the connection only if the whole batch completed.
    fn grant_batch<'a, 'v>(
        conn: &'a mut sqlx::MySqlConnection,
        counter: &Statement,
        acquire: &Statement,
        value: &dyn Fn(Param) -> Value<'v>,
    ) -> Option<GrantFuture<'a>> {
        let batch = format!(
            "START TRANSACTION; {}; {}; COMMIT",
            inline(counter, value),
            inline(acquire, value)
        );
        Some(Box::pin(async move {
            let doing = "acquiring a lock";
            let results: Vec<MySqlQueryResult> = sqlx::raw_sql(AssertSqlSafe(batch))
                .execute_many(conn)
                .try_collect()
                .await
                .map_err(|e| classify::<Self>(e, doing))?;
            let [_, _, granted, _] = results.as_slice() else {
                return Err(lockkit_core::Error::backend(
                    Self::KIND,
                    format!(
                        "the grant batch returned {} results instead of 4",
                        results.len()
                    ),
                    None,
                ));
            };
            let fence = granted.last_insert_id();
            Ok((fence > 0).then(|| i64::try_from(fence).unwrap_or(i64::MAX)))
        }))
    }

    fn is_configuration_code(sqlstate: &str) -> bool {
        // Access denied (28000), unknown database (42000 with 1049 is also
        // used for syntax errors, so only 28000 is certain).
        sqlstate == "28000"
    }
}

/// `statement` with its `?` placeholders replaced by literals: integers in
/// decimal, text as `_utf8mb4 X'…'` hex literals (no quoting or escaping
/// to get wrong, whatever the bytes). The statement texts have no `?`
/// other than placeholders.
fn inline<'v>(statement: &Statement, value: &dyn Fn(Param) -> Value<'v>) -> String {
    let mut params = statement.params.iter();
    let mut sql = String::with_capacity(statement.sql.len() + 128);
    for piece in statement.sql.split_inclusive('?') {
        match piece.strip_suffix('?') {
            Some(before) => {
                sql.push_str(before);
                match params.next().map(|p| value(*p)) {
                    Some(Value::Int(int)) => {
                        let _ = write!(sql, "{int}");
                    }
                    Some(Value::Text(text)) => {
                        sql.push_str("_utf8mb4 X'");
                        for byte in text.as_bytes() {
                            let _ = write!(sql, "{byte:02X}");
                        }
                        sql.push('\'');
                    }
                    // More placeholders than values: leave it, so the
                    // server reports the statement instead of guessing.
                    None => sql.push('?'),
                }
            }
            None => sql.push_str(piece),
        }
    }
    sql
}

/// Connects to the MySQL or MariaDB database at `url` with the default
/// [`SqlOptions`]: `mysql://user:password@host:3306/database` (or
/// `mariadb://…`).
///
/// Parameters: lockkit's `table=<name>` (it wins over
/// [`SqlOptions::table`]) and sqlx's (`ssl-mode`, `ssl-ca`, `charset`, …,
/// see [`MySqlDialect::DRIVER_PARAMS`]).
///
/// # Errors
/// Before any I/O, [`Error::Configuration`] for a malformed URL or an
/// unknown parameter, [`Error::InvalidInput`] for a bad table name. Then
/// [`Error::Transient`] when the server cannot be reached (with its cause,
/// at once); [`Error::Configuration`] for wrong credentials; backend errors
/// creating the schema. Passwords are never in the message.
pub async fn connect(url: &str) -> Result<MySqlBackend> {
    connect_with(url, SqlOptions::default()).await
}

/// Connects to the MySQL or MariaDB database at `url` with `options`.
///
/// # Errors
/// As [`connect`].
pub async fn connect_with(url: &str, options: SqlOptions) -> Result<MySqlBackend> {
    options.validate()?;
    let url = server_url::<MySqlDialect>(url, "mysql")?;
    let pool = server_pool::<MySqlDialect>(&url, 8).await?;
    MySqlBackend::from_pool(pool, url.apply(options)).await
}
