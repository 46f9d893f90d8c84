//! The row-lease backend, written once for every dialect.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockkit_core::spi::{AcquireRequest, system_time_from_millis, ttl_millis};
use lockkit_core::spi::{LockQueue, PollPolicy, TurnSubscription, WakeSubscription, Wakes};
use lockkit_core::{
    Capabilities, Error, FencingToken, Lease, LeaseId, LockBackend, LockInfo, LockName, LostReason,
    Result,
};
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type,
};
use tokio::time::Instant;

use crate::dialect::{
    Announcer, Dialect, ListenerTask, Outcome, Param, SchemaStep, StartListener, Statement,
    Statements, Value,
};
use crate::error::{classify, is_conflict};
use crate::host_clock;
use crate::lanes::Lanes;
use crate::table::TableName;

/// How long concurrent first starts retry contended schema creation.
const SCHEMA_RETRY_FOR: Duration = Duration::from_secs(20);

/// Settings of a SQL backend.
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// The lock table (default `locks`).
    pub table: TableName,
    /// Create the table, its fence table and trigger if missing (default
    /// `true`). Turn off when a DBA manages the schema.
    pub create_schema: bool,
    /// How waiters poll; `None` uses the dialect's default.
    pub poll: Option<PollPolicy>,
    /// Dialects with a waiter queue (Postgres): how long a queue entry
    /// lives unless its waiter refreshes it, i.e. how long a waiter that
    /// died blocks the queue at most (default 3 s, at least 30 ms; live
    /// waiters refresh their entry every third of it).
    pub queue_entry_ttl: Duration,
}

impl Default for SqlOptions {
    fn default() -> Self {
        Self {
            table: TableName::default(),
            create_schema: true,
            poll: None,
            queue_entry_ttl: DEFAULT_QUEUE_ENTRY_TTL,
        }
    }
}

impl SqlOptions {
    /// Checks the options without any I/O.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a `queue_entry_ttl` under 30 ms.
    pub fn validate(&self) -> Result<()> {
        if self.queue_entry_ttl < MIN_QUEUE_ENTRY_TTL {
            return Err(Error::invalid_input(format!(
                "queue_entry_ttl must be at least {MIN_QUEUE_ENTRY_TTL:?}, got {:?}",
                self.queue_entry_ttl
            )));
        }
        Ok(())
    }
}

/// How often a grant rolled back by a deadlock or serialization conflict
/// runs again before its error is returned (as `Transient`).
const CONFLICT_RETRIES: u32 = 5;

/// The default [`SqlOptions::queue_entry_ttl`].
const DEFAULT_QUEUE_ENTRY_TTL: Duration = Duration::from_secs(3);

/// The shortest [`SqlOptions::queue_entry_ttl`].
const MIN_QUEUE_ENTRY_TTL: Duration = Duration::from_millis(30);

/// The values bound to a statement.
struct Values<'a> {
    name: &'a str,
    owner: &'a str,
    lease_id: &'a str,
    ttl_ms: i64,
    /// The host clock, for dialects with [`Dialect::HOST_CLOCK`].
    clock: host_clock::Reading,
    boot_id: &'a str,
    /// [`Param::QueueTtlMillis`]: 0 unless the attempt may join a queue.
    queue_ttl_ms: i64,
    /// [`Param::Permits`]: the request's permit count (0 otherwise).
    permits: i64,
}

impl<'a> Values<'a> {
    /// What `param` is bound to.
    fn get(&self, param: Param) -> Value<'a> {
        match param {
            Param::Name => Value::Text(self.name),
            Param::Owner => Value::Text(self.owner),
            Param::LeaseId => Value::Text(self.lease_id),
            Param::TtlMillis => Value::Int(self.ttl_ms),
            Param::NowMillis => Value::Int(self.clock.now_ms),
            Param::BootId => Value::Text(self.boot_id),
            Param::WallMillis => Value::Int(self.clock.wall_ms),
            Param::QueueTtlMillis => Value::Int(self.queue_ttl_ms),
            Param::Permits => Value::Int(self.permits),
        }
    }
}

