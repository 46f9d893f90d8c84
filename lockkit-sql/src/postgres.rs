//! Postgres (feature `postgres`), version 12 or newer.
//!
//! - Times are `TIMESTAMPTZ` set from the server's `now()` (the start of
//!   the statement's transaction; every statement here is its own
//!   transaction), never from the client.
//! - Acquire (and a queued waiter's step) is **one request of two
//!   statements**, run by Postgres as one implicit transaction (the simple
//!   query protocol: `EXECUTE`s of statements the connection keeps
//!   prepared, values as escape string constants; one round trip, and no
//!   planning per grant once the server caches a generic plan):
//!   1. By the statement's snapshot: `live` are the name's live rows of
//!      other leases, `ahead` the live entries of the name's **queue of
//!      waiters** (`<table>_queue`, ordered by an identity column) before
//!      this one (all of them for a try). Only when fewer than N permits
//!      are live and held with the same N, nobody queues for a try (or
//!      fewer than the free permits queue ahead of a waiter: with k free
//!      permits the first k waiters go), and this lease holds no live row,
//!      `counter` increments the name's counter in `<table>_fence` — its
//!      row lock serialises the name's admissions until commit — and keeps
//!      the value in a transaction-local setting (`lockkit.grant`).
//!      Otherwise **a refused try writes nothing** (no row lock, no counter
//!      increment, no WAL flush).
//!   2. A fresh snapshot, taken under the counter's lock, sees every grant
//!      committed before. Expired rows of other leases are deleted; one
//!      whose renewal is in flight is locked by it, so the delete waits,
//!      finds it renewed and keeps it, and it counts as held (live rows =
//!      the snapshot's rows minus the deleted ones). With the counter value
//!      set, fewer than N held and no mismatched N, `granted` inserts the
//!      row (`ON CONFLICT (lock_name, lease_id)` takes over this lease's
//!      own expired row), with the `waiters` flag set when others still
//!      queue; `served` removes this lease's queue entry; `again` renews a
//!      live row that already carries this lease id — a retry after a lost
//!      reply gets its own grant back (same token);
//!   - `joined` (a waiter's step, `Param::QueueTtlMillis` above 0): a
//!     refused waiter joins the queue or refreshes its entry's
//!     `expires_at`; live waiters step at least every third of
//!     [`SqlOptions::queue_entry_ttl`](crate::SqlOptions), so a waiter
//!     that died blocks the queue for at most that long;
//!   - `mark` sets the `waiters` flag of every live row of another lease
//!     that does not have it yet: the first refused waiter of a holding
//!     writes the rows once, later ones do not. When a row changed between
//!     the read and the mark (its holder released it at that moment), the
//!     statement returns a fence of 0 and the backend tries again at once,
//!     so a release that raced the mark is never waited out. A waiter that
//!     saw a permit free but was not granted (others are ahead in the
//!     queue, or won the race) gets 0 too.
//!   - A request whose N differs from a live holder's — or, when nobody
//!     holds, from the first queued waiter's — returns that N and fails
//!     with `Error::PermitsMismatch`.
//!
//!   Tokens therefore rise strictly per name, in commit order; a gap
//!   appears only when two acquirers race for a free permit. Reading a
//!   high-water mark or counting rows in the statement that waited for the
//!   lock would be unsafe here: its snapshot can miss a grant that commits
//!   while it waits, and admit N + 1 or hand out a token twice. The queue
//!   decides only who may try; exclusion rests on the counted rows under
//!   the counter's lock.
//! - Release and force-release `NOTIFY` the channel `lockkit_<table>` in
//!   the same statement (delivered at commit), **only when someone waits**
//!   — the statement's snapshot shows a live queue entry, or the row's
//!   `waiters` flag is set (it covers a waiter whose entry commits while
//!   the release runs) — with the payload `<name>\n<lease id of the
//!   queue's head>` for a lock (N = 1): only the head's process wakes, and
//!   only the head in it (`lockkit_core::spi::Wakes`). A semaphore's
//!   release (N > 1) sends `<name>\n`: its queued waiters re-check their
//!   place, and those within the free permits take them. Without a head in the statement's
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
//! - The grant's statements are prepared (SQL `PREPARE`) by each
//!   connection the first time it grants; a session that lost them (a new
//!   connection, `DISCARD ALL`) answers SQLSTATE 26000 before anything
//!   ran, and they are prepared again. A transaction-pooling proxy that
//!   moves a session between server connections is not supported (nor
//!   are sqlx's own prepared statements behind one).
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
//!   lock_name  TEXT        NOT NULL,
//!   owner_id   TEXT        NOT NULL,
//!   lease_id   TEXT        NOT NULL,
//!   fence      BIGINT      NOT NULL,
//!   created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
//!   expires_at TIMESTAMPTZ NOT NULL,
//!   waiters    BOOLEAN     NOT NULL DEFAULT false,
//!   permits    INTEGER     NOT NULL DEFAULT 1,
//!   PRIMARY KEY (lock_name, lease_id)
//! );
//! CREATE TABLE locks_fence (lock_name TEXT NOT NULL PRIMARY KEY, fence BIGINT NOT NULL);
//! CREATE TABLE locks_queue (
//!   lock_name  TEXT        NOT NULL,
//!   lease_id   TEXT        NOT NULL,
//!   seq        BIGINT      GENERATED ALWAYS AS IDENTITY,
//!   expires_at TIMESTAMPTZ NOT NULL,
//!   permits    INTEGER     NOT NULL DEFAULT 1,
//!   PRIMARY KEY (lock_name, lease_id)
//! );
//! CREATE INDEX locks_queue_order ON locks_queue (lock_name, seq);
//! ```
//!
//! The application's role needs `SELECT, INSERT, UPDATE, DELETE` on the
//! three tables; waiters `LISTEN` on `lockkit_locks`. Tables created by an
//! earlier lockkit get the `waiters` column added at start-up
//! (`ALTER TABLE locks ADD COLUMN waiters BOOLEAN NOT NULL DEFAULT false`
//! with `create_schema: false`) and the queue table created; tables from
//! before semaphores get the `permits` columns and the primary key
//! `(lock_name, lease_id)` (see the crate docs, "Migration"), and their
//! index `locks_expires_at` is dropped (`DROP INDEX locks_expires_at` with
//! `create_schema: false`): with it, every renewal writes a new index
//! entry and a grant may scan the index's expired and dead entries.

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
    BatchFuture, Dialect, GrantFuture, ListenerTask, Param, QueueStatements, Schema, SchemaStep,
    StartListener, Statement, Statements, Value,
};
use crate::error::{classify, sqlstate};
use crate::grant_batch::read_grant_rows;
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
            "lock_name, owner_id, lease_id, fence, {}, {}, permits::bigint",
            millis("created_at"),
            millis("expires_at")
        );
        let ttl = "$4::bigint * interval '1 millisecond'";
        // The head of the queue (empty when the statement's snapshot shows
        // no live entry).
        let head_of = |name: &str, skip: &str| {
            format!(
                "coalesce((SELECT w.lease_id FROM {q} AS w \
                   WHERE w.lock_name = {name} AND w.expires_at > now(){skip} \
                   ORDER BY w.seq LIMIT 1), '')"
            )
        };
        // Whether the statement's snapshot shows live waiters in the queue.
        let queued_of = |name: &str, skip: &str| {
            format!(
                "EXISTS (SELECT 1 FROM {q} AS w \
                   WHERE w.lock_name = {name} AND w.expires_at > now(){skip})"
            )
        };
        // A release names the head when the name is a lock (one permit:
        // only the head can go); a semaphore's release wakes every waiter
        // of the name to re-check its place.
        let release_notify = format!(
            "gone.lock_name || chr(10) || CASE WHEN gone.permits = 1 THEN {} ELSE '' END",
            head_of("gone.lock_name", "")
        );
        let release_when = format!("waiters OR {}", queued_of("gone.lock_name", ""));
        // The grant's parameters: $1 name, $2 owner, $3 lease id, $4 TTL,
        // $5 queue entry TTL (0: a try), $6 permits.
        const GRANT: &[Param] = &[
            Param::Name,
            Param::Owner,
            Param::LeaseId,
            Param::TtlMillis,
            Param::QueueTtlMillis,
            Param::Permits,
        ];
        Statements {
            // The grant's first statement reads without writing when the
            // semaphore is full (see the module docs).
            precheck: None,
            purge: None,
            grant: vec![
                // 1. By the statement's snapshot: may this attempt have a
                //    permit? If so, increment the name's counter — its row
                //    lock serialises admissions of the name until commit —
                //    and keep the new value for statement 2. A refused
                //    attempt writes nothing.
                Statement::rows(
                    format!(
                        "WITH live AS (\
                           SELECT permits FROM {t} WHERE lock_name = $1 AND lease_id <> $3 AND expires_at > now()), \
                         mine AS (\
                           SELECT 1 FROM {t} WHERE lock_name = $1 AND lease_id = $3 AND expires_at > now()), \
                         myseq AS (\
                           SELECT seq FROM {q} WHERE lock_name = $1 AND lease_id = $3 AND expires_at > now()), \
                         ahead AS (\
                           SELECT 1 FROM {q} WHERE lock_name = $1 AND lease_id <> $3 AND expires_at > now() \
                             AND ($5::bigint = 0 OR NOT EXISTS (SELECT 1 FROM myseq) \
                                  OR seq < (SELECT seq FROM myseq))), \
                         front AS (\
                           SELECT permits FROM {q} WHERE lock_name = $1 AND lease_id <> $3 AND expires_at > now() \
                           ORDER BY seq LIMIT 1), \
                         counter AS (\
                           INSERT INTO {f} AS c (lock_name, fence) \
                           SELECT $1, 1 WHERE NOT EXISTS (SELECT 1 FROM mine) \
                             AND NOT EXISTS (SELECT 1 FROM live WHERE permits <> $6) \
                             AND (EXISTS (SELECT 1 FROM live) \
                                  OR NOT EXISTS (SELECT 1 FROM front WHERE permits <> $6)) \
                             AND (SELECT count(*) FROM live) + (SELECT count(*) FROM ahead) < $6 \
                             AND ($5::bigint > 0 OR NOT EXISTS (SELECT 1 FROM ahead)) \
                           ON CONFLICT (lock_name) DO UPDATE SET fence = c.fence + 1 \
                           RETURNING fence) \
                         SELECT count(set_config('lockkit.grant', fence::text, true))::bigint FROM counter"
                    ),
                    GRANT,
                ),
                // 2. A fresh snapshot, taken under the counter's lock: it
                //    sees every grant of the name. Expired rows of others
                //    go (a row whose renewal is in flight is locked by it:
                //    the delete waits, sees it renewed, and leaves it, so
                //    it counts as held), then the grant — or the retry's
                //    renewal, the waiter's queue entry and marks.
                Statement::rows(
                    format!(
                        "WITH g AS (\
                           SELECT nullif(current_setting('lockkit.grant', true), '')::bigint AS fence), \
                         present AS (\
                           SELECT lease_id, permits, waiters, expires_at > now() AS live FROM {t} \
                           WHERE lock_name = $1 AND lease_id <> $3), \
                         purged AS (\
                           DELETE FROM {t} WHERE lock_name = $1 AND lease_id <> $3 AND expires_at <= now() \
                           RETURNING lease_id), \
                         held AS (\
                           SELECT * FROM present p \
                           WHERE NOT EXISTS (SELECT 1 FROM purged d WHERE d.lease_id = p.lease_id)), \
                         front AS (\
                           SELECT permits FROM {q} WHERE lock_name = $1 AND lease_id <> $3 AND expires_at > now() \
                           ORDER BY seq LIMIT 1), \
                         mis AS (\
                           SELECT permits FROM held WHERE permits <> $6 \
                           UNION ALL SELECT permits FROM front \
                             WHERE permits <> $6 AND NOT EXISTS (SELECT 1 FROM held) \
                           LIMIT 1), \
                         ok AS (\
                           SELECT fence FROM g WHERE fence IS NOT NULL \
                             AND NOT EXISTS (SELECT 1 FROM mis) AND (SELECT count(*) FROM held) < $6), \
                         granted AS (\
                           INSERT INTO {t} AS l (lock_name, lease_id, owner_id, fence, permits, created_at, expires_at, waiters) \
                           SELECT $1, $3, $2, ok.fence, $6, now(), now() + {ttl}, \
                             EXISTS (SELECT 1 FROM {q} WHERE lock_name = $1 AND lease_id <> $3 AND expires_at > now()) \
                           FROM ok \
                           ON CONFLICT (lock_name, lease_id) DO UPDATE SET \
                             owner_id = EXCLUDED.owner_id, fence = EXCLUDED.fence, permits = EXCLUDED.permits, \
                             created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, \
                             waiters = EXCLUDED.waiters \
                           WHERE l.expires_at <= EXCLUDED.created_at \
                           RETURNING l.fence), \
                         again AS (\
                           UPDATE {t} SET expires_at = now() + {ttl} \
                           WHERE lock_name = $1 AND lease_id = $3 AND expires_at > now() \
                           RETURNING fence), \
                         served AS (\
                           DELETE FROM {q} WHERE lock_name = $1 AND lease_id = $3 \
                             AND EXISTS (SELECT 1 FROM granted UNION ALL SELECT 1 FROM again) \
                           RETURNING 1), \
                         joined AS (\
                           INSERT INTO {q} (lock_name, lease_id, permits, expires_at) \
                           SELECT $1, $3, $6, now() + $5::bigint * interval '1 millisecond' \
                           WHERE $5::bigint > 0 AND NOT EXISTS (SELECT 1 FROM granted) \
                             AND NOT EXISTS (SELECT 1 FROM again) AND NOT EXISTS (SELECT 1 FROM mis) \
                           ON CONFLICT (lock_name, lease_id) DO UPDATE SET \
                             expires_at = EXCLUDED.expires_at, permits = EXCLUDED.permits \
                           RETURNING 1), \
                         mark AS (\
                           UPDATE {t} SET waiters = true \
                           WHERE $5::bigint > 0 AND lock_name = $1 AND lease_id <> $3 \
                             AND expires_at > now() AND NOT waiters \
                             AND NOT EXISTS (SELECT 1 FROM granted) AND NOT EXISTS (SELECT 1 FROM again) \
                             AND NOT EXISTS (SELECT 1 FROM mis) \
                           RETURNING 1) \
                         SELECT fence, 0::bigint FROM granted \
                         UNION ALL SELECT fence, 0::bigint FROM again \
                         UNION ALL SELECT 0::bigint, permits::bigint FROM mis \
                           WHERE NOT EXISTS (SELECT 1 FROM granted) AND NOT EXISTS (SELECT 1 FROM again) \
                         UNION ALL SELECT 0::bigint, 0::bigint \
                           WHERE $5::bigint > 0 AND NOT EXISTS (SELECT 1 FROM granted) \
                             AND NOT EXISTS (SELECT 1 FROM again) AND NOT EXISTS (SELECT 1 FROM mis) \
                             AND ((SELECT count(*) FROM held WHERE live AND NOT waiters) > (SELECT count(*) FROM mark) \
                                  OR (SELECT count(*) FROM held) < $6)"
                    ),
                    GRANT,
                ),
            ],
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
                                   RETURNING lock_name, expires_at > now() AS live, waiters, permits) \
                     SELECT (CASE WHEN live THEN 1 ELSE 0 END)::bigint, \
                       (CASE WHEN {release_when} THEN pg_notify('{chan}', {release_notify})::text END) FROM gone"
                ),
                &[Param::Name, Param::LeaseId],
            ),
            release_expired: None,
            current: Statement::rows(
                format!(
                    "SELECT {columns} FROM {t} WHERE lock_name = $1 AND expires_at > now() ORDER BY fence"
                ),
                &[Param::Name],
            ),
            list: Statement::rows(
                format!("SELECT {columns} FROM {t} WHERE expires_at > now()"),
                &[],
            ),
            force_release: Statement::rows(
                format!(
                    "WITH gone AS (DELETE FROM {t} WHERE lock_name = $1 \
                                   RETURNING lock_name, expires_at > now() AS live, waiters, permits) \
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
                leave: Statement::rows(
                    format!(
                        "WITH gone AS (DELETE FROM {t} WHERE lock_name = $1 AND lease_id = $2 \
                                       RETURNING expires_at > now() AS live, waiters, permits), \
                         left_queue AS (DELETE FROM {q} WHERE lock_name = $1 AND lease_id = $2 RETURNING permits), \
                         first AS (SELECT lease_id FROM {q} WHERE lock_name = $1 AND expires_at > now() \
                                   ORDER BY seq LIMIT 1), \
                         mine AS (SELECT coalesce((SELECT max(permits) FROM gone), \
                                                  (SELECT max(permits) FROM left_queue), 1) AS n), \
                         holding AS (SELECT count(*) AS n FROM {t} \
                                     WHERE lock_name = $1 AND lease_id <> $2 AND expires_at > now()) \
                         SELECT coalesce((SELECT max(CASE WHEN live THEN 1 ELSE 0 END) FROM gone), 0)::bigint, \
                           (CASE WHEN EXISTS (SELECT 1 FROM gone WHERE waiters) \
                                   OR (EXISTS (SELECT 1 FROM gone) AND {queued_others}) \
                                   OR (EXISTS (SELECT 1 FROM left_queue) \
                                       AND (SELECT n FROM holding) < (SELECT n FROM mine) \
                                       AND ((SELECT n FROM mine) > 1 \
                                            OR EXISTS (SELECT 1 FROM first WHERE lease_id = $2))) \
                                 THEN pg_notify('{chan}', $1::text || chr(10) || \
                                   CASE WHEN (SELECT n FROM mine) = 1 THEN {leave_head} ELSE '' END) END)::text",
                        leave_head = head_of("$1::text", " AND w.lease_id <> $2"),
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
        let index = table.quoted("_expires_at", '"');
        let q = table.quoted("_queue", '"');
        let queue_order = table.quoted_bare("_queue_order", '"');
        let has_column = |relation: &str, column: &str| {
            format!(
                "SELECT count(*)::bigint FROM pg_attribute \
                 WHERE attrelid = to_regclass('{relation}') AND attname = '{column}' AND NOT attisdropped"
            )
        };
        let mut steps = vec![SchemaStep::Ddl(format!(
            "SELECT pg_advisory_xact_lock(hashtext('lockkit schema {table}'))"
        ))];
        if let Some(schema) = table.schema() {
            steps.push(SchemaStep::Ddl(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )));
        }
        steps.extend([
            SchemaStep::Ddl(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                   lock_name  TEXT        NOT NULL, \
                   owner_id   TEXT        NOT NULL, \
                   lease_id   TEXT        NOT NULL, \
                   fence      BIGINT      NOT NULL, \
                   created_at TIMESTAMPTZ NOT NULL DEFAULT now(), \
                   expires_at TIMESTAMPTZ NOT NULL, \
                   waiters    BOOLEAN     NOT NULL DEFAULT false, \
                   permits    INTEGER     NOT NULL DEFAULT 1, \
                   PRIMARY KEY (lock_name, lease_id))"
            )),
            // Tables from before the `waiters` flag: add it (a probe first,
            // so a start-up on an up-to-date table takes no table lock).
            SchemaStep::Upgrade {
                probe: has_column(&t, "waiters"),
                apply: vec![format!(
                    "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS waiters BOOLEAN NOT NULL DEFAULT false"
                )],
            },
            // Tables from before semaphores: one row per name (primary key
            // `lock_name`). Now one row per held permit; the old rows stay
            // as locks of one permit.
            SchemaStep::Upgrade {
                probe: has_column(&t, "permits"),
                apply: vec![
                    format!("ALTER TABLE {t} ADD COLUMN IF NOT EXISTS permits INTEGER NOT NULL DEFAULT 1"),
                    format!(
                        "DO $lockkit$ DECLARE pk text; BEGIN \
                           SELECT conname INTO pk FROM pg_constraint \
                             WHERE conrelid = to_regclass('{t}') AND contype = 'p'; \
                           IF pk IS NOT NULL THEN \
                             EXECUTE format('ALTER TABLE {t} DROP CONSTRAINT %I', pk); \
                           END IF; \
                         END $lockkit$"
                    ),
                    format!("ALTER TABLE {t} ADD PRIMARY KEY (lock_name, lease_id)"),
                ],
            },
            // Tables from before this release have an index on
            // `expires_at`: it makes every renewal a non-HOT update (a new
            // index entry per renewal) and lured the grant's purge of the
            // name's expired rows onto it — a scan of every expired and
            // dead entry of the table per grant (benchmark P6: 15.6 s to
            // take 10 000 locks). Nothing needs it: every statement of a
            // lease finds its rows by the primary key, and `cleanup` is a
            // rare sweep of the table.
            SchemaStep::Upgrade {
                probe: format!("SELECT count(*)::bigint WHERE to_regclass('{index}') IS NULL"),
                apply: vec![format!("DROP INDEX IF EXISTS {index}")],
            },
            SchemaStep::Ddl(format!(
                "CREATE TABLE IF NOT EXISTS {f} (\
                   lock_name TEXT   NOT NULL PRIMARY KEY, \
                   fence     BIGINT NOT NULL)"
            )),
            SchemaStep::Ddl(format!(
                "CREATE TABLE IF NOT EXISTS {q} (\
                   lock_name  TEXT        NOT NULL, \
                   lease_id   TEXT        NOT NULL, \
                   seq        BIGINT      GENERATED ALWAYS AS IDENTITY, \
                   expires_at TIMESTAMPTZ NOT NULL, \
                   permits    INTEGER     NOT NULL DEFAULT 1, \
                   PRIMARY KEY (lock_name, lease_id))"
            )),
            SchemaStep::Upgrade {
                probe: has_column(&q, "permits"),
                apply: vec![format!(
                    "ALTER TABLE {q} ADD COLUMN IF NOT EXISTS permits INTEGER NOT NULL DEFAULT 1"
                )],
            },
            SchemaStep::Ddl(format!(
                "CREATE INDEX IF NOT EXISTS {queue_order} ON {q} (lock_name, seq)"
            )),
        ]);
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

    /// The grant's statements as one simple-protocol request of
    /// `EXECUTE`s of statements the connection keeps prepared: Postgres
    /// runs them as one implicit transaction, each statement with a fresh
    /// snapshot — one round trip, and no planning once the plans are
    /// cached (see the module docs).
    const HAS_GRANT_BATCH: bool = true;

    fn grant_batch<'a, 'v>(
        conn: &'a mut sqlx::PgConnection,
        statements: &[Statement],
        value: &dyn Fn(Param) -> Value<'v>,
    ) -> Option<GrantFuture<'a>> {
        let grant = PreparedGrant::new(statements, value);
        Some(Box::pin(grant.run(conn)))
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
            max_permits: lockkit_core::MAX_PERMITS,
        }
    }

    fn poll_policy() -> PollPolicy {
        // Notifications carry the wake-ups; polling is the fallback for a
        // missed notification or a holder that simply expires.
        PollPolicy::new(Duration::from_millis(10), Duration::from_millis(500))
    }
}

