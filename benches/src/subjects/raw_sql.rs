//! Raw SQL locks with `sqlx`, one connection per client:
//! - a lock row: one upsert that takes a free or expired row, one
//!   `DELETE` by owner (Postgres, SQLite); `INSERT IGNORE` on MariaDB,
//!   which has no conditional upsert that reports whether it took the row
//!   (expired rows are not taken over there — enough for the uncontended
//!   floor, P1 and P5, where no row is ever expired);
//! - `pg_advisory_lock` / `pg_advisory_unlock`: Postgres's own lock
//!   manager, a server-side FIFO queue — the floor for waiting too.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{Connection, Executor, MySqlConnection, PgConnection, SqliteConnection};
use tokio::sync::Mutex;

use crate::subject::{Client, Family, Grant, Held, Result, Subject, retry_every_ms};

/// Which database a raw row lock talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MariaDB / MySQL.
    MySql,
    /// SQLite (a file).
    Sqlite,
}

const TABLE: &str = "bench_raw_locks";

/// A lock row per name: upsert to take, delete to release.
pub struct RawRow {
    url: String,
    dialect: Dialect,
    ttl: Duration,
}

impl RawRow {
    /// Creates the table (if missing) at `url`.
    pub async fn new(url: &str, dialect: Dialect, ttl: Duration) -> Result<Self> {
        let ddl = match dialect {
            Dialect::Postgres => format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL)"
            ),
            Dialect::MySql => format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (name VARCHAR(255) PRIMARY KEY, owner VARCHAR(64) NOT NULL, expires_at DATETIME(3) NOT NULL)"
            ),
            Dialect::Sqlite => format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_ms INTEGER NOT NULL)"
            ),
        };
        let conn = SqlConn::open(url, dialect).await?;
        conn.execute(&ddl, &[]).await?;
        Ok(Self {
            url: url.to_owned(),
            dialect,
            ttl,
        })
    }
}

/// One connection of any dialect.
pub enum SqlConn {
    /// PostgreSQL.
    Postgres(Mutex<PgConnection>),
    /// MariaDB / MySQL.
    MySql(Mutex<MySqlConnection>),
    /// SQLite.
    Sqlite(Mutex<SqliteConnection>),
}

impl SqlConn {
    /// Opens a connection.
    pub async fn open(url: &str, dialect: Dialect) -> Result<Self> {
        Ok(match dialect {
            Dialect::Postgres => Self::Postgres(Mutex::new(PgConnection::connect(url).await?)),
            Dialect::MySql => Self::MySql(Mutex::new(MySqlConnection::connect(url).await?)),
            Dialect::Sqlite => {
                let conn = SqliteConnection::connect(url).await?;
                let conn = Mutex::new(conn);
                let this = Self::Sqlite(conn);
                this.execute("PRAGMA busy_timeout = 5000", &[]).await?;
                this
            }
        })
    }

    /// Runs `sql` with text/integer parameters; the rows it affected.
    pub async fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        macro_rules! run {
            ($conn:expr) => {{
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
                for arg in args {
                    query = match *arg {
                        Arg::Text(text) => query.bind(text.to_owned()),
                        Arg::Int(int) => query.bind(int),
                    };
                }
                let mut conn = $conn.lock().await;
                conn.execute(query).await?.rows_affected()
            }};
        }
        Ok(match self {
            Self::Postgres(c) => run!(c),
            Self::MySql(c) => run!(c),
            Self::Sqlite(c) => run!(c),
        })
    }

    /// A round trip (`SELECT 1`).
    pub async fn ping(&self) -> Result<()> {
        self.execute("SELECT 1", &[]).await?;
        Ok(())
    }
}

/// A statement parameter.
#[derive(Clone, Copy)]
pub enum Arg<'a> {
    /// Text.
    Text(&'a str),
    /// 64-bit integer.
    Int(i64),
}

#[async_trait]
impl Subject for RawRow {
    fn label(&self) -> String {
        match self.dialect {
            Dialect::MySql => "raw INSERT IGNORE + DELETE".into(),
            _ => "raw upsert + DELETE".into(),
        }
    }

    fn family(&self) -> Family {
        Family::Raw
    }

    fn can_wait(&self) -> bool {
        false
    }

    async fn client(&self) -> Result<Box<dyn Client>> {
        Ok(Box::new(RawRowClient {
            conn: Arc::new(SqlConn::open(&self.url, self.dialect).await?),
            dialect: self.dialect,
            owner: crate::subjects::unique_owner(),
            ttl_ms: self.ttl.as_millis() as i64,
        }))
    }
}

struct RawRowClient {
    conn: Arc<SqlConn>,
    dialect: Dialect,
    owner: String,
    ttl_ms: i64,
}

