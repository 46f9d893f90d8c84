//! Measurements taken beside the subjects: a backend's round trip (the
//! unit handoff latency is also given in) and server-side request counts
//! (P6).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::stats::Percentiles;
use crate::subject::Result;
use crate::subjects::raw_etcd::RawEtcd;
use crate::subjects::raw_redis::RawRedis;
use crate::subjects::raw_sql::{Dialect, SqlConn};
use crate::subjects::raw_zk::RawZk;

/// How to measure one round trip to a backend.
pub enum Probe {
    /// In-process: no round trip.
    None,
    /// `SELECT 1`.
    Sql(String, Dialect),
    /// `PING`.
    Redis(RawRedis),
    /// A range read of a missing key.
    Etcd(RawEtcd),
    /// `exists("/")`.
    Zk(RawZk),
}

impl Probe {
    /// `SELECT 1` on `url`.
    pub fn sql(url: &str, dialect: Dialect) -> Self {
        Self::Sql(url.to_owned(), dialect)
    }

    /// Percentiles of `samples` round trips on one connection (`None` for
    /// an in-process backend).
    pub async fn round_trip(&self, samples: usize) -> Result<Option<Percentiles>> {
        let mut times = Vec::with_capacity(samples);
        macro_rules! time {
            ($op:expr) => {{
                for i in 0..samples + samples / 10 {
                    let start = Instant::now();
                    $op;
                    if i >= samples / 10 {
                        times.push(start.elapsed());
                    }
                }
            }};
        }
        match self {
            Self::None => return Ok(None),
            Self::Sql(url, dialect) => {
                let conn = SqlConn::open(url, *dialect).await?;
                time!(conn.ping().await?)
            }
            Self::Redis(raw) => {
                let conn = raw.connect().await?;
                time!(conn.ping().await?)
            }
            Self::Etcd(raw) => {
                let mut kv = raw.connect().await?.kv_client();
                time!(kv.get("/bench-rtt", None).await?)
            }
            Self::Zk(raw) => {
                let client = raw.connect().await?;
                time!(client.check_stat("/").await?)
            }
        }
        Ok(Some(Percentiles::of(&times)))
    }
}

/// Where to count the requests a server has handled.
pub enum Counter {
    /// Script calls (`EVAL`, `EVALSHA`, `SCRIPT …`) in `INFO commandstats`,
    /// summed over these nodes: every lockkit request to Redis is one
    /// script call (the commands a script runs inside are counted by
    /// Redis too, but they are not requests).
    Redis(Vec<String>),
    /// Committed plus rolled-back transactions of the database
    /// (`pg_stat_database`): every statement outside a transaction is one.
    Postgres(String),
    /// `Questions` (statements sent by clients).
    MySql(String),
    /// Sum of `grpc_server_msg_received_total` (`/metrics` on the client
    /// port): every unary call and every stream message, keep-alives
    /// included.
    Etcd(String),
    /// `zk_packets_received` from `mntr`.
    Zk(u16),
}

