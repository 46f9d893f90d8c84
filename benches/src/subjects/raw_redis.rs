//! The raw Redis lock: `SET key owner NX PX ttl`, released by a
//! compare-and-delete script (`EVALSHA`), on the `redis` crate's
//! multiplexed (or cluster) connection — the floor for lockkit's Redis
//! backend.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Script};

use crate::subject::{Client, Family, Grant, Held, Result, Subject, retry_every_ms};

const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// Raw commands on a standalone server (`redis://…`) or a cluster (the
/// node URLs).
pub struct RawRedis {
    nodes: Vec<String>,
    cluster: bool,
    ttl: Duration,
}

impl RawRedis {
    /// Standalone server at `url`.
    pub fn standalone(url: &str, ttl: Duration) -> Self {
        Self {
            nodes: vec![url.to_owned()],
            cluster: false,
            ttl,
        }
    }

    /// Cluster reached through `nodes`.
    pub fn cluster(nodes: Vec<String>, ttl: Duration) -> Self {
        Self {
            nodes,
            cluster: true,
            ttl,
        }
    }

    /// One connection of this subject's kind.
    pub async fn connect(&self) -> Result<Conn> {
        if self.cluster {
            let client = redis::cluster::ClusterClient::new(self.nodes.clone())?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        } else {
            let client = redis::Client::open(self.nodes[0].as_str())?;
            Ok(Conn::Single(
                client.get_multiplexed_async_connection().await?,
            ))
        }
    }
}

/// A plain or cluster connection.
#[derive(Clone)]
pub enum Conn {
    /// Standalone server.
    Single(MultiplexedConnection),
    /// Redis Cluster.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Runs one command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        Ok(match self.clone() {
            Conn::Single(mut c) => cmd.query_async(&mut c).await?,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await?,
        })
    }

    async fn release(&self, key: &str, owner: &str) -> Result<i64> {
        let script = Script::new(RELEASE);
        let mut invocation = script.key(key);
        invocation.arg(owner);
        Ok(match self.clone() {
            Conn::Single(mut c) => invocation.invoke_async(&mut c).await?,
            Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await?,
        })
    }

    /// A round trip (`PING`).
    pub async fn ping(&self) -> Result<()> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }
}

#[async_trait]
impl Subject for RawRedis {
    fn label(&self) -> String {
        "raw SET NX PX + EVAL".into()
    }

    fn family(&self) -> Family {
        Family::Raw
    }

    fn can_wait(&self) -> bool {
        false
    }

    async fn client(&self) -> Result<Box<dyn Client>> {
        Ok(Box::new(RawRedisClient {
            conn: self.connect().await?,
            owner: crate::subjects::unique_owner(),
            ttl_ms: self.ttl.as_millis() as u64,
        }))
    }
}

struct RawRedisClient {
    conn: Conn,
    owner: String,
    ttl_ms: u64,
}

#[async_trait]
impl Client for RawRedisClient {
    async fn acquire(&self, lock: &str, wait: Duration) -> Result<Option<Grant>> {
        let key = format!("bench-raw:{{{lock}}}");
        retry_every_ms(wait, || async {
            let mut set = redis::cmd("SET");
            set.arg(&key)
                .arg(&self.owner)
                .arg("NX")
                .arg("PX")
                .arg(self.ttl_ms);
            let ok: Option<String> = self.conn.query(&set).await?;
            Ok(ok.map(|_| Grant {
                token: None,
                held: Box::new(RawRedisHeld {
                    conn: self.conn.clone(),
                    key: key.clone(),
                    owner: self.owner.clone(),
                }),
            }))
        })
        .await
    }
}

struct RawRedisHeld {
    conn: Conn,
    key: String,
    owner: String,
}

#[async_trait]
impl Held for RawRedisHeld {
    async fn release(self: Box<Self>) -> Result<()> {
        self.conn.release(&self.key, &self.owner).await?;
        Ok(())
    }
}