/// The grant's statements, run as `EXECUTE`s of statements prepared (SQL
/// `PREPARE`) on the connection the first time it runs them.
///
/// Sent as literal text, the two statements cost the server about 1 ms
/// of planning each per grant, more than they take to run; prepared, the
/// server plans each a few times and then keeps a generic plan (the
/// default `plan_cache_mode`), and a grant costs about a third of the CPU
/// (measured with `pgbench` on this recipe: 290 → 1300 grants/s on one
/// connection). The `EXECUTE`s go as one simple-protocol request, so the
/// grant stays one round trip and one implicit transaction.
///
/// A connection that has not prepared them yet (a new one, or one whose
/// session lost them: `DISCARD ALL` by a proxy) answers the request with
/// SQLSTATE 26000 before anything ran; the statements are prepared then
/// and the request is sent again, once. The names carry a hash of the
/// text, so backends on other tables that share a pool never mix them
/// up. (A transaction-pooling proxy that moves the session between
/// server connections is not supported — sqlx's own prepared statements
/// need the session too.)
struct PreparedGrant {
    /// Per statement: its name, parameter types and text, for the
    /// `PREPARE` — written out only when the connection lacks it.
    prepare: Vec<(String, String, Arc<str>)>,
    /// `EXECUTE <name>(<literals>); …`: the grant.
    execute: String,
    /// How many results the batch returns.
    expected: usize,
}

