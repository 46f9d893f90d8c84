//! Connections: one multiplexed, self-reconnecting command connection
//! (standalone or cluster) and the clients the pub/sub listener uses.

use std::collections::BTreeSet;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo,
};
use redis::{Cmd, RedisError, RedisFuture, RedisResult, Value};

use crate::options::ParsedUrl;

/// The command connection: a [`ConnectionManager`] for a standalone server
/// (reconnects by itself) or a [`ClusterConnection`] (follows `MOVED`,
/// refreshes the slot map, reconnects). Both multiplex: clones share one
/// socket per node, so concurrent requests pipeline.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Builds the clients and opens the command connection.
pub(crate) async fn open(url: &ParsedUrl) -> RedisResult<(Conn, Vec<redis::Client>)> {
    let options = &url.options;
    let seeds = url.seeds().map_err(|e| {
        RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "bad seed",
            e.to_string(),
        ))
    })?;
    let mut clients = Vec::with_capacity(seeds.len());
    for seed in &seeds {
        clients.push(client(seed.as_str(), options.tls_root_cert.as_deref())?);
    }
    let conn = if options.cluster {
        let mut builder = ClusterClientBuilder::new(seeds.iter().map(|u| u.as_str().to_owned()))
            .connection_timeout(options.connection_timeout)
            .response_timeout(options.response_timeout)
            .retries(2);
        if let Some(pem) = &options.tls_root_cert {
            builder = with_certs(builder, pem);
        }
        let cluster = builder.build()?.get_async_connection().await?;
        Conn::Cluster(cluster)
    } else {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connection_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(1);
        let first = clients.first().cloned().ok_or_else(|| {
            RedisError::from((redis::ErrorKind::InvalidClientConfig, "no Redis URL"))
        })?;
        Conn::Single(ConnectionManager::new_with_config(first, config).await?)
    };
    Ok((conn, clients))
}

#[cfg(feature = "tls")]
fn with_certs(builder: ClusterClientBuilder, pem: &[u8]) -> ClusterClientBuilder {
    builder.certs(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    })
}

#[cfg(not(feature = "tls"))]
fn with_certs(builder: ClusterClientBuilder, _pem: &[u8]) -> ClusterClientBuilder {
    builder
}

/// A client for one node, trusting `root_cert` for TLS when given.
fn client(url: &str, root_cert: Option<&[u8]>) -> RedisResult<redis::Client> {
    #[cfg(feature = "tls")]
    if let Some(pem) = root_cert {
        install_crypto_provider();
        return redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        );
    }
    #[cfg(feature = "tls")]
    if url.starts_with("rediss:") {
        install_crypto_provider();
    }
    let _ = root_cert;
    redis::Client::open(url)
}

/// Makes rustls's `ring` provider the process default when none is set, so
/// TLS works even if another crate in the build enables a second provider.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The keys matching `pattern` on every node that holds data (the server
/// itself, or every cluster master), with `SCAN` (never `KEYS`).
pub(crate) async fn scan_all(conn: &Conn, pattern: &str) -> RedisResult<BTreeSet<Vec<u8>>> {
    let mut keys = BTreeSet::new();
    match conn {
        Conn::Single(c) => {
            let mut c = c.clone();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<Vec<u8>>) =
                    scan_cmd(cursor, pattern).query_async(&mut c).await?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Conn::Cluster(c) => {
            let mut c = c.clone();
            // One PING to every master tells us their addresses.
            let masters = c
                .route_command(
                    redis::cmd("PING"),
                    RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllMasters,
                        Some(ResponsePolicy::Special),
                    )),
                )
                .await?;
            let addresses: Vec<String> = match masters {
                Value::Map(pairs) => pairs
                    .into_iter()
                    .filter_map(|(addr, _)| redis::from_redis_value::<String>(addr).ok())
                    .collect(),
                other => {
                    return Err(RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "unexpected reply listing cluster masters",
                        format!("{other:?}"),
                    )));
                }
            };
            for address in addresses {
                let Some((host, port)) = address
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
                else {
                    continue;
                };
                let mut cursor: u64 = 0;
                loop {
                    let reply = c
                        .route_command(
                            scan_cmd(cursor, pattern),
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port,
                            }),
                        )
                        .await?;
                    let (next, batch): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
    }
    Ok(keys)
}

fn scan_cmd(cursor: u64, pattern: &str) -> Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(1000);
    cmd
}