/// A lock table in a SQL database (see the [crate docs](crate)).
pub struct SqlBackend<D: Dialect> {
    pool: Pool<D::Db>,
    /// Connections kept out of the pool for the statements (`lanes.rs`).
    lanes: Arc<Lanes<D::Db>>,
    /// The boot the host clock belongs to ([`Dialect::HOST_CLOCK`]), or "".
    boot_id: &'static str,
    statements: Arc<Statements>,
    table: TableName,
    poll: PollPolicy,
    /// [`SqlOptions::queue_entry_ttl`].
    queue_ttl: Duration,
    wakeups: Option<Arc<Wakeups>>,
    announce: Option<Announcer>,
    dialect: PhantomData<D>,
}

/// Push wake-ups: one listener per backend instance (started on the first
/// wait), routed to waiters through [`Wakes`].
struct Wakeups {
    wakes: Arc<Wakes>,
    start: StartListener,
    running: tokio::sync::OnceCell<ListenerTask>,
}

impl Wakeups {
    async fn started(&self) -> Result<&Wakes> {
        self.running
            .get_or_try_init(|| (self.start)(Arc::clone(&self.wakes)))
            .await?;
        Ok(&self.wakes)
    }
}

impl<D: Dialect> fmt::Debug for SqlBackend<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlBackend")
            .field("kind", &D::KIND)
            .field("table", &self.table.to_string())
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> Clone for SqlBackend<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            lanes: Arc::clone(&self.lanes),
            boot_id: self.boot_id,
            statements: Arc::clone(&self.statements),
            table: self.table.clone(),
            poll: self.poll,
            queue_ttl: self.queue_ttl,
            wakeups: self.wakeups.clone(),
            announce: self.announce.clone(),
            dialect: PhantomData,
        }
    }
}

