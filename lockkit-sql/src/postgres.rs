//! Postgres (feature `postgres`), version 12 or newer.
//!
//! - Times are `TIMESTAMPTZ` set from the server's `now()` (the start of
//!   the statement's transaction; every statement here is its own
//!   transaction), never from the client.
//! - Acquire is one statement of CTEs:
//!   - `live` reads the live row, if any; `head` the first live entry of
//!     the name's **queue of waiters** (`<table>_queue`, ordered by an
//!     identity column). A try that finds the lock held, or finds another
//!     waiter at the head, stops there: **a refused try writes nothing**
//!     (no row lock, no counter increment, no WAL flush).
//!   - `counter` increments the name's counter in `<table>_fence` (its row
//!     lock serialises acquirers of one name until commit), only when the
//!     lock looked free and the queue is empty or headed by this lease;
//!   - `granted` inserts or takes over the row with that value (`INSERT …
//!     ON CONFLICT (lock_name) DO UPDATE … WHERE expires_at <= now() OR
//!     lease_id = $3`), with the `waiters` flag set when others still
//!     queue; `served` then removes this lease's queue entry;
//!   - `again` renews a live row that already carries this lease id — a
//!     retry after a lost reply gets its own grant back (same token)
//!     instead of waiting for itself;
//!   - `joined` (a waiter's step, `Param::QueueTtlMillis` above 0): a
//!     refused waiter joins the queue or refreshes its entry's
//!     `expires_at`; live waiters step at least every third of
//!     [`SqlOptions::queue_entry_ttl`](crate::SqlOptions), so a waiter
//!     that died blocks the queue for at most that long;
//!   - `mark` sets the live row's `waiters` flag when another lease holds
//!     it and the flag is not yet set: the first refused waiter of a
//!     holding writes the row once, later ones do not. When the row
//!     changed between the read and the mark (its holder released it at
//!     that moment), the statement returns a fence of 0 and the backend
//!     tries again at once, so a release that raced the mark is never
//!     waited out. A waiter that saw the lock free but was not granted
//!     (another waiter heads the queue, or won the race) gets 0 too.
//!
//!   Tokens therefore rise strictly per name, in commit order; a gap
//!   appears only when two acquirers race for a free lock. Reading a
//!   high-water mark instead of a counter would be unsafe here: the
//!   statement's snapshot can miss a release that commits while it waits,
//!   and hand out a token twice — the cross-process test caught exactly
//!   that. The queue decides only who may try; exclusion rests on the row.
//! - Release and force-release `NOTIFY` the channel `lockkit_<table>` in
//!   the same statement (delivered at commit), **only when someone waits**
//!   — the statement's snapshot shows a live queue entry, or the row's
//!   `waiters` flag is set (it covers a waiter whose entry commits while
//!   the release runs) — with the payload `<name>\n<lease id of the
//!   queue's head>`: only the head's process wakes, and only the head in
//!   it (`lockkit_core::spi::Wakes`). Without a head in the statement's
//!   snapshot (a waiter that joined at that moment) the payload is
//!   `<name>\n` and the name's queued waiters re-check. A `NOTIFY`
//!   serialises every notifying commit of the whole cluster on one lock
//!   (Postgres' commit of a notification queue entry), so releases nobody
//!   waits for must not send one. An abandoned request (timeout,
//!   cancellation) leaves the queue and, if it was the head of a free
//!   lock, notifies the next one. Waiters of one backend instance share
//!   one `LISTEN` connection, started on the first wait, and still step
//!   again (jittered, up to 500 ms) in case a notification is missed —
//!   after a reconnect of the listener every waiter is woken to re-check.
//! - Schema creation runs in one transaction under
//!   `pg_advisory_xact_lock`, so processes starting at once on an empty
//!   database serialise instead of colliding on the catalog.
//! - Connection loss, serialization failures and deadlocks are transient
//!   errors (renewal retries them until the local deadline); wrong
//!   passwords and missing databases are configuration errors. Passwords
//!   never appear in messages.
//!
//! ## Schema for DBAs
//!
//! With `create_schema: false`, create (replacing `locks` by your table):
//!
//! ```sql
//! CREATE TABLE locks (
//!   lock_name  TEXT        NOT NULL PRIMARY KEY,
//!   owner_id   TEXT        NOT NULL,
//!   lease_id   TEXT        NOT NULL,
//!   fence      BIGINT      NOT NULL,
//!   created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
//!   expires_at TIMESTAMPTZ NOT NULL,
//!   waiters    BOOLEAN     NOT NULL DEFAULT false
//! );
//! CREATE INDEX locks_expires_at ON locks (expires_at);
//! CREATE TABLE locks_fence (lock_name TEXT NOT NULL PRIMARY KEY, fence BIGINT NOT NULL);
//! CREATE TABLE locks_queue (
//!   lock_name  TEXT        NOT NULL,
//!   lease_id   TEXT        NOT NULL,
//!   seq        BIGINT      GENERATED ALWAYS AS IDENTITY,
//!   expires_at TIMESTAMPTZ NOT NULL,
//!   PRIMARY KEY (lock_name, lease_id)
//! );
//! CREATE INDEX locks_queue_order ON locks_queue (lock_name, seq);
//! ```
//!
//! The application's role needs `SELECT, INSERT, UPDATE, DELETE` on the
//! three tables; waiters `LISTEN` on `lockkit_locks`. Tables created by an
//! earlier lockkit get the `waiters` column added at start-up
//! (`ALTER TABLE locks ADD COLUMN waiters BOOLEAN NOT NULL DEFAULT false`
//! with `create_schema: false`) and the queue table created.