impl PreparedGrant {
    fn new<'v>(statements: &[Statement], value: &dyn Fn(Param) -> Value<'v>) -> Self {
        let mut prepare = Vec::with_capacity(statements.len());
        let mut executes = Vec::with_capacity(statements.len());
        for (index, statement) in statements.iter().enumerate() {
            let name = prepared_name(index, &statement.sql);
            let values: Vec<Value<'v>> = statement.params.iter().map(|p| value(*p)).collect();
            let types = values
                .iter()
                .map(|v| match v {
                    Value::Int(_) => "bigint",
                    Value::Text(_) => "text",
                })
                .collect::<Vec<_>>()
                .join(", ");
            let args = values
                .iter()
                .map(|v| literal(*v))
                .collect::<Vec<_>>()
                .join(", ");
            executes.push(format!("EXECUTE {name}({args})"));
            prepare.push((name, types, Arc::clone(&statement.sql)));
        }
        Self {
            prepare,
            execute: executes.join("; "),
            expected: statements.len(),
        }
    }

    /// Sends the grant (preparing its statements first when the
    /// connection has not) and returns the rows of the last statement.
    ///
    /// # Errors
    /// The classified database error of the grant or of a `PREPARE`.
    async fn run(self, conn: &mut sqlx::PgConnection) -> Result<Vec<(i64, i64)>> {
        let rows_of = self.expected - 1;
        match read_grant_rows::<PostgresDialect>(conn, self.execute.clone(), self.expected, rows_of)
            .await
        {
            Err(err) if sqlstate(&err).as_deref() == Some(INVALID_STATEMENT_NAME) => {
                for (name, types, sql) in self.prepare {
                    let prepare = format!("PREPARE {name} ({types}) AS {sql}");
                    match sqlx::raw_sql(AssertSqlSafe(prepare))
                        .execute(&mut *conn)
                        .await
                    {
                        Ok(_) => {}
                        // Prepared already (the other statement was not).
                        Err(sqlx::Error::Database(db))
                            if db.code().as_deref() == Some(DUPLICATE_PREPARED_STATEMENT) => {}
                        Err(e) => {
                            return Err(classify::<PostgresDialect>(e, "preparing the grant"));
                        }
                    }
                }
                read_grant_rows::<PostgresDialect>(conn, self.execute, self.expected, rows_of).await
            }
            other => other,
        }
    }
}