impl Counter {
    /// What is counted, for the report.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Redis(_) => "script calls (EVAL/EVALSHA/SCRIPT) in INFO commandstats",
            Self::Postgres(_) => "pg_stat_database xact_commit + xact_rollback",
            Self::MySql(_) => "SHOW GLOBAL STATUS Questions",
            Self::Etcd(_) => "grpc_server_msg_received_total",
            Self::Zk(_) => "mntr zk_packets_received",
        }
    }

    /// How long after a burst of requests the server's count may still
    /// grow from it. Postgres 15+ backends publish their transaction counts
    /// when they go idle, but an idle backend holds them back for up to
    /// 10 s (`PGSTAT_IDLE_INTERVAL`): without waiting that out, the P6
    /// window counted the *acquires* of the locks as renewals (connections
    /// that took locks and then sat idle reported late).
    pub fn settle(&self) -> Duration {
        match self {
            Self::Postgres(_) => Duration::from_secs(11),
            _ => Duration::ZERO,
        }
    }

    /// The server's count now (it includes this read's own request).
    pub async fn read(&self) -> Result<f64> {
        match self {
            Self::Redis(nodes) => {
                let mut total = 0.0;
                for node in nodes {
                    let conn = RawRedis::standalone(node, Duration::from_secs(1))
                        .connect()
                        .await?;
                    let info: String = conn.query(redis::cmd("INFO").arg("commandstats")).await?;
                    total += info
                        .lines()
                        .filter(|line| {
                            line.starts_with("cmdstat_eval") || line.starts_with("cmdstat_script")
                        })
                        .filter_map(|line| {
                            let calls = line.split("calls=").nth(1)?;
                            calls.split(',').next()?.parse::<f64>().ok()
                        })
                        .sum::<f64>();
                }
                Ok(total)
            }
            Self::Postgres(url) => {
                let SqlConn::Postgres(conn) = SqlConn::open(url, Dialect::Postgres).await? else {
                    return Err("not a Postgres connection".into());
                };
                let mut conn = conn.lock().await;
                sqlx::query("SELECT pg_stat_clear_snapshot()")
                    .execute(&mut *conn)
                    .await?;
                let count: i64 = sqlx::query_scalar(
                    "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
                )
                .fetch_one(&mut *conn)
                .await?;
                Ok(count as f64)
            }
            Self::MySql(url) => {
                let SqlConn::MySql(conn) = SqlConn::open(url, Dialect::MySql).await? else {
                    return Err("not a MySQL connection".into());
                };
                let mut conn = conn.lock().await;
                let (_, value): (String, String) =
                    sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Questions'")
                        .fetch_one(&mut *conn)
                        .await?;
                Ok(value.parse()?)
            }
            Self::Etcd(endpoint) => {
                let body = http_get(endpoint, "/metrics")?;
                Ok(body
                    .lines()
                    .filter(|line| line.starts_with("grpc_server_msg_received_total"))
                    .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum())
            }
            Self::Zk(port) => {
                let mntr = lockkit_tests::zk::server::four_letter(*port, "mntr")
                    .ok_or("ZooKeeper did not answer mntr")?;
                mntr.lines()
                    .find_map(|line| line.strip_prefix("zk_packets_received"))
                    .ok_or("no zk_packets_received in mntr")?
                    .trim()
                    .parse::<f64>()
                    .map_err(Into::into)
            }
        }
    }
}

/// A plain HTTP/1.0 GET on loopback.
fn http_get(endpoint: &str, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(endpoint)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {endpoint}\r\n\r\n").as_bytes())?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

impl Probe {
    /// The server's version as it reports it (`None` in-process).
    pub async fn version(&self) -> Result<Option<String>> {
        Ok(Some(match self {
            Self::None => return Ok(None),
            Self::Sql(url, dialect) => {
                let sql = match dialect {
                    Dialect::Postgres => {
                        "SELECT 'PostgreSQL ' || current_setting('server_version')"
                    }
                    Dialect::MySql => "SELECT CONCAT('MariaDB/MySQL ', VERSION())",
                    Dialect::Sqlite => "SELECT 'SQLite ' || sqlite_version()",
                };
                match SqlConn::open(url, *dialect).await? {
                    SqlConn::Postgres(c) => {
                        sqlx::query_scalar(sql)
                            .fetch_one(&mut *c.lock().await)
                            .await?
                    }
                    SqlConn::MySql(c) => {
                        sqlx::query_scalar(sql)
                            .fetch_one(&mut *c.lock().await)
                            .await?
                    }
                    SqlConn::Sqlite(c) => {
                        sqlx::query_scalar(sql)
                            .fetch_one(&mut *c.lock().await)
                            .await?
                    }
                }
            }
            Self::Redis(raw) => {
                let info: String = raw
                    .connect()
                    .await?
                    .query(redis::cmd("INFO").arg("server"))
                    .await?;
                let version = info
                    .lines()
                    .find_map(|l| l.strip_prefix("redis_version:"))
                    .unwrap_or("?");
                format!("Redis {}", version.trim())
            }
            Self::Etcd(raw) => {
                let status = raw.connect().await?.maintenance_client().status().await?;
                format!("etcd {}", status.version())
            }
            Self::Zk(_) => return Ok(None),
        }))
    }
}