use std::sync::Arc;
use std::time::Duration;

use lockkit_core::spi::ttl_millis;
use lockkit_core::spi::{PollPolicy, Wakes};
use lockkit_core::{Capabilities, Error, Lease, Result};
use sqlx::pool::PoolOptions;
use sqlx::postgres::{PgListener, PgQueryResult};
use sqlx::{AssertSqlSafe, Postgres};

use crate::backend::{SqlBackend, SqlOptions};
use crate::connect::{server_pool, server_url};
use crate::dialect::{
    BatchFuture, Dialect, ListenerTask, Param, QueueStatements, Schema, SchemaStep, StartListener,
    Statement, Statements,
};
use crate::error::classify;
use crate::table::TableName;

/// The URL schemes of the Postgres dialect.
pub const URL_SCHEMES: &[&str] = &["postgres", "postgresql"];

/// The Postgres dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresDialect;

/// A lock table in a Postgres database.
pub type PostgresBackend = SqlBackend<PostgresDialect>;

/// Milliseconds since the Unix epoch of a `TIMESTAMPTZ` column.
fn millis(column: &str) -> String {
    format!("floor(extract(epoch FROM {column}) * 1000)::bigint")
}

/// The notification channel of a table (≤ 63 bytes: the table part is at
/// most 48).
pub fn channel(table: &TableName) -> String {
    format!("lockkit_{}", table.table())
}

