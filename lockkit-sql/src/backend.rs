//! The row-lease backend, written once for every dialect.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockkit_core::wait::PollPolicy;
use lockkit_core::{
    AcquireRequest, Capabilities, Error, FencingToken, Lease, LeaseId, LockBackend, LockInfo,
    LockName, LostReason, Result, system_time_from_millis, ttl_millis,
};
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type,
};
use tokio::time::Instant;

use crate::dialect::{Dialect, Param, Statement, Statements};
use crate::error::classify;
use crate::table::TableName;

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
}

impl Default for SqlOptions {
    fn default() -> Self {
        Self {
            table: TableName::default(),
            create_schema: true,
            poll: None,
        }
    }
}

/// The values bound to a statement.
struct Values<'a> {
    name: &'a str,
    owner: &'a str,
    lease_id: &'a str,
    ttl_ms: i64,
}

impl<'a> Values<'a> {
    fn name(name: &'a LockName) -> Self {
        Self {
            name: name.as_str(),
            owner: "",
            lease_id: "",
            ttl_ms: 0,
        }
    }
}

/// A lock table in a SQL database (see the [crate docs](crate)).
pub struct SqlBackend<D: Dialect> {
    pool: Pool<D::Db>,
    statements: Arc<Statements>,
    table: TableName,
    poll: PollPolicy,
    dialect: PhantomData<D>,
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
            statements: Arc::clone(&self.statements),
            table: self.table.clone(),
            poll: self.poll,
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
    /// A backend on an existing pool; creates the schema first if
    /// `options.create_schema` is set.
    ///
    /// # Errors
    /// Backend errors while creating the schema.
    pub async fn from_pool(pool: Pool<D::Db>, options: SqlOptions) -> Result<Self> {
        let backend = Self {
            statements: Arc::new(D::statements(&options.table)),
            table: options.table,
            poll: options.poll.unwrap_or_else(D::poll_policy),
            pool,
            dialect: PhantomData,
        };
        if options.create_schema {
            backend.create_schema().await?;
        }
        Ok(backend)
    }

    /// Creates the lock table, its fence table and trigger if missing.
    /// Idempotent and safe when several processes do it at once.
    ///
    /// # Errors
    /// Backend errors (for example, missing privileges).
    pub async fn create_schema(&self) -> Result<()> {
        for ddl in D::schema(&self.table) {
            sqlx::raw_sql(AssertSqlSafe(ddl))
                .execute(&self.pool)
                .await
                .map_err(|e| classify::<D>(e, "creating the lock table"))?;
        }
        Ok(())
    }

    /// The connection pool.
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
            query = match param {
                Param::Name => query.bind(values.name),
                Param::Owner => query.bind(values.owner),
                Param::LeaseId => query.bind(values.lease_id),
                Param::TtlMillis => query.bind(values.ttl_ms),
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
        Self::query(statement, values)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| classify::<D>(e, doing))
    }

    async fn fetch_all(
        &self,
        statement: &Statement,
        values: &Values<'_>,
        doing: &'static str,
    ) -> Result<Vec<<D::Db as Database>::Row>> {
        Self::query(statement, values)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| classify::<D>(e, doing))
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
        ))
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

fn token_from(fence: i64) -> Result<FencingToken> {
    u64::try_from(fence)
        .ok()
        .filter(|f| *f > 0)
        .map(FencingToken::new)
        .ok_or_else(|| {
            Error::backend(
                "sql",
                format!("invalid fence value {fence} in the lock table"),
                None,
            )
        })
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
        D::capabilities()
    }

    async fn try_acquire(&self, req: &AcquireRequest) -> Result<Option<Lease>> {
        let values = Values {
            name: req.name.as_str(),
            owner: &req.owner,
            lease_id: req.lease_id.as_str(),
            ttl_ms: ttl_millis(req.ttl),
        };
        let sent_at = Instant::now();
        let row = self
            .fetch_optional(&self.statements.acquire, &values, "acquiring a lock")
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let fence = row
            .try_get::<i64, _>(0)
            .map_err(|e| classify::<D>(e, "reading the fence"))?;
        Ok(Some(Lease::granted(req, token_from(fence)?, sent_at)))
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let values = Values {
            name: lease.name.as_str(),
            owner: &lease.owner,
            lease_id: lease.lease_id.as_str(),
            ttl_ms: ttl_millis(ttl),
        };
        let sent_at = Instant::now();
        match self
            .fetch_optional(&self.statements.extend, &values, "extending a lease")
            .await?
        {
            Some(_) => Ok(lease.renewed(ttl, sent_at)),
            None => Err(Error::Lost {
                name: lease.name.clone(),
                reason: LostReason::NotHeld,
            }),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool> {
        let values = Values {
            name: lease.name.as_str(),
            owner: &lease.owner,
            lease_id: lease.lease_id.as_str(),
            ttl_ms: 0,
        };
        let rows = self
            .fetch_all(&self.statements.release, &values, "releasing a lease")
            .await?;
        Self::any_live(&rows)
    }

    async fn current(&self, name: &LockName) -> Result<Option<LockInfo>> {
        self.fetch_optional(
            &self.statements.current,
            &Values::name(name),
            "reading a lock",
        )
        .await?
        .map(|row| Self::decode_info(&row))
        .transpose()
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let rows = self
            .fetch_all(&self.statements.list, &Values::name_free(), "listing locks")
            .await?;
        let mut infos = rows
            .iter()
            .map(Self::decode_info)
            .collect::<Result<Vec<_>>>()?;
        // Byte order, whatever the database's collation.
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let rows = self
            .fetch_all(
                &self.statements.force_release,
                &Values::name(name),
                "force-releasing a lock",
            )
            .await?;
        Self::any_live(&rows)
    }

    async fn cleanup_expired(&self) -> Result<u64> {
        let result = Self::query(&self.statements.cleanup, &Values::name_free())
            .execute(&self.pool)
            .await
            .map_err(|e| classify::<D>(e, "deleting expired locks"))?;
        Ok(D::rows_affected(&result))
    }

    fn poll_policy(&self) -> PollPolicy {
        self.poll
    }
}

impl Values<'static> {
    fn name_free() -> Self {
        Self {
            name: "",
            owner: "",
            lease_id: "",
            ttl_ms: 0,
        }
    }
}
