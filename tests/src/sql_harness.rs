//! One harness for the SQL servers (Postgres, MariaDB): each harness uses
//! its own lock table on the shared server, created by the library, so
//! tests are isolated and every test also exercises schema creation.

use std::sync::Arc;

use async_trait::async_trait;
use lockkit_core::conformance::Harness;
use lockkit_core::{LockBackend, LockName};
use lockkit_sql::{SqlOptions, TableName};

/// Which SQL server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlKind {
    /// Postgres.
    #[cfg(feature = "postgres")]
    Postgres,
    /// MariaDB / MySQL.
    #[cfg(feature = "mysql")]
    MySql,
}

/// Clients of one fresh lock table on a shared SQL server.
#[derive(Debug)]
pub struct SqlHarness {
    kind: SqlKind,
    url: String,
    table: TableName,
    inspector: Arc<dyn LockBackend>,
    raw: Raw,
}

#[derive(Debug)]
enum Raw {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
}

/// A fresh table name, unique per harness.
pub fn fresh_table(tag: &str) -> TableName {
    TableName::new(&format!(
        "lk_{tag}_{:012x}",
        fastrand_u64() & 0xffff_ffff_ffff
    ))
    .expect("valid table name")
}

fn fastrand_u64() -> u64 {
    lockkit_core::LeaseId::random()
        .as_str()
        .get(..16)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or(0)
}

impl SqlHarness {
    /// A harness on a fresh table of the server of `kind`.
    ///
    /// # Panics
    /// When the server cannot be started or reached.
    pub async fn start(kind: SqlKind) -> Self {
        let url = match kind {
            #[cfg(feature = "postgres")]
            SqlKind::Postgres => crate::postgres::server().url().to_owned(),
            #[cfg(feature = "mysql")]
            SqlKind::MySql => crate::mysql::server().url().to_owned(),
        };
        let table = fresh_table("conf");
        let (inspector, raw): (Arc<dyn LockBackend>, Raw) = match kind {
            #[cfg(feature = "postgres")]
            SqlKind::Postgres => {
                let backend = lockkit_sql::postgres::connect_with(&url, options(&table))
                    .await
                    .expect("connect to Postgres");
                let raw = Raw::Postgres(backend.pool().clone());
                (Arc::new(backend), raw)
            }
            #[cfg(feature = "mysql")]
            SqlKind::MySql => {
                let backend = lockkit_sql::mysql::connect_with(&url, options(&table))
                    .await
                    .expect("connect to MariaDB");
                let raw = Raw::MySql(backend.pool().clone());
                (Arc::new(backend), raw)
            }
        };
        Self {
            kind,
            url,
            table,
            inspector,
            raw,
        }
    }

    /// Which server this harness uses.
    pub fn kind(&self) -> SqlKind {
        self.kind
    }

    /// The server URL (with password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This harness's lock table.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// A lockkit URL for this harness's table (`<server url>?table=<table>`).
    pub fn lockkit_url(&self) -> String {
        format!("{}?table={}", self.url, self.table)
    }

    /// A backend on this harness's table that is kept for inspection.
    pub fn inspector(&self) -> &Arc<dyn LockBackend> {
        &self.inspector
    }

    /// The raw Postgres pool, to inspect or manipulate server state.
    ///
    /// # Panics
    /// For another kind.
    #[cfg(feature = "postgres")]
    pub fn pg(&self) -> &sqlx::PgPool {
        match &self.raw {
            Raw::Postgres(pool) => pool,
            #[allow(unreachable_patterns)]
            _ => panic!("not a Postgres harness"),
        }
    }

    /// The raw MySQL pool, to inspect or manipulate server state.
    ///
    /// # Panics
    /// For another kind.
    #[cfg(feature = "mysql")]
    pub fn my(&self) -> &sqlx::MySqlPool {
        match &self.raw {
            Raw::MySql(pool) => pool,
            #[allow(unreachable_patterns)]
            _ => panic!("not a MySQL harness"),
        }
    }
}

fn options(table: &TableName) -> SqlOptions {
    SqlOptions {
        table: table.clone(),
        ..SqlOptions::default()
    }
}

#[async_trait]
impl Harness for SqlHarness {
    async fn client(&self) -> Arc<dyn LockBackend> {
        match self.kind {
            #[cfg(feature = "postgres")]
            SqlKind::Postgres => Arc::new(
                lockkit_sql::postgres::connect_with(&self.url, options(&self.table))
                    .await
                    .expect("connect a Postgres client"),
            ),
            #[cfg(feature = "mysql")]
            SqlKind::MySql => Arc::new(
                lockkit_sql::mysql::connect_with(&self.url, options(&self.table))
                    .await
                    .expect("connect a MariaDB client"),
            ),
        }
    }

    async fn leftovers(&self, name: &LockName) -> Vec<String> {
        let table = &self.table;
        let rows: Vec<(String, String, i64, String, i64)> = match &self.raw {
            #[cfg(feature = "postgres")]
            Raw::Postgres(pool) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT owner_id, lease_id, fence, expires_at::text, permits::bigint FROM \"{}\" \
                 WHERE lock_name = $1 ORDER BY fence",
                table.table()
            )))
            .bind(name.as_str())
            .fetch_all(pool)
            .await
            .expect("inspect the lock table"),
            #[cfg(feature = "mysql")]
            Raw::MySql(pool) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT owner_id, lease_id, fence, CAST(expires_at AS CHAR), CAST(permits AS SIGNED) FROM `{}` \
                 WHERE lock_name = ? ORDER BY fence",
                table.table()
            )))
            .bind(name.as_str())
            .fetch_all(pool)
            .await
            .expect("inspect the lock table"),
        };
        rows
            .into_iter()
            .map(|(owner, lease, fence, expires, permits)| {
                format!(
                    "row owner={owner:?} lease={lease:?} fence={fence} permits={permits} expires_at={expires}"
                )
            })
            .collect()
    }

    /// The name's counter in `<table>_fence`, incremented by every grant.
    async fn stored_fence(&self, name: &LockName) -> Option<u64> {
        let table = &self.table;
        let fence: Option<i64> = match &self.raw {
            #[cfg(feature = "postgres")]
            Raw::Postgres(pool) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT fence FROM \"{}_fence\" WHERE lock_name = $1",
                table.table()
            )))
            .bind(name.as_str())
            .fetch_optional(pool)
            .await
            .expect("inspect the fence table"),
            #[cfg(feature = "mysql")]
            Raw::MySql(pool) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT fence FROM `{}_fence` WHERE lock_name = ?",
                table.table()
            )))
            .bind(name.as_str())
            .fetch_optional(pool)
            .await
            .expect("inspect the fence table"),
        };
        fence.and_then(|f| u64::try_from(f).ok())
    }
}