impl Dialect for PostgresDialect {
    type Db = Postgres;
    const KIND: &'static str = "postgres";
    const SCHEMES: &'static [&'static str] = URL_SCHEMES;
    /// What sqlx 0.9 reads from a Postgres URL.
    const DRIVER_PARAMS: &'static [&'static str] = &[
        "sslmode",
        "ssl-mode",
        "sslrootcert",
        "ssl-root-cert",
        "ssl-ca",
        "sslcert",
        "ssl-cert",
        "sslkey",
        "ssl-key",
        "statement-cache-capacity",
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "password",
        "application_name",
        "options",
    ];

    fn statements(table: &TableName) -> Statements {
        let t = table.quoted("", '"');
        let f = table.quoted("_fence", '"');
        let q = table.quoted("_queue", '"');
        let chan = channel(table);
        let columns = format!(
            "lock_name, owner_id, lease_id, fence, {}, {}",
            millis("created_at"),
            millis("expires_at")
        );
        let ttl = "$4::bigint * interval '1 millisecond'";
        // The payload of a release: the name and the queue's head (empty
        // when the statement's snapshot shows no live entry).
        let head_of = |name: &str, skip: &str| {
            format!(
                "{name} || chr(10) || coalesce((SELECT w.lease_id FROM {q} AS w \
                   WHERE w.lock_name = {name} AND w.expires_at > now(){skip} \
                   ORDER BY w.seq LIMIT 1), '')"
            )
        };
        let release_notify = head_of("gone.lock_name", "");
        // Whether the statement's snapshot shows live waiters in the queue.
        let queued_of = |name: &str, skip: &str| {
            format!(
                "EXISTS (SELECT 1 FROM {q} AS w \
                   WHERE w.lock_name = {name} AND w.expires_at > now(){skip})"
            )
        };
        let release_when = format!("waiters OR {}", queued_of("gone.lock_name", ""));
        Statements {
            // One statement does it all (see the module docs).
            precheck: None,
            fence_counter: None,
            // A try: granted only when the lock is free and nobody queues.
            acquire: Statement::rows(
                format!(
                    "WITH live AS (\
                       SELECT lease_id, waiters FROM {t} WHERE lock_name = $1 AND expires_at > now()), \
                     head AS (\
                       SELECT 1 FROM {q} WHERE lock_name = $1 AND expires_at > now() LIMIT 1), \
                     counter AS (\
                       INSERT INTO {f} AS c (lock_name, fence) \
                       SELECT $1, 1 WHERE NOT EXISTS (SELECT 1 FROM live) \
                         AND NOT EXISTS (SELECT 1 FROM head) \
                       ON CONFLICT (lock_name) DO UPDATE SET fence = c.fence + 1 \
                       RETURNING fence), \
                     granted AS (\
                       INSERT INTO {t} AS l (lock_name, owner_id, lease_id, fence, created_at, expires_at, waiters) \
                       SELECT $1, $2, $3, counter.fence, now(), now() + {ttl}, \
                         false \
                       FROM counter \
                       ON CONFLICT (lock_name) DO UPDATE SET \
                         owner_id = EXCLUDED.owner_id, lease_id = EXCLUDED.lease_id, fence = EXCLUDED.fence, \
                         created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, \
                         waiters = EXCLUDED.waiters \
                       WHERE l.expires_at <= EXCLUDED.created_at OR l.lease_id = EXCLUDED.lease_id \
                       RETURNING l.fence), \
                     again AS (\
                       UPDATE {t} SET expires_at = now() + {ttl} \
                       WHERE lock_name = $1 AND lease_id = $3 \
                         AND EXISTS (SELECT 1 FROM live WHERE lease_id = $3) \
                       RETURNING fence) \
                     SELECT fence FROM granted UNION ALL SELECT fence FROM again"
                ),
                &[Param::Name, Param::Owner, Param::LeaseId, Param::TtlMillis],
            ),
            extend: Statement::rows(
                format!(
                    "UPDATE {t} SET expires_at = now() + $3::bigint * interval '1 millisecond' \
                     WHERE lock_name = $1 AND lease_id = $2 AND expires_at > now() \
                     RETURNING fence"
                ),
                &[Param::Name, Param::LeaseId, Param::TtlMillis],
            ),
            release: Statement::rows(
                format!(
                    "WITH gone AS (DELETE FROM {t} WHERE lock_name = $1 AND lease_id = $2 \
                                   RETURNING lock_name, expires_at > now() AS live, waiters) \
                     SELECT (CASE WHEN live THEN 1 ELSE 0 END)::bigint, \
                       (CASE WHEN {release_when} THEN pg_notify('{chan}', {release_notify})::text END) FROM gone"
                ),
                &[Param::Name, Param::LeaseId],
            ),
            current: Statement::rows(
                format!("SELECT {columns} FROM {t} WHERE lock_name = $1 AND expires_at > now()"),
                &[Param::Name],
            ),
            list: Statement::rows(
                format!("SELECT {columns} FROM {t} WHERE expires_at > now()"),
                &[],
            ),
            force_release: Statement::rows(
                format!(
                    "WITH gone AS (DELETE FROM {t} WHERE lock_name = $1 \
                                   RETURNING lock_name, expires_at > now() AS live, waiters) \
                     SELECT (CASE WHEN live THEN 1 ELSE 0 END)::bigint, \
                       (CASE WHEN {release_when} THEN pg_notify('{chan}', {release_notify})::text END) FROM gone"
                ),
                &[Param::Name],
            ),
            cleanup: Statement::affected(
                format!(
                    "WITH stale AS (DELETE FROM {q} WHERE expires_at <= now()) \
                     DELETE FROM {t} WHERE expires_at <= now()"
                ),
                &[],
            ),
            queue: Some(QueueStatements {
                // A waiter's step: the try above plus joining the queue and
                // marking the row (see the module docs).
                step: Statement::rows(
                    format!(
                        "WITH live AS (\
                           SELECT lease_id, waiters FROM {t} WHERE lock_name = $1 AND expires_at > now()), \
                         head AS (\
                           SELECT lease_id FROM {q} WHERE lock_name = $1 AND expires_at > now() \
                           ORDER BY seq LIMIT 1), \
                         counter AS (\
                           INSERT INTO {f} AS c (lock_name, fence) \
                           SELECT $1, 1 WHERE NOT EXISTS (SELECT 1 FROM live) \
                             AND NOT EXISTS (SELECT 1 FROM head WHERE lease_id <> $3) \
                           ON CONFLICT (lock_name) DO UPDATE SET fence = c.fence + 1 \
                           RETURNING fence), \
                         granted AS (\
                           INSERT INTO {t} AS l (lock_name, owner_id, lease_id, fence, created_at, expires_at, waiters) \
                           SELECT $1, $2, $3, counter.fence, now(), now() + {ttl}, \
                             EXISTS (SELECT 1 FROM {q} WHERE lock_name = $1 AND lease_id <> $3 AND expires_at > now()) \
                           FROM counter \
                           ON CONFLICT (lock_name) DO UPDATE SET \
                             owner_id = EXCLUDED.owner_id, lease_id = EXCLUDED.lease_id, fence = EXCLUDED.fence, \
                             created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, \
                             waiters = EXCLUDED.waiters \
                           WHERE l.expires_at <= EXCLUDED.created_at OR l.lease_id = EXCLUDED.lease_id \
                           RETURNING l.fence), \
                         again AS (\
                           UPDATE {t} SET expires_at = now() + {ttl} \
                           WHERE lock_name = $1 AND lease_id = $3 \
                             AND EXISTS (SELECT 1 FROM live WHERE lease_id = $3) \
                           RETURNING fence), \
                         served AS (\
                           DELETE FROM {q} WHERE lock_name = $1 AND lease_id = $3 \
                             AND EXISTS (SELECT 1 FROM granted UNION ALL SELECT 1 FROM again) \
                           RETURNING 1), \
                         joined AS (\
                           INSERT INTO {q} (lock_name, lease_id, expires_at) \
                           SELECT $1, $3, now() + $5::bigint * interval '1 millisecond' \
                           WHERE $5::bigint > 0 AND NOT EXISTS (SELECT 1 FROM granted) \
                             AND NOT EXISTS (SELECT 1 FROM again) \
                           ON CONFLICT (lock_name, lease_id) DO UPDATE SET expires_at = EXCLUDED.expires_at \
                           RETURNING 1), \
                         mark AS (\
                           UPDATE {t} SET waiters = true \
                           WHERE $5::bigint > 0 AND lock_name = $1 AND lease_id <> $3 \
                             AND expires_at > now() AND NOT waiters \
                             AND EXISTS (SELECT 1 FROM live WHERE lease_id <> $3 AND NOT waiters) \
                           RETURNING 1) \
                         SELECT fence FROM granted UNION ALL SELECT fence FROM again \
                         UNION ALL SELECT 0::bigint FROM live \
                           WHERE $5::bigint > 0 AND lease_id <> $3 AND NOT waiters \
                             AND NOT EXISTS (SELECT 1 FROM mark) \
                         UNION ALL SELECT 0::bigint \
                           WHERE $5::bigint > 0 AND NOT EXISTS (SELECT 1 FROM live) \
                             AND NOT EXISTS (SELECT 1 FROM granted)"
                    ),
                    &[
                        Param::Name,
                        Param::Owner,
                        Param::LeaseId,
                        Param::TtlMillis,
                        Param::QueueTtlMillis,
                    ],
                ),
                leave: Statement::rows(
                    format!(
                        "WITH gone AS (DELETE FROM {t} WHERE lock_name = $1 AND lease_id = $2 \
                                       RETURNING expires_at > now() AS live, waiters), \
                         left_queue AS (DELETE FROM {q} WHERE lock_name = $1 AND lease_id = $2 RETURNING 1), \
                         first AS (SELECT lease_id FROM {q} WHERE lock_name = $1 AND expires_at > now() \
                                   ORDER BY seq LIMIT 1) \
                         SELECT coalesce((SELECT max(CASE WHEN live THEN 1 ELSE 0 END) FROM gone), 0)::bigint, \
                           (CASE WHEN EXISTS (SELECT 1 FROM gone WHERE waiters) \
                                   OR (EXISTS (SELECT 1 FROM gone) AND {queued_others}) \
                                   OR (EXISTS (SELECT 1 FROM left_queue) \
                                       AND EXISTS (SELECT 1 FROM first WHERE lease_id = $2) \
                                       AND NOT EXISTS (SELECT 1 FROM {t} WHERE lock_name = $1 AND expires_at > now())) \
                                 THEN pg_notify('{chan}', {leave_notify}) END)::text",
                        leave_notify = head_of("$1::text", " AND w.lease_id <> $2"),
                        queued_others = queued_of("$1::text", " AND w.lease_id <> $2"),
                    ),
                    &[Param::Name, Param::LeaseId],
                ),
            }),
        }
    }

    fn schema(table: &TableName) -> Schema {
        let t = table.quoted("", '"');
        let f = table.quoted("_fence", '"');
        let index = table.quoted_bare("_expires_at", '"');
        let q = table.quoted("_queue", '"');
        let queue_order = table.quoted_bare("_queue_order", '"');
        let mut statements = vec![format!(
            "SELECT pg_advisory_xact_lock(hashtext('lockkit schema {table}'))"
        )];
        if let Some(schema) = table.schema() {
            statements.push(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""));
        }
        statements.extend([
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                   lock_name  TEXT        NOT NULL PRIMARY KEY, \
                   owner_id   TEXT        NOT NULL, \
                   lease_id   TEXT        NOT NULL, \
                   fence      BIGINT      NOT NULL, \
                   created_at TIMESTAMPTZ NOT NULL DEFAULT now(), \
                   expires_at TIMESTAMPTZ NOT NULL, \
                   waiters    BOOLEAN     NOT NULL DEFAULT false)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {f} (\
                   lock_name TEXT   NOT NULL PRIMARY KEY, \
                   fence     BIGINT NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {q} (\
                   lock_name  TEXT        NOT NULL, \
                   lease_id   TEXT        NOT NULL, \
                   seq        BIGINT      GENERATED ALWAYS AS IDENTITY, \
                   expires_at TIMESTAMPTZ NOT NULL, \
                   PRIMARY KEY (lock_name, lease_id))"
            ),
            format!("CREATE INDEX IF NOT EXISTS {queue_order} ON {q} (lock_name, seq)"),
        ]);
        let mut steps: Vec<SchemaStep> = statements.into_iter().map(SchemaStep::from).collect();
        // Tables from before the `waiters` flag: add it (a probe first, so
        // a start-up on an up-to-date table takes no table lock).
        steps.insert(
            steps.len() - 4,
            SchemaStep::Upgrade {
                probe: format!(
                    "SELECT count(*)::bigint FROM pg_attribute \
                     WHERE attrelid = to_regclass('{t}') AND attname = 'waiters' AND NOT attisdropped"
                ),
                apply: vec![format!(
                    "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS waiters BOOLEAN NOT NULL DEFAULT false"
                )],
            },
        );
        Schema {
            statements: steps,
            in_transaction: true,
        }
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn is_transient_code(code: &str) -> bool {
        code.starts_with("08") // connection exception
            || matches!(
                code,
                "40001" // serialization_failure
                    | "40P01" // deadlock_detected
                    | "55P03" // lock_not_available
                    | "53300" // too_many_connections
                    | "57P01" // admin_shutdown (pg_terminate_backend)
                    | "57P02" // crash_shutdown
                    | "57P03" // cannot_connect_now (starting up)
            )
    }

    fn is_configuration_code(code: &str) -> bool {
        // invalid_authorization_specification, invalid_password,
        // invalid_catalog_name (no such database), insufficient_privilege.
        matches!(code, "28000" | "28P01" | "3D000" | "42501")
    }

    /// One `UPDATE … FROM unnest(…)` for every renewal due at once.
    const HAS_EXTEND_MANY: bool = true;

    fn extend_many<'a>(
        conn: &'a mut sqlx::PgConnection,
        table: &'a TableName,
        batch: &'a [(Lease, Duration)],
    ) -> Option<BatchFuture<'a>> {
        Some(Box::pin(async move {
            let t = table.quoted("", '"');
            let names: Vec<&str> = batch.iter().map(|(l, _)| l.name.as_str()).collect();
            let leases: Vec<&str> = batch.iter().map(|(l, _)| l.lease_id.as_str()).collect();
            let ttls: Vec<i64> = batch.iter().map(|(_, ttl)| ttl_millis(*ttl)).collect();
            let renewed: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
                "UPDATE {t} AS l SET expires_at = now() + v.ttl * interval '1 millisecond' \
                 FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v(name, lease, ttl) \
                 WHERE l.lock_name = v.name AND l.lease_id = v.lease AND l.expires_at > now() \
                 RETURNING l.lock_name, l.lease_id"
            )))
            .bind(names)
            .bind(leases)
            .bind(ttls)
            .fetch_all(conn)
            .await
            .map_err(|e| classify::<PostgresDialect>(e, "renewing leases"))?;
            // A set, not a scan per lease: with 10 000 leases a nested
            // search blocked the runtime thread long enough to push other
            // renewals out of their batch.
            let renewed: std::collections::HashSet<(&str, &str)> = renewed
                .iter()
                .map(|(name, id)| (name.as_str(), id.as_str()))
                .collect();
            Ok(batch
                .iter()
                .map(|(lease, _)| renewed.contains(&(lease.name.as_str(), lease.lease_id.as_str())))
                .collect())
        }))
    }

    fn listener(pool: &sqlx::Pool<Postgres>, table: &TableName) -> Option<StartListener> {
        let pool = pool.clone();
        let channel = channel(table);
        Some(Box::new(move |wakes: Arc<Wakes>| {
            let pool = pool.clone();
            let channel = channel.clone();
            Box::pin(async move {
                // A pool of its own (one connection), so the long-lived
                // LISTEN connection never takes a slot of the work pool.
                let listen_pool = PoolOptions::<Postgres>::new()
                    .max_connections(1)
                    .connect_lazy_with((*pool.connect_options()).clone());
                let mut listener = PgListener::connect_with(&listen_pool)
                    .await
                    .map_err(|e| classify::<PostgresDialect>(e, "opening the LISTEN connection"))?;
                listener.listen(&channel).await.map_err(|e| {
                    classify::<PostgresDialect>(e, "subscribing to release notifications")
                })?;
                Ok(ListenerTask(tokio::spawn(forward_notifications(
                    listener, wakes,
                ))))
            })
        }))
    }

    fn capabilities() -> Capabilities {
        Capabilities {
            fifo: true,
            push_wakeup: true,
            durable_tokens: true,
            ttl_granularity: Duration::from_millis(1),
            expiry_slack: Duration::from_millis(20),
            max_permits: 1,
        }
    }

    fn poll_policy() -> PollPolicy {
        // Notifications carry the wake-ups; polling is the fallback for a
        // missed notification or a holder that simply expires.
        PollPolicy::new(Duration::from_millis(10), Duration::from_millis(500))
    }
}

