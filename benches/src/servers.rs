//! The backends under test: private servers started with the test
//! suites' fixtures (`lockkit-tests`), and per backend the subjects that
//! run on it.

use std::sync::Arc;
use std::time::Duration;

use lockkit_tests::etcd::EtcdCluster;
use lockkit_tests::redis::{RedisCluster, RedisConfig, RedisServer};
use lockkit_tests::zk::server::ZkServer;

use crate::probe::{Counter, Probe};
use crate::subject::{Result, Subject};
use crate::subjects::lockkit::LockkitSubject;
use crate::subjects::peers::{DlPostgres, DlRedis, Rslock};
use crate::subjects::raw_etcd::RawEtcd;
use crate::subjects::raw_redis::RawRedis;
use crate::subjects::raw_sql::{Dialect, PgAdvisory, RawRow};
use crate::subjects::raw_zk::RawZk;

/// Lease TTL of every subject that takes one.
pub const TTL: Duration = Duration::from_secs(30);

/// Every backend id, in report order.
pub const ALL: &[&str] = &[
    "memory",
    "sqlite",
    "postgres",
    "mariadb",
    "redis",
    "redis-unfair",
    "redis-cluster",
    "etcd",
    "zookeeper",
];

/// One backend and the subjects measured on it.
pub struct Backend {
    /// Short id (`redis-unfair`).
    pub id: &'static str,
    /// Heading in the report.
    pub label: String,
    /// lockkit on it (first) and the others.
    pub subjects: Vec<Arc<dyn Subject>>,
    /// The raw-command subject the ratios are taken against.
    pub raw: Option<Arc<dyn Subject>>,
    /// Round-trip measurement.
    pub probe: Probe,
    /// Server-side request counter (P6).
    pub counter: Option<Counter>,
    /// lockkit's subject (also first in `subjects`).
    pub lockkit: Arc<LockkitSubject>,
}

/// Servers kept alive for the whole run (killed on drop).
#[derive(Default)]
pub struct Servers {
    redis: Option<RedisServer>,
    cluster: Option<RedisCluster>,
    etcd: Option<EtcdCluster>,
    zk: Option<ZkServer>,
    dir: Option<tempfile::TempDir>,
}

impl Servers {
    /// Starts what backend `id` needs and describes it.
    pub async fn backend(&mut self, id: &'static str) -> Result<Backend> {
        let mut subjects: Vec<Arc<dyn Subject>> = Vec::new();
        let mut raw: Option<Arc<dyn Subject>> = None;
        let (label, url, probe, counter) = match id {
            "memory" => (
                "memory (in-process reference)".to_owned(),
                "memory://".to_owned(),
                Probe::None,
                None,
            ),
            "sqlite" => {
                if self.dir.is_none() {
                    self.dir = Some(tempfile::tempdir()?);
                }
                let dir = self.dir.as_ref().ok_or("temporary directory")?;
                let path = dir.path().join("bench.db");
                let url = format!("sqlite://{}", path.display());
                // Create the file through lockkit first (WAL mode, schema).
                drop(lockkit::connect(&url).await?);
                let raw_url = format!("sqlite://{}?mode=rwc", path.display());
                raw = Some(Arc::new(RawRow::new(&raw_url, Dialect::Sqlite, TTL).await?));
                (
                    "SQLite file".to_owned(),
                    url,
                    Probe::sql(&raw_url, Dialect::Sqlite),
                    None,
                )
            }
            "postgres" => {
                let base = lockkit_tests::postgres::server().url().to_owned();
                raw = Some(Arc::new(RawRow::new(&base, Dialect::Postgres, TTL).await?));
                subjects.push(Arc::new(PgAdvisory::new(&base)));
                subjects.push(Arc::new(DlPostgres::new(&base)));
                (
                    "Postgres".to_owned(),
                    format!("{base}?table=bench_locks"),
                    Probe::sql(&base, Dialect::Postgres),
                    Some(Counter::Postgres(base.clone())),
                )
            }
            "mariadb" => {
                let base = lockkit_tests::mysql::server().url().to_owned();
                raw = Some(Arc::new(RawRow::new(&base, Dialect::MySql, TTL).await?));
                (
                    "MariaDB".to_owned(),
                    format!("{base}?table=bench_locks"),
                    Probe::sql(&base, Dialect::MySql),
                    Some(Counter::MySql(base.clone())),
                )
            }
            "redis" | "redis-unfair" => {
                let base = self
                    .redis
                    .get_or_insert_with(|| RedisServer::start(RedisConfig::default()))
                    .url();
                raw = Some(Arc::new(RawRedis::standalone(&base, TTL)));
                let (label, url) = if id == "redis" {
                    subjects.push(Arc::new(Rslock::new(&base, TTL)));
                    subjects.push(Arc::new(DlRedis::new(&base)));
                    ("Redis (default: FIFO)", base.clone())
                } else {
                    ("Redis (unfair, fifo=false)", format!("{base}?fifo=false"))
                };
                (
                    label.to_owned(),
                    url,
                    Probe::Redis(RawRedis::standalone(&base, TTL)),
                    Some(Counter::Redis(vec![base.clone()])),
                )
            }
            "redis-cluster" => {
                let cluster = self.cluster.get_or_insert_with(RedisCluster::start);
                let nodes = cluster.node_urls();
                raw = Some(Arc::new(RawRedis::cluster(nodes.clone(), TTL)));
                (
                    "Redis Cluster (3 masters)".to_owned(),
                    cluster.url(),
                    // Round trips and the version from one node: a cluster
                    // client fans `PING`/`INFO` out to every node.
                    Probe::Redis(RawRedis::standalone(&nodes[0], TTL)),
                    Some(Counter::Redis(nodes)),
                )
            }
            "etcd" => {
                let etcd = self.etcd.get_or_insert_with(|| EtcdCluster::start(1, 500));
                let address = etcd.members()[0].address();
                let endpoint = address
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned();
                raw = Some(Arc::new(RawEtcd::new(vec![endpoint.clone()])));
                (
                    "etcd (1 member)".to_owned(),
                    etcd.url(),
                    Probe::Etcd(RawEtcd::new(vec![endpoint.clone()])),
                    Some(Counter::Etcd(endpoint)),
                )
            }
            "zookeeper" => {
                let zk = self.zk.get_or_insert_with(ZkServer::start);
                let hosts = zk.hosts();
                raw = Some(Arc::new(RawZk::new(&hosts).await?));
                (
                    "ZooKeeper (standalone)".to_owned(),
                    zk.url(),
                    Probe::Zk(RawZk::new(&hosts).await?),
                    Some(Counter::Zk(zk.port())),
                )
            }
            other => {
                return Err(format!("unknown backend {other:?}; known: {}", ALL.join(", ")).into());
            }
        };
        let lockkit = Arc::new(LockkitSubject::new(&url, TTL).await?);
        subjects.insert(0, lockkit.clone());
        if let Some(raw) = &raw {
            subjects.insert(1, Arc::clone(raw));
        }
        Ok(Backend {
            id,
            label,
            subjects,
            raw,
            probe,
            counter,
            lockkit,
        })
    }
}