impl RawRowClient {
    async fn try_once(&self, lock: &str) -> Result<Option<Grant>> {
        let (sql, args) = match self.dialect {
            Dialect::Postgres => (
                format!(
                    "INSERT INTO {TABLE} (name, owner, expires_at) VALUES ($1, $2, now() + $3 * interval '1 millisecond') \
                     ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at \
                     WHERE {TABLE}.expires_at < now()"
                ),
                vec![
                    Arg::Text(lock),
                    Arg::Text(&self.owner),
                    Arg::Int(self.ttl_ms),
                ],
            ),
            Dialect::MySql => (
                format!(
                    "INSERT IGNORE INTO {TABLE} (name, owner, expires_at) VALUES (?, ?, NOW(3) + INTERVAL ? * 1000 MICROSECOND)"
                ),
                vec![
                    Arg::Text(lock),
                    Arg::Text(&self.owner),
                    Arg::Int(self.ttl_ms),
                ],
            ),
            Dialect::Sqlite => {
                let now = unix_ms();
                (
                    format!(
                        "INSERT INTO {TABLE} (name, owner, expires_ms) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_ms = excluded.expires_ms \
                         WHERE {TABLE}.expires_ms < ?4"
                    ),
                    vec![
                        Arg::Text(lock),
                        Arg::Text(&self.owner),
                        Arg::Int(now + self.ttl_ms),
                        Arg::Int(now),
                    ],
                )
            }
        };
        if self.conn.execute(&sql, &args).await? == 0 {
            return Ok(None);
        }
        Ok(Some(Grant {
            token: None,
            held: Box::new(RawRowHeld {
                conn: Arc::clone(&self.conn),
                dialect: self.dialect,
                lock: lock.to_owned(),
                owner: self.owner.clone(),
            }),
        }))
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[async_trait]
impl Client for RawRowClient {
    async fn acquire(&self, lock: &str, wait: Duration) -> Result<Option<Grant>> {
        retry_every_ms(wait, || self.try_once(lock)).await
    }
}

struct RawRowHeld {
    conn: Arc<SqlConn>,
    dialect: Dialect,
    lock: String,
    owner: String,
}

#[async_trait]
impl Held for RawRowHeld {
    async fn release(self: Box<Self>) -> Result<()> {
        let sql = match self.dialect {
            Dialect::Postgres => format!("DELETE FROM {TABLE} WHERE name = $1 AND owner = $2"),
            _ => format!("DELETE FROM {TABLE} WHERE name = ? AND owner = ?"),
        };
        self.conn
            .execute(&sql, &[Arg::Text(&self.lock), Arg::Text(&self.owner)])
            .await?;
        Ok(())
    }
}

/// `pg_advisory_lock` on a session of its own per client; waiting is
/// Postgres's lock queue, bounded with `lock_timeout`.
pub struct PgAdvisory {
    url: String,
}

impl PgAdvisory {
    /// Subject on the Postgres server at `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
        }
    }
}

#[async_trait]
impl Subject for PgAdvisory {
    fn label(&self) -> String {
        "raw pg_advisory_lock".into()
    }

    fn family(&self) -> Family {
        Family::Raw
    }

    fn note(&self) -> Option<String> {
        Some(
            "session-level advisory lock; waits in the server's FIFO lock queue (lock_timeout)"
                .into(),
        )
    }

    async fn client(&self) -> Result<Box<dyn Client>> {
        Ok(Box::new(PgAdvisoryClient {
            conn: Arc::new(SqlConn::open(&self.url, Dialect::Postgres).await?),
            timeout_ms: Mutex::new(None),
        }))
    }
}

struct PgAdvisoryClient {
    conn: Arc<SqlConn>,
    /// The `lock_timeout` this session has now.
    timeout_ms: Mutex<Option<i64>>,
}

/// The advisory-lock key of a name (FNV-1a, 64 bits).
fn advisory_key(lock: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in lock.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

#[async_trait]
impl Client for PgAdvisoryClient {
    async fn acquire(&self, lock: &str, wait: Duration) -> Result<Option<Grant>> {
        let key = advisory_key(lock);
        if wait.is_zero() {
            let SqlConn::Postgres(conn) = &*self.conn else {
                return Err("advisory locks need Postgres".into());
            };
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut *conn.lock().await)
                .await?;
            return Ok(got.then(|| advisory_grant(&self.conn, key)));
        }
        let ms = wait.as_millis().max(1) as i64;
        {
            let mut current = self.timeout_ms.lock().await;
            if *current != Some(ms) {
                self.conn
                    .execute(&format!("SET lock_timeout = {ms}"), &[])
                    .await?;
                *current = Some(ms);
            }
        }
        match self
            .conn
            .execute("SELECT pg_advisory_lock($1)", &[Arg::Int(key)])
            .await
        {
            Ok(_) => Ok(Some(advisory_grant(&self.conn, key))),
            Err(e) if e.to_string().contains("lock timeout") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn advisory_grant(conn: &Arc<SqlConn>, key: i64) -> Grant {
    Grant {
        token: None,
        held: Box::new(PgAdvisoryHeld {
            conn: Arc::clone(conn),
            key,
        }),
    }
}

struct PgAdvisoryHeld {
    conn: Arc<SqlConn>,
    key: i64,
}

#[async_trait]
impl Held for PgAdvisoryHeld {
    async fn release(self: Box<Self>) -> Result<()> {
        self.conn
            .execute("SELECT pg_advisory_unlock($1)", &[Arg::Int(self.key)])
            .await?;
        Ok(())
    }
}