impl<D> SqlBackend<D>
where
    D: Dialect,
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    for<'t> &'t str: Encode<'t, D::Db> + Type<D::Db>,
    for<'t> i64: Encode<'t, D::Db> + Type<D::Db>,
    for<'r> i64: Decode<'r, D::Db>,
    for<'r> String: Decode<'r, D::Db> + Type<D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
{
    /// Tells other processes of a release (SQLite's wake file) when a
    /// delete removed a lease.
    fn announce_if(&self, deleted: bool) {
        if deleted && let Some(announce) = &self.announce {
            announce();
        }
    }

    /// A backend on an existing pool; creates the schema first if
    /// `options.create_schema` is set.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for invalid `options` (before any I/O);
    /// backend errors while creating the schema.
    pub async fn from_pool(pool: Pool<D::Db>, options: SqlOptions) -> Result<Self> {
        options.validate()?;
        let wakeups = D::listener(&pool, &options.table).map(|start| {
            Arc::new(Wakeups {
                wakes: Wakes::new(),
                start,
                running: tokio::sync::OnceCell::new(),
            })
        });
        let boot_id = if D::HOST_CLOCK {
            host_clock::boot_id()?
        } else {
            ""
        };
        let announce = D::announcer(&pool, &options.table);
        let backend = Self {
            boot_id,
            statements: Arc::new(D::statements(&options.table)),
            table: options.table,
            poll: options.poll.unwrap_or_else(D::poll_policy),
            queue_ttl: options.queue_entry_ttl,
            announce,
            lanes: Arc::new(Lanes::new(pool.clone())),
            pool,
            wakeups,
            dialect: PhantomData,
        };
        if options.create_schema {
            // Concurrent first starts may collide (busy file, deadlock on
            // catalog rows); the DDL is idempotent, so retry those.
            let give_up = Instant::now() + SCHEMA_RETRY_FOR;
            let mut backoff =
                PollPolicy::new(Duration::from_millis(5), Duration::from_millis(200)).backoff();
            loop {
                match backend.create_schema().await {
                    Err(e) if e.is_retryable() && Instant::now() < give_up => {
                        tracing::debug!(error = %e, "schema creation contended; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                    other => break other?,
                }
            }
        }
        Ok(backend)
    }

    /// Creates the lock table, its fence table and trigger if missing.
    /// Idempotent and safe when several processes do it at once.
    ///
    /// # Errors
    /// Backend errors (for example, missing privileges).
    pub async fn create_schema(&self) -> Result<()> {
        let schema = D::schema(&self.table);
        let doing = "creating the lock table";
        if schema.in_transaction {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(|e| classify::<D>(e, doing))?;
            for step in &schema.statements {
                Self::run_step(&mut tx, step).await?;
            }
            tx.commit().await.map_err(|e| classify::<D>(e, doing))?;
        } else {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(|e| classify::<D>(e, doing))?;
            for step in &schema.statements {
                Self::run_step(&mut conn, step).await?;
            }
        }
        Ok(())
    }

    async fn run_step(conn: &mut <D::Db as Database>::Connection, step: &SchemaStep) -> Result<()> {
        let doing = "creating the lock table";
        let run = |ddl: &str| sqlx::raw_sql(AssertSqlSafe(ddl.to_owned()));
        match step {
            SchemaStep::Ddl(ddl) => {
                run(ddl)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| classify::<D>(e, doing))?;
            }
            SchemaStep::Upgrade { probe, apply } => {
                let done: i64 = sqlx::query_scalar(AssertSqlSafe(probe.clone()))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| classify::<D>(e, "checking the lock table's version"))?;
                if done == 0 {
                    for ddl in apply {
                        tracing::info!(statement = %ddl, "upgrading the lock table");
                        run(ddl)
                            .execute(&mut *conn)
                            .await
                            .map_err(|e| classify::<D>(e, "upgrading the lock table"))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The connection pool. The backend keeps up to all but one of its
    /// connections checked out for its own statements (sqlx pings every
    /// connection returned to a pool, one more round trip per statement;
    /// see `ARCHITECTURE.md` §6), so queries of your own on this pool get
    /// at least one connection — an in-memory SQLite pool has only the one
    /// the backend uses.
    pub fn pool(&self) -> &Pool<D::Db> {
        &self.pool
    }

    /// The lock table.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    fn query<'q>(
        statement: &Statement,
        values: &Values<'q>,
    ) -> sqlx::query::Query<'q, D::Db, <D::Db as Database>::Arguments> {
        let mut query = sqlx::query(AssertSqlSafe(Arc::clone(&statement.sql)));
        for param in statement.params {
            query = match values.get(*param) {
                Value::Text(text) => query.bind(text),
                Value::Int(int) => query.bind(int),
            };
        }
        query
    }

    async fn fetch_optional(
        &self,
        statement: &Statement,
        values: &Values<'_>,
        doing: &'static str,
    ) -> Result<Option<<D::Db as Database>::Row>> {
        let mut lane = self.lane(doing).await?;
        let conn = lane.conn().map_err(|e| classify::<D>(e, doing))?;
        let result = Self::query(statement, values).fetch_optional(conn).await;
        lane.finish(&result);
        result.map_err(|e| classify::<D>(e, doing))
    }

    async fn fetch_all(
        &self,
        statement: &Statement,
        values: &Values<'_>,
        doing: &'static str,
    ) -> Result<Vec<<D::Db as Database>::Row>> {
        let mut lane = self.lane(doing).await?;
        let conn = lane.conn().map_err(|e| classify::<D>(e, doing))?;
        let result = Self::query(statement, values).fetch_all(conn).await;
        lane.finish(&result);
        result.map_err(|e| classify::<D>(e, doing))
    }

    async fn execute(
        &self,
        statement: &Statement,
        values: &Values<'_>,
        doing: &'static str,
    ) -> Result<<D::Db as Database>::QueryResult> {
        let mut lane = self.lane(doing).await?;
        let conn = lane.conn().map_err(|e| classify::<D>(e, doing))?;
        let result = Self::query(statement, values).execute(conn).await;
        lane.finish(&result);
        result.map_err(|e| classify::<D>(e, doing))
    }

    /// Runs a release-style statement: `true` if a live lease was deleted.
    async fn delete(
        &self,
        statement: &Statement,
        values: &Values<'_>,
        doing: &'static str,
    ) -> Result<bool> {
        match statement.outcome {
            Outcome::Rows => Self::any_live(&self.fetch_all(statement, values, doing).await?),
            Outcome::AffectedRows => {
                Ok(D::rows_affected(&self.execute(statement, values, doing).await?) > 0)
            }
        }
    }

    /// The values for a statement about `name` (and a lease), with a fresh
    /// host-clock reading. Call it after taking the instant a lease's local
    /// deadline counts from, so that deadline always ends before the row
    /// expires.
    fn values<'a>(
        &'a self,
        name: &'a str,
        owner: &'a str,
        lease_id: &'a str,
        ttl: Duration,
    ) -> Values<'a> {
        Values {
            name,
            owner,
            lease_id,
            ttl_ms: ttl_millis(ttl),
            clock: if D::HOST_CLOCK {
                host_clock::read()
            } else {
                host_clock::Reading::default()
            },
            boot_id: self.boot_id,
            queue_ttl_ms: 0,
            permits: 0,
        }
    }

    /// Extends each lease with the dialect's `extend` statement, all in one
    /// transaction; says which were still held.
    async fn extend_in_one_transaction(&self, batch: &[(Lease, Duration)]) -> Result<Vec<bool>> {
        let doing = "renewing leases";
        let mut lane = self.lane(doing).await?;
        let conn = lane.conn().map_err(|e| classify::<D>(e, doing))?;
        let mut tx = sqlx::Connection::begin(conn)
            .await
            .map_err(|e| classify::<D>(e, doing))?;
        let statement = &self.statements.extend;
        let mut held = Vec::with_capacity(batch.len());
        for (lease, ttl) in batch {
            let values = self.values(
                lease.name.as_str(),
                &lease.owner,
                lease.lease_id.as_str(),
                *ttl,
            );
            let query = Self::query(statement, &values);
            held.push(match statement.outcome {
                Outcome::Rows => query
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| classify::<D>(e, doing))?
                    .is_some(),
                Outcome::AffectedRows => {
                    D::rows_affected(
                        &query
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| classify::<D>(e, doing))?,
                    ) > 0
                }
            });
        }
        tx.commit().await.map_err(|e| classify::<D>(e, doing))?;
        lane.done();
        Ok(held)
    }

    /// One attempt for `req`. With `queue_ttl_ms` above 0 and a dialect
    /// with a waiter queue, the queue's step: a refused attempt joins the
    /// queue (or refreshes its entry) for that long.
    pub(crate) async fn attempt(
        &self,
        req: &AcquireRequest,
        queue_ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        /// How often an attempt whose grant reported a race (fence 0) runs
        /// again at once before it waits like a refused one.
        const RACED_RETRIES: usize = 3;
        let sent_at = Instant::now();
        let mut values = self.values(
            req.name.as_str(),
            &req.owner,
            req.lease_id.as_str(),
            req.ttl,
        );
        values.queue_ttl_ms = queue_ttl_ms;
        values.permits = i64::from(req.permits);
        let doing = "acquiring a lock";
        if let Some(precheck) = &self.statements.precheck
            && let Some(row) = self.fetch_optional(precheck, &values, doing).await?
        {
            let read = |e| classify::<D>(e, "reading the holders");
            let own = row.try_get::<Option<i64>, _>(0).map_err(read)?;
            let live = row.try_get::<Option<i64>, _>(1).map_err(read)?;
            let mismatched = row.try_get::<Option<i64>, _>(2).map_err(read)?;
            let expired = row.try_get::<Option<i64>, _>(3).map_err(read)?;
            if let Some(fence) = own {
                // Our own live grant (a retry after a lost reply): renew it
                // and hand the same token back.
                let lease = Lease::granted(req, token_from(fence)?, sent_at);
                return match self.extend(&lease, req.ttl).await {
                    Ok(renewed) => Ok(Some(renewed)),
                    // It expired between the read and the renewal: the next
                    // attempt grants afresh.
                    Err(Error::Lost { .. }) => Ok(None),
                    Err(err) => Err(err),
                };
            }
            if let Some(held) = mismatched.filter(|held| *held > 0) {
                return Err(mismatch(req, held));
            }
            if live.unwrap_or(0) >= values.permits {
                return Ok(None);
            }
            if expired.unwrap_or(0) > 0
                && let Some(purge) = &self.statements.purge
            {
                self.execute(purge, &values, "deleting expired permits")
                    .await?;
            }
        }
        for _ in 0..RACED_RETRIES {
            let rows = self.grant_resolving_conflicts(&values, doing).await?;
            let mut raced = false;
            for (fence, mismatched) in rows {
                if fence > 0 {
                    return Ok(Some(Lease::granted(req, token_from(fence)?, sent_at)));
                }
                if mismatched > 0 {
                    return Err(mismatch(req, mismatched));
                }
                raced = true;
            }
            if !raced {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// [`grant`](Self::grant), run again (up to [`CONFLICT_RETRIES`]
    /// times, after a short jittered pause) when the server rolled it back
    /// to resolve a deadlock or a serialization conflict (both servers
    /// may pick a grant as a deadlock victim, and the remedy is to run
    /// the transaction again; MySQL grants run at READ COMMITTED, without
    /// the gap locks that made grants of neighbouring new names deadlock
    /// in benchmark P6).
    async fn grant_resolving_conflicts(
        &self,
        values: &Values<'_>,
        doing: &'static str,
    ) -> Result<Vec<(i64, i64)>> {
        let mut pause =
            PollPolicy::new(Duration::from_millis(2), Duration::from_millis(50)).backoff();
        let mut conflicts = 0;
        loop {
            match self.grant(values, doing).await {
                Err(err) if conflicts < CONFLICT_RETRIES && is_conflict(&err) => {
                    conflicts += 1;
                    tracing::debug!(error = %err, conflicts, "a grant was rolled back by a conflict; running it again");
                    tokio::time::sleep(pause.next_delay()).await;
                }
                other => return other,
            }
        }
    }

    /// Runs the grant statements once, in one transaction (one batch where
    /// the dialect can): the rows `fence, mismatched_permits` of the last.
    async fn grant(&self, values: &Values<'_>, doing: &'static str) -> Result<Vec<(i64, i64)>> {
        let statements = &self.statements.grant;
        let Some((last, before)) = statements.split_last() else {
            return Err(Error::configuration(format!(
                "{}: the dialect has no grant statement",
                D::KIND
            )));
        };
        let mut lane = self.lane(doing).await?;
        if D::HAS_GRANT_BATCH {
            let conn = lane.conn().map_err(|e| classify::<D>(e, doing))?;
            let value = |p| values.get(p);
            let rows = match D::grant_batch(conn, statements, &value) {
                Some(batch) => Some(batch.await?),
                None => None,
            };
            if let Some(rows) = rows {
                // Kept only when the whole batch completed: a batch that
                // stopped half-way may have left its transaction open.
                lane.done();
                return Ok(rows);
            }
        }
        let conn = lane.conn().map_err(|e| classify::<D>(e, doing))?;
        let rows = if before.is_empty() {
            let result = Self::query(last, values).fetch_all(conn).await;
            lane.finish(&result);
            result.map_err(|e| classify::<D>(e, doing))?
        } else {
            let mut tx = sqlx::Connection::begin(conn)
                .await
                .map_err(|e| classify::<D>(e, doing))?;
            for statement in before {
                Self::query(statement, values)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| classify::<D>(e, doing))?;
            }
            let rows = Self::query(last, values)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| classify::<D>(e, doing))?;
            tx.commit().await.map_err(|e| classify::<D>(e, doing))?;
            lane.done();
            rows
        };
        rows.iter()
            .map(|row| {
                let read = |e| classify::<D>(e, "reading a grant");
                Ok((
                    row.try_get::<i64, _>(0).map_err(read)?,
                    row.try_get::<i64, _>(1).map_err(read)?,
                ))
            })
            .collect()
    }

    /// [`SqlOptions::queue_entry_ttl`] and the poll policy, for the queue
    /// (`queue.rs`).
    pub(crate) fn queue_timing(&self) -> (Duration, PollPolicy) {
        (self.queue_ttl, self.poll)
    }

    /// A FIFO waiter's wake-up subscription, with the push listener
    /// started; `None` without a push channel.
    ///
    /// # Errors
    /// Backend errors starting the listener.
    pub(crate) async fn subscribe_turn(
        &self,
        req: &AcquireRequest,
    ) -> Result<Option<TurnSubscription>> {
        match &self.wakeups {
            Some(wakeups) => Ok(Some(
                wakeups
                    .started()
                    .await?
                    .subscribe_turn(&req.name, &req.lease_id),
            )),
            None => Ok(None),
        }
    }

    /// A free lane of this backend's connections (`lanes.rs`).
    async fn lane(&self, doing: &'static str) -> Result<crate::lanes::Lane<'_, D::Db>> {
        self.lanes.get().await.map_err(|e| classify::<D>(e, doing))
    }

    /// Runs the dialect's one-statement renewal on a lane.
    async fn extend_many_statement(&self, batch: &[(Lease, Duration)]) -> Result<Vec<bool>> {
        let doing = "renewing leases";
        let mut lane = self.lane(doing).await?;
        let conn = lane.conn().map_err(|e| classify::<D>(e, doing))?;
        let Some(statement) = D::extend_many(conn, &self.table, batch) else {
            lane.done();
            return self.extend_in_one_transaction(batch).await;
        };
        let held = statement.await;
        if held.is_ok() {
            lane.done();
        }
        held
    }

    fn decode_info(row: &<D::Db as Database>::Row) -> Result<LockInfo> {
        let get_text = |i: usize| -> Result<String> {
            row.try_get::<String, _>(i)
                .map_err(|e| classify::<D>(e, "reading a lock row"))
        };
        let get_int = |i: usize| -> Result<i64> {
            row.try_get::<i64, _>(i)
                .map_err(|e| classify::<D>(e, "reading a lock row"))
        };
        let name = LockName::new(get_text(0)?)?;
        let lease_id = LeaseId::parse(&get_text(2)?)?;
        Ok(LockInfo::new(
            name,
            get_text(1)?,
            lease_id,
            token_from(get_int(3)?)?,
            system_time_from_millis(get_int(4)?),
            Some(system_time_from_millis(get_int(5)?)),
        )
        .with_permits(u32::try_from(get_int(6)?).unwrap_or(1)))
    }

    fn any_live(rows: &[<D::Db as Database>::Row]) -> Result<bool> {
        let mut live = false;
        for row in rows {
            live |= row
                .try_get::<i64, _>(0)
                .map_err(|e| classify::<D>(e, "reading a deleted row"))?
                == 1;
        }
        Ok(live)
    }
}

/// The error for `req` when live holders (or waiters) of its name asked
/// with `held` permits.
fn mismatch(req: &AcquireRequest, held: i64) -> Error {
    Error::permits_mismatch(
        &req.name,
        u32::try_from(held).unwrap_or(u32::MAX),
        req.permits,
    )
}

fn token_from(fence: i64) -> Result<FencingToken> {
    lockkit_core::spi::token_from_i64(fence, "sql")
}

#[async_trait]
impl<D> LockBackend for SqlBackend<D>
where
    D: Dialect,
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    for<'t> &'t str: Encode<'t, D::Db> + Type<D::Db>,
    for<'t> i64: Encode<'t, D::Db> + Type<D::Db>,
    for<'r> i64: Decode<'r, D::Db>,
    for<'r> String: Decode<'r, D::Db> + Type<D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
{
    fn kind(&self) -> &'static str {
        D::KIND
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = D::capabilities();
        capabilities.push_wakeup |= self.wakeups.is_some();
        capabilities.fifo = self.statements.queue.is_some();
        capabilities
    }

    fn queue(&self) -> Option<&dyn LockQueue> {
        self.statements
            .queue
            .is_some()
            .then_some(self as &dyn LockQueue)
    }

    async fn try_acquire(&self, req: &AcquireRequest) -> Result<Option<Lease>> {
        self.attempt(req, 0).await
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let sent_at = Instant::now();
        let values = self.values(
            lease.name.as_str(),
            &lease.owner,
            lease.lease_id.as_str(),
            ttl,
        );
        let doing = "extending a lease";
        let statement = &self.statements.extend;
        let held = match statement.outcome {
            Outcome::Rows => self
                .fetch_optional(statement, &values, doing)
                .await?
                .is_some(),
            Outcome::AffectedRows => {
                D::rows_affected(&self.execute(statement, &values, doing).await?) > 0
            }
        };
        if held {
            Ok(lease.renewed(ttl, sent_at))
        } else {
            Err(Error::lost(&lease.name, LostReason::NotHeld))
        }
    }

    /// Renewals due at once: the dialect's one-statement batch where it
    /// has one (Postgres, MySQL), else one transaction of extends on one
    /// connection (one commit, one log flush, one SQLite write lock).
    async fn extend_many(&self, batch: &[(Lease, Duration)]) -> Vec<Result<Lease>> {
        if batch.len() <= 1 {
            let mut results = Vec::with_capacity(batch.len());
            for (lease, ttl) in batch {
                results.push(self.extend(lease, *ttl).await);
            }
            return results;
        }
        let sent_at = Instant::now();
        let held = if D::HAS_EXTEND_MANY {
            self.extend_many_statement(batch).await
        } else {
            self.extend_in_one_transaction(batch).await
        };
        match held {
            Ok(held) => batch
                .iter()
                .zip(held.into_iter().chain(std::iter::repeat(false)))
                .map(|((lease, ttl), held)| {
                    if held {
                        Ok(lease.renewed(*ttl, sent_at))
                    } else {
                        Err(Error::lost(&lease.name, LostReason::NotHeld))
                    }
                })
                .collect(),
            Err(err) => {
                let message = err.to_string();
                let retryable = err.is_retryable();
                batch
                    .iter()
                    .map(|_| {
                        Err(if retryable {
                            Error::transient(D::KIND, message.clone(), None)
                        } else {
                            Error::backend(D::KIND, message.clone(), None)
                        })
                    })
                    .collect()
            }
        }
    }

    async fn abandon(&self, req: &AcquireRequest) -> Result<()> {
        let values = self.values(
            req.name.as_str(),
            &req.owner,
            req.lease_id.as_str(),
            Duration::ZERO,
        );
        let statement = self
            .statements
            .queue
            .as_ref()
            .map_or(&self.statements.release, |queue| &queue.leave);
        let deleted = self
            .delete(statement, &values, "abandoning an acquire")
            .await?;
        self.announce_if(deleted);
        Ok(())
    }

    fn abandon_in_background(&self, req: AcquireRequest) {
        lockkit_core::spi::spawn_abandon(self, req);
    }

    async fn release(&self, lease: &Lease) -> Result<bool> {
        let values = self.values(
            lease.name.as_str(),
            &lease.owner,
            lease.lease_id.as_str(),
            Duration::ZERO,
        );
        let deleted = self
            .delete(&self.statements.release, &values, "releasing a lease")
            .await?;
        if !deleted && let Some(expired) = &self.statements.release_expired {
            self.execute(expired, &values, "releasing an expired lease")
                .await?;
        }
        self.announce_if(deleted);
        Ok(deleted)
    }

    async fn holders(&self, name: &LockName) -> Result<Vec<LockInfo>> {
        let rows = self
            .fetch_all(
                &self.statements.current,
                &self.values(name.as_str(), "", "", Duration::ZERO),
                "reading a lock",
            )
            .await?;
        let mut infos = rows
            .iter()
            .map(Self::decode_info)
            .collect::<Result<Vec<_>>>()?;
        infos.sort_by_key(|info| info.token);
        Ok(infos)
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let rows = self
            .fetch_all(
                &self.statements.list,
                &self.values("", "", "", Duration::ZERO),
                "listing locks",
            )
            .await?;
        let mut infos = rows
            .iter()
            .map(Self::decode_info)
            .collect::<Result<Vec<_>>>()?;
        // Byte order, whatever the database's collation; a semaphore's
        // permits by token.
        infos.sort_by(|a, b| a.name.cmp(&b.name).then(a.token.cmp(&b.token)));
        Ok(infos)
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let deleted = self
            .delete(
                &self.statements.force_release,
                &self.values(name.as_str(), "", "", Duration::ZERO),
                "force-releasing a lock",
            )
            .await?;
        self.announce_if(deleted);
        Ok(deleted)
    }

    async fn cleanup_expired(&self) -> Result<u64> {
        let result = self
            .execute(
                &self.statements.cleanup,
                &self.values("", "", "", Duration::ZERO),
                "deleting expired locks",
            )
            .await?;
        Ok(D::rows_affected(&result))
    }

    async fn subscribe_releases(&self, name: &LockName) -> Result<Option<WakeSubscription>> {
        match &self.wakeups {
            Some(wakeups) => Ok(Some(wakeups.started().await?.subscribe_name(name))),
            None => Ok(None),
        }
    }

    fn poll_policy(&self) -> PollPolicy {
        self.poll
    }
}