/// Forwards `NOTIFY` payloads (lock names) to waiters until the backend is
/// dropped. After a lost connection (which the listener re-establishes)
/// every waiter is woken, since notifications may have been missed.
async fn forward_notifications(mut listener: PgListener, wakes: Arc<Wakes>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => wakes.deliver(notification.payload()),
            Ok(None) => {
                tracing::debug!("LISTEN connection lost; re-listening and waking all waiters");
                wakes.notify_all();
            }
            Err(err) => {
                tracing::warn!(error = %err, "LISTEN connection failed; waiters fall back to polling");
                wakes.notify_all();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Connects to the Postgres database at `url` with the default
/// [`SqlOptions`]: `postgres://user:password@host:5432/database`.
///
/// Parameters: lockkit's `table=<name>` (default `locks`; `schema.table`
/// allowed; it wins over [`SqlOptions::table`]) and sqlx's (`sslmode`,
/// `sslrootcert`, `sslcert`, `sslkey`, `application_name`, `options`, …,
/// see [`PostgresDialect::DRIVER_PARAMS`]); passwords may come from
/// `PGPASSWORD` too.
///
/// # Errors
/// Before any I/O, [`Error::Configuration`] for a malformed URL (one slash
/// after the scheme, an unencoded `/`, `?` or `#` in the password) or an
/// unknown parameter, and [`Error::InvalidInput`] for a bad table name.
/// Then [`Error::Transient`] when the server cannot be reached (the cause,
/// such as "connection refused", is in the message, at once rather than
/// after a pool timeout); [`Error::Configuration`] for wrong credentials or
/// a missing database; backend errors creating the schema. Passwords are
/// never in the message.
pub async fn connect(url: &str) -> Result<PostgresBackend> {
    connect_with(url, SqlOptions::default()).await
}

/// Connects to the Postgres database at `url` with `options`.
///
/// # Errors
/// As [`connect`].
pub async fn connect_with(url: &str, options: SqlOptions) -> Result<PostgresBackend> {
    options.validate()?;
    let url = server_url::<PostgresDialect>(url, "postgres")?;
    let pool = server_pool::<PostgresDialect>(&url, 8).await?;
    PostgresBackend::from_pool(pool, url.apply(options)).await
}

/// Connects to the Postgres database at `url` the way the lock backend
/// does (URL checks before any I/O, one probe connection whose failure
/// keeps its cause) and returns the pool, for tables of other components
/// (`lockkit-dag`'s catalog).
///
/// `url` must not carry lockkit's `table` parameter: it names a lock
/// table, which this pool does not use.
///
/// # Errors
/// As [`connect`]; [`Error::Configuration`] for a `table` parameter.
pub async fn open_pool(url: &str, max_connections: u32) -> Result<sqlx::PgPool> {
    let url = server_url::<PostgresDialect>(url, "postgres")?;
    if url.table.is_some() {
        return Err(Error::configuration(format!(
            "unknown URL parameter \"table\" in {:?}: it names a lock table, and this database holds none",
            url.redacted
        )));
    }
    server_pool::<PostgresDialect>(&url, max_connections).await
}

/// The lock library's error for a failed Postgres statement of another
/// component: transient (retry), configuration or backend, by the same
/// rules as the lock statements.
pub fn classify_error(err: sqlx::Error, doing: &str) -> Error {
    classify::<PostgresDialect>(err, doing)
}
