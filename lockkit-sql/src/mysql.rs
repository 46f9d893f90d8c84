//! MySQL 8 and MariaDB 10.6+ (feature `mysql`).
//!
//! - Times are `DATETIME(6)` in UTC from the server's `UTC_TIMESTAMP(6)`
//!   (stable within a statement, independent of session time zones, no
//!   2038 limit) — never from the client.
//! - Lock names are `VARBINARY(255)`: byte-exact and without the trailing
//!   space padding of MySQL's `PAD SPACE` collations, under which `node_b`
//!   and `node_b ` would be one lock.
//! - Acquire first reads the name's live rows (this lease's fence, how
//!   many others hold, a mismatched N, how many rows expired). All N held
//!   by others: refused, **without any write or row lock**. Held by this
//!   very lease id (a retry after a lost reply): renewed, same token. A
//!   live holder with another N: `Error::PermitsMismatch`. When the read
//!   saw expired rows of other leases, they are deleted first (a row whose
//!   renewal is in flight is locked by it: the delete waits, sees it
//!   renewed and keeps it). Then one transaction, at **READ COMMITTED**:
//!   the name's counter in `<table>_fence` is incremented
//!   (`LAST_INSERT_ID(fence + 1)`, its row lock held until commit, so the
//!   name's admissions serialise and tokens rise in commit order); a
//!   locking read (`LOCK IN SHARE MODE`) counts the name's live rows of
//!   other leases and spots another N — under the counter's lock every
//!   earlier grant has committed, and a renewal in flight holds its row's
//!   lock, so the read waits and counts the renewed row; `INSERT … SELECT
//!   … WHERE` that count is below N inserts this lease's row with the
//!   counter's value (taking over its own expired row), and a read-back
//!   of the row with that fence says whether it was granted. READ
//!   COMMITTED takes no gap locks: at InnoDB's default REPEATABLE READ the
//!   count's next-key locks reached the neighbouring name's row and gap,
//!   so grants of new names deadlocked and renewals of neighbouring locks
//!   waited behind grants (benchmark P6: 1668 of 10 000 held locks lost,
//!   34.7 s to take them). A grant the server still rolls back for a
//!   deadlock or serialization failure runs again, up to five times, after
//!   a jittered pause of a few ms. (With binary logging on and
//!   `binlog_format=STATEMENT`, InnoDB refuses writes at READ COMMITTED and
//!   every grant fails with the server's error saying so: use `ROW` or
//!   `MIXED`, the defaults of MySQL 8 and MariaDB.) The
//!   transaction goes to the server as **one batch** (`SET TRANSACTION
//!   ISOLATION LEVEL READ COMMITTED; START TRANSACTION; …; COMMIT` in one
//!   text-protocol request, values inlined as hex
//!   literals, which need no escaping): a free permit costs two round
//!   trips (the read and the batch), a full semaphore one. A batch that
//!   fails part-way, or whose future is dropped, closes its connection
//!   rather than keep it with a transaction open (the server rolls it
//!   back).
//! - Extend, release and force-release report matched rows (sqlx connects
//!   with `CLIENT_FOUND_ROWS`). Release deletes the row with this lease id
//!   while it is unexpired and returns `true` if one was found; when none
//!   was, a second statement deletes the lease's expired row, if any, and
//!   the release returns `false` (MySQL has no `RETURNING` to tell both
//!   apart in one statement; other permits may have been granted past the
//!   expired row).
//! - Renewals due at once go as one request per 500 leases and TTL: an
//!   `UPDATE` of every `(lock_name, lease_id)` pair still live, with the
//!   expiry from one reading of the server's clock, and a `SELECT` of the
//!   rows that now carry it (MySQL's `UPDATE` has no `RETURNING`); see
//!   [`RENEW_CHUNK`].
//! - No notifications: waiters poll, jittered, from 5 ms up to 250 ms.
//!
//! ## Schema for DBAs
//!
//! With `create_schema: false`, create (replacing `locks` by your table):
//!
//! ```sql
//! CREATE TABLE locks (
//!   lock_name  VARBINARY(255) NOT NULL,
//!   owner_id   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
//!   lease_id   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
//!   fence      BIGINT NOT NULL,
//!   created_at DATETIME(6) NOT NULL,  -- UTC
//!   expires_at DATETIME(6) NOT NULL,  -- UTC
//!   permits    INT NOT NULL DEFAULT 1,
//!   PRIMARY KEY (lock_name, lease_id),
//!   KEY locks_expires_at (expires_at)
//! ) ENGINE=InnoDB;
//! CREATE TABLE locks_fence (lock_name VARBINARY(255) NOT NULL PRIMARY KEY, fence BIGINT NOT NULL) ENGINE=InnoDB;
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use futures::TryStreamExt as _;
use lockkit_core::spi::ttl_millis;
use lockkit_core::{Error, Lease, Result};
use sqlx::mysql::MySqlQueryResult;
use sqlx::{AssertSqlSafe, MySql, Row as _};