/// SQLSTATE `invalid_sql_statement_name`: no prepared statement of that name.
const INVALID_STATEMENT_NAME: &str = "26000";
/// SQLSTATE `duplicate_prepared_statement`.
const DUPLICATE_PREPARED_STATEMENT: &str = "42P05";

/// The session-wide name of grant statement `index` with text `sql`.
fn prepared_name(index: usize, sql: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    // SipHash with fixed keys: the same name for the same text in every
    // process of one build (names only need to be stable per session).
    let mut hasher = std::hash::DefaultHasher::new();
    sql.hash(&mut hasher);
    format!("lockkit_grant{index}_{:016x}", hasher.finish())
}

/// `value` as a literal of an `EXECUTE`'s argument list: an integer in
/// decimal, text as an escape string constant `E'…'::text` with `\` and
/// `'` doubled — read the same whatever `standard_conforming_strings`
/// says. Names, owners and lease ids hold no control characters (core
/// validates them), so no NUL reaches the server.
fn literal(value: Value<'_>) -> String {
    match value {
        Value::Int(int) => format!("({int})"),
        Value::Text(text) => {
            let mut out = String::with_capacity(text.len() + 10);
            out.push_str("E'");
            for c in text.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\'' => out.push_str("''"),
                    c => out.push(c),
                }
            }
            out.push_str("'::text");
            out
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_executes_prepared_statements_with_literal_arguments() {
        let statements = [
            Statement::rows(
                "SELECT 1 FROM t WHERE lock_name = $1 AND fence > $2".to_owned(),
                &[Param::Name, Param::Permits],
            ),
            Statement::rows("SELECT $1".to_owned(), &[Param::LeaseId]),
        ];
        let value = |p| match p {
            Param::Name => Value::Text("it's a \\ 🔒 $1"),
            Param::LeaseId => Value::Text("l"),
            _ => Value::Int(3),
        };
        let grant = PreparedGrant::new(&statements, &value);
        let (first, second) = (
            prepared_name(0, &statements[0].sql),
            prepared_name(1, &statements[1].sql),
        );
        assert_ne!(first, second);
        let prepare: Vec<(&str, &str, &str)> = grant
            .prepare
            .iter()
            .map(|(name, types, sql)| (name.as_str(), types.as_str(), &**sql))
            .collect();
        assert_eq!(
            prepare,
            [
                (
                    first.as_str(),
                    "text, bigint",
                    "SELECT 1 FROM t WHERE lock_name = $1 AND fence > $2"
                ),
                (second.as_str(), "text", "SELECT $1"),
            ]
        );
        assert_eq!(
            grant.execute,
            format!(
                "EXECUTE {first}(E'it''s a \\\\ 🔒 $1'::text, (3)); EXECUTE {second}(E'l'::text)"
            )
        );
        assert_eq!(grant.expected, 2);
    }
}