use crate::backend::{SqlBackend, SqlOptions};
use crate::connect::{server_pool, server_url};
use crate::dialect::{
    BatchFuture, Dialect, GrantFuture, Param, Schema, SchemaStep, Statement, Statements, Value,
};
use crate::error::classify;
use crate::grant_batch::read_grant_rows;
use crate::table::TableName;

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
            "CONVERT(lock_name USING utf8mb4), owner_id, lease_id, fence, {}, {}, CAST(permits AS SIGNED)",
            millis("created_at"),
            millis("expires_at")
        );
        // The live rows of the name held by other lease ids.
        let others =
            format!("FROM {t} WHERE lock_name = ? AND lease_id <> ? AND expires_at > {NOW}");
        Statements {
            // Refused attempts stop at this read: no write, no row lock.
            precheck: Some(Statement::rows(
                format!(
                    "SELECT \
                       (SELECT fence FROM {t} WHERE lock_name = ? AND lease_id = ? AND expires_at > {NOW}), \
                       (SELECT COUNT(*) {others}), \
                       (SELECT CAST(permits AS SIGNED) {others} AND permits <> ? LIMIT 1), \
                       (SELECT COUNT(*) FROM {t} WHERE lock_name = ? AND lease_id <> ? AND expires_at <= {NOW})"
                ),
                &[
                    Param::Name,
                    Param::LeaseId,
                    Param::Name,
                    Param::LeaseId,
                    Param::Name,
                    Param::LeaseId,
                    Param::Permits,
                    Param::Name,
                    Param::LeaseId,
                ],
            )),
            // Expired rows of other lease ids go before the grant, when
            // the precheck saw some (a crashed holder's permit): not inside
            // the grant, whose transaction then locks no range of the
            // table but the name's own rows (fewer gap-lock deadlocks
            // between grants of neighbouring names). A row whose renewal
            // is in flight is locked by it: the delete waits and then sees
            // the renewed row, which stays.
            purge: Some(Statement::affected(
                format!(
                    "DELETE FROM {t} WHERE lock_name = ? AND lease_id <> ? AND expires_at <= {NOW}"
                ),
                &[Param::Name, Param::LeaseId],
            )),
            grant: vec![
                // The name's counter, under its row lock until commit: grants
                // of one name serialise here and get rising tokens in
                // commit order; `LAST_INSERT_ID()` carries the new value to
                // the statements below.
                Statement::affected(
                    format!(
                        "INSERT INTO {f} (lock_name, fence) VALUES (?, LAST_INSERT_ID(1)) \
                         ON DUPLICATE KEY UPDATE fence = LAST_INSERT_ID(fence + 1)"
                    ),
                    &[Param::Name],
                ),
                // The name's live permits of other leases and whether one
                // has another N, by a locking read: under the counter's
                // lock every earlier grant has committed, and a renewal in
                // flight holds its row's lock, so the read waits for it and
                // counts the renewed row as live. (The grant runs at READ
                // COMMITTED, where `INSERT … SELECT` would read without
                // locks and miss that renewal; the locking read takes
                // record locks only, no gap locks.)
                Statement::affected(
                    format!(
                        "SELECT COUNT(*), COALESCE(MAX(permits <> ?), 0) \
                         INTO @lockkit_live, @lockkit_mismatched {others} LOCK IN SHARE MODE"
                    ),
                    &[Param::Permits, Param::Name, Param::LeaseId],
                ),
                // Admission: fewer live permits than N, all of the same N.
                // An expired row of this very lease id is taken over with
                // the new fence (every assignment tests the *old*
                // expires_at, so it comes last).
                Statement::affected(
                    format!(
                        "INSERT INTO {t} (lock_name, lease_id, owner_id, fence, permits, created_at, expires_at) \
                         SELECT ?, ?, ?, LAST_INSERT_ID(), ?, {NOW}, {NOW} + INTERVAL (? * 1000) MICROSECOND FROM DUAL \
                         WHERE @lockkit_live < ? AND @lockkit_mismatched = 0 \
                         ON DUPLICATE KEY UPDATE \
                           owner_id = IF(expires_at > {NOW}, owner_id, VALUES(owner_id)), \
                           permits = IF(expires_at > {NOW}, permits, VALUES(permits)), \
                           fence = IF(expires_at > {NOW}, fence, VALUES(fence)), \
                           created_at = IF(expires_at > {NOW}, created_at, VALUES(created_at)), \
                           expires_at = IF(expires_at > {NOW}, expires_at, VALUES(expires_at))"
                    ),
                    &[
                        Param::Name,
                        Param::LeaseId,
                        Param::Owner,
                        Param::Permits,
                        Param::TtlMillis,
                        Param::Permits,
                    ],
                ),
                // Granted iff our row now carries this transaction's fence.
                Statement::rows(
                    format!(
                        "SELECT fence, CAST(0 AS SIGNED) FROM {t} \
                         WHERE lock_name = ? AND lease_id = ? AND fence = LAST_INSERT_ID()"
                    ),
                    &[Param::Name, Param::LeaseId],
                ),
            ],
            extend: Statement::affected(
                format!(
                    "UPDATE {t} SET expires_at = {NOW} + INTERVAL (? * 1000) MICROSECOND \
                     WHERE lock_name = ? AND lease_id = ? AND expires_at > {NOW}"
                ),
                &[Param::TtlMillis, Param::Name, Param::LeaseId],
            ),
            release: Statement::affected(
                format!(
                    "DELETE FROM {t} WHERE lock_name = ? AND lease_id = ? AND expires_at > {NOW}"
                ),
                &[Param::Name, Param::LeaseId],
            ),
            release_expired: Some(Statement::affected(
                format!("DELETE FROM {t} WHERE lock_name = ? AND lease_id = ?"),
                &[Param::Name, Param::LeaseId],
            )),
            current: Statement::rows(
                format!(
                    "SELECT {columns} FROM {t} WHERE lock_name = ? AND expires_at > {NOW} ORDER BY fence"
                ),
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
            statements.push(SchemaStep::Ddl(format!(
                "CREATE DATABASE IF NOT EXISTS `{schema}`"
            )));
        }
        // Identifiers are validated (`[A-Za-z0-9_]`), so they are safe as
        // string literals too.
        let schema_of = table
            .schema()
            .map_or_else(|| "DATABASE()".to_owned(), |schema| format!("'{schema}'"));
        statements.extend([
            SchemaStep::Ddl(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                   lock_name  VARBINARY(255) NOT NULL, \
                   owner_id   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
                   lease_id   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, \
                   fence      BIGINT NOT NULL, \
                   created_at DATETIME(6) NOT NULL, \
                   expires_at DATETIME(6) NOT NULL, \
                   permits    INT NOT NULL DEFAULT 1, \
                   PRIMARY KEY (lock_name, lease_id), \
                   KEY {index} (expires_at)\
                 ) ENGINE=InnoDB"
            )),
            // Tables from before semaphores: one row per name. Now one row
            // per held permit; the old rows stay as locks of one permit.
            SchemaStep::Upgrade {
                probe: format!(
                    "SELECT COUNT(*) FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = {schema_of} AND TABLE_NAME = '{}' AND COLUMN_NAME = 'permits'",
                    table.table()
                ),
                apply: vec![format!(
                    "ALTER TABLE {t} ADD COLUMN permits INT NOT NULL DEFAULT 1, \
                     DROP PRIMARY KEY, ADD PRIMARY KEY (lock_name, lease_id)"
                )],
            },
            SchemaStep::Ddl(format!(
                "CREATE TABLE IF NOT EXISTS {f} (\
                   lock_name VARBINARY(255) NOT NULL PRIMARY KEY, \
                   fence     BIGINT NOT NULL\
                 ) ENGINE=InnoDB"
            )),
        ]);
        Schema {
            statements,
            in_transaction: false,
        }
    }

    fn rows_affected(result: &MySqlQueryResult) -> u64 {
        result.rows_affected()
    }

    fn is_transient_code(sqlstate: &str) -> bool {
        // Deadlock / serialization failure (1213), connection errors, a
        // query killed by KILL QUERY (70100), server shutting down.
        sqlstate == "40001" || sqlstate == "70100" || sqlstate.starts_with("08")
    }

    /// Renewals due at once go as one request per chunk of
    /// [`RENEW_CHUNK`] leases (see the module docs).
    const HAS_EXTEND_MANY: bool = true;

    fn extend_many<'a>(
        conn: &'a mut sqlx::MySqlConnection,
        table: &'a TableName,
        batch: &'a [(Lease, Duration)],
    ) -> Option<BatchFuture<'a>> {
        Some(Box::pin(async move {
            let mut held = vec![false; batch.len()];
            for (chunk, start) in batch.chunks(RENEW_CHUNK).zip((0..).step_by(RENEW_CHUNK)) {
                // One request per TTL in the chunk (leases of one locker
                // usually share theirs).
                let mut by_ttl: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
                for (i, (_, ttl)) in chunk.iter().enumerate() {
                    by_ttl.entry(ttl_millis(*ttl)).or_default().push(start + i);
                }
                for (ttl_ms, indexes) in by_ttl {
                    renew_chunk(&mut *conn, table, batch, ttl_ms, &indexes, &mut held).await?;
                }
            }
            Ok(held)
        }))
    }

    const HAS_GRANT_BATCH: bool = true;

    /// `SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START
    /// TRANSACTION; <grant statements>; COMMIT` as one request (the level
    /// applies to this transaction only). The caller keeps the connection
    /// only if the whole batch completed.
    fn grant_batch<'a, 'v>(
        conn: &'a mut sqlx::MySqlConnection,
        statements: &[Statement],
        value: &dyn Fn(Param) -> Value<'v>,
    ) -> Option<GrantFuture<'a>> {
        let mut batch =
            String::from("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION");
        for statement in statements {
            batch.push_str("; ");
            batch.push_str(&inline(statement, value));
        }
        batch.push_str("; COMMIT");
        // SET, START TRANSACTION, the statements, COMMIT: a result each;
        // the rows come from the last statement before COMMIT.
        let expected = statements.len() + 3;
        Some(Box::pin(read_grant_rows::<Self>(
            conn,
            batch,
            expected,
            expected - 2,
        )))
    }

    fn is_configuration_code(sqlstate: &str) -> bool {
        // Access denied (28000), unknown database (42000 with 1049 is also
        // used for syntax errors, so only 28000 is certain).
        sqlstate == "28000"
    }
}

/// The most leases one renewal request names (two `IN` lists of
/// `(name, lease id)` pairs, a few hundred bytes each: well inside the
/// default `max_allowed_packet` and MySQL's range optimizer memory).
pub const RENEW_CHUNK: usize = 500;

/// Renews the leases `indexes` of `batch` (all with TTL `ttl_ms`) in one
/// request and marks those still held in `held`:
///
/// ```sql
/// SET @lockkit_renew = UTC_TIMESTAMP(6);
/// UPDATE locks SET expires_at = @lockkit_renew + INTERVAL ttl
///   WHERE (lock_name, lease_id) IN (…) AND expires_at > @lockkit_renew;
/// SELECT lock_name, lease_id FROM locks
///   WHERE (lock_name, lease_id) IN (…) AND expires_at = @lockkit_renew + INTERVAL ttl
/// ```
///
/// A row that carries the new expiry was renewed by this request (a row
/// deleted in between — released, force-released — reads as not held,
/// which is the conservative answer). Each statement is its own
/// transaction; the `UPDATE` finds the rows by the primary key and locks
/// only them.
///
/// # Errors
/// The classified database error; [`Error::Backend`] for a reply of
/// another shape.
async fn renew_chunk(
    conn: &mut sqlx::MySqlConnection,
    table: &TableName,
    batch: &[(Lease, Duration)],
    ttl_ms: i64,
    indexes: &[usize],
    held: &mut [bool],
) -> Result<()> {
    let t = table.quoted("", '`');
    let mut pairs = String::with_capacity(indexes.len() * 96);
    for (n, &i) in indexes.iter().enumerate() {
        let lease = &batch[i].0;
        pairs.push_str(if n == 0 { "(" } else { ", (" });
        hex_text(&mut pairs, lease.name.as_str());
        pairs.push_str(", ");
        hex_text(&mut pairs, lease.lease_id.as_str());
        pairs.push(')');
    }
    let at = "CAST(@lockkit_renew AS DATETIME(6))";
    let expiry = format!("{at} + INTERVAL ({ttl_ms} * 1000) MICROSECOND");
    let request = format!(
        "SET @lockkit_renew = {NOW}; \
         UPDATE {t} SET expires_at = {expiry} \
           WHERE (lock_name, lease_id) IN ({pairs}) AND expires_at > {at}; \
         SELECT lock_name, lease_id FROM {t} \
           WHERE (lock_name, lease_id) IN ({pairs}) AND expires_at = {expiry}"
    );
    let position: HashMap<(&[u8], &str), usize> = indexes
        .iter()
        .map(|&i| {
            let lease = &batch[i].0;
            ((lease.name.as_str().as_bytes(), lease.lease_id.as_str()), i)
        })
        .collect();
    let doing = "renewing leases";
    let mut stream = sqlx::raw_sql(AssertSqlSafe(request)).fetch_many(conn);
    let mut results = 0;
    while let Some(item) = stream
        .try_next()
        .await
        .map_err(|e| classify::<MySqlDialect>(e, doing))?
    {
        match item {
            sqlx::Either::Left(_) => results += 1,
            sqlx::Either::Right(row) => {
                let read = |e| classify::<MySqlDialect>(e, "reading a renewal");
                let name: Vec<u8> = row.try_get(0).map_err(read)?;
                let lease_id: String = row.try_get(1).map_err(read)?;
                if let Some(&i) = position.get(&(name.as_slice(), lease_id.as_str())) {
                    held[i] = true;
                }
            }
        }
    }
    if results != 3 {
        return Err(Error::backend(
            MySqlDialect::KIND,
            format!("the renewal request returned {results} results instead of 3"),
            None,
        ));
    }
    Ok(())
}

/// Appends `text` as a `_utf8mb4 X'…'` hex literal: no quoting or
/// escaping to get wrong, whatever the bytes.
fn hex_text(out: &mut String, text: &str) {
    out.push_str("_utf8mb4 X'");
    for byte in text.as_bytes() {
        let _ = write!(out, "{byte:02X}");
    }
    out.push('\'');
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
                    Some(Value::Text(text)) => hex_text(&mut sql, text),
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
