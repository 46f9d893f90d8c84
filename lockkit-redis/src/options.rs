//! Backend settings and the URL parameters that set them.

use std::time::Duration;

use lockkit_core::spi::BackendUrl;
use lockkit_core::spi::PollPolicy;
use lockkit_core::{Error, Result};
use url::Url;

use crate::keys::KeyPrefix;

/// Settings of a [`RedisBackend`](crate::RedisBackend).
///
/// Every field can also be set from the URL (see [`connect`](crate::connect));
/// URL parameters override what is set here.
///
/// ```
/// use std::time::Duration;
/// use lockkit_redis::{KeyPrefix, RedisOptions};
///
/// let options = RedisOptions::default()
///     .prefix(KeyPrefix::new("etl:")?)
///     .fifo(false)
///     .response_timeout(Duration::from_secs(1));
/// assert!(!options.fifo);
/// # Ok::<(), lockkit_core::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Namespace of every key and channel (default `lockkit:`).
    pub prefix: KeyPrefix,
    /// Fair mode (default `true`): waiters queue in Redis and are granted
    /// in arrival order. `false` (URL `fifo=false`) is the unfair mode:
    /// after a release whichever client tries first wins — usually the
    /// releaser itself, so under steady contention waiters starve (measured
    /// in `docs/benchmarks/`: Jain 0.36 at 16 contenders, acquires timing
    /// out); it suits locks that are rarely contended and must never wait
    /// for a dead waiter's queue entry to expire.
    pub fifo: bool,
    /// Talk to a Redis Cluster (default `false`).
    pub cluster: bool,
    /// More cluster seed nodes (`host:port`) besides the URL's host.
    pub cluster_nodes: Vec<String>,
    /// FIFO mode: how long a waiter's queue entry lives without being
    /// refreshed, i.e. how long a waiter that died blocks the queue at most
    /// (default 3 s; live waiters refresh it at least every third of it).
    pub queue_entry_ttl: Duration,
    /// How long one command may take before it fails as transient
    /// (default 2 s).
    pub response_timeout: Duration,
    /// How long connecting may take (default 2 s).
    pub connection_timeout: Duration,
    /// How waiters poll when no release message arrives (a message lost
    /// during a reconnect, or a holder whose lease simply expired).
    pub poll: PollPolicy,
    /// Wake waiters by pub/sub (default `true`). Turn off where the ACL
    /// forbids `PSUBSCRIBE`; waiters then only poll.
    pub pubsub: bool,
    /// Report fencing tokens as durable across server restarts
    /// ([`Capabilities::durable_tokens`](lockkit_core::Capabilities)).
    /// Set it only when every server runs `appendonly yes` with
    /// `appendfsync always` and no replica can be promoted with a stale
    /// counter (default `false`).
    pub durable_tokens: bool,
    /// PEM root certificate(s) to trust for `rediss://` instead of the
    /// system's store (URL: `tls_ca_file=/path/ca.pem`).
    pub tls_root_cert: Option<Vec<u8>>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: KeyPrefix::default(),
            fifo: true,
            cluster: false,
            cluster_nodes: Vec::new(),
            queue_entry_ttl: Duration::from_secs(3),
            response_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(2),
            poll: PollPolicy::default(),
            pubsub: true,
            durable_tokens: false,
            tls_root_cert: None,
        }
    }
}

impl RedisOptions {
    /// Sets [`prefix`](Self::prefix).
    pub fn prefix(mut self, prefix: KeyPrefix) -> Self {
        self.prefix = prefix;
        self
    }

    /// Sets [`fifo`](Self::fifo).
    pub fn fifo(mut self, fifo: bool) -> Self {
        self.fifo = fifo;
        self
    }

    /// Sets [`cluster`](Self::cluster).
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// Sets [`cluster_nodes`](Self::cluster_nodes).
    pub fn cluster_nodes(mut self, nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.cluster_nodes = nodes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`queue_entry_ttl`](Self::queue_entry_ttl).
    pub fn queue_entry_ttl(mut self, ttl: Duration) -> Self {
        self.queue_entry_ttl = ttl;
        self
    }

    /// Sets [`response_timeout`](Self::response_timeout).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets [`connection_timeout`](Self::connection_timeout).
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Sets [`poll`](Self::poll).
    pub fn poll(mut self, poll: PollPolicy) -> Self {
        self.poll = poll;
        self
    }

    /// Sets [`pubsub`](Self::pubsub).
    pub fn pubsub(mut self, pubsub: bool) -> Self {
        self.pubsub = pubsub;
        self
    }

    /// Sets [`durable_tokens`](Self::durable_tokens).
    pub fn durable_tokens(mut self, durable: bool) -> Self {
        self.durable_tokens = durable;
        self
    }

    /// Sets [`tls_root_cert`](Self::tls_root_cert) (PEM bytes).
    pub fn tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert = Some(pem.into());
        self
    }

    /// Checks the values that have bounds.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a zero timeout or a queue entry TTL
    /// under 30 ms.
    pub fn validate(&self) -> Result<()> {
        if self.queue_entry_ttl < Duration::from_millis(30) {
            return Err(Error::invalid_input(format!(
                "queue_entry_ttl must be at least 30 ms, got {:?}",
                self.queue_entry_ttl
            )));
        }
        if self.response_timeout.is_zero() || self.connection_timeout.is_zero() {
            return Err(Error::invalid_input(
                "Redis timeouts must be greater than zero".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The URL schemes of the Redis backend (`rediss://` is TLS).
pub const URL_SCHEMES: &[&str] = &["redis", "rediss"];

/// The URL parameters a Redis URL may carry: lockkit's, then the `redis`
/// crate's (`protocol`).
pub const URL_PARAMS: &[&str] = &[
    "prefix",
    "fifo",
    "cluster",
    "nodes",
    "queue_ttl_ms",
    "timeout_ms",
    "durable_tokens",
    "pubsub",
    "tls_ca_file",
    "protocol",
];

/// A parsed `redis://` / `rediss://` URL: the options it sets and the URLs
/// handed to the `redis` crate (lockkit's own parameters removed).
#[derive(Debug, Clone)]
pub(crate) struct ParsedUrl {
    /// The URL for the client (scheme, credentials, host, db, TLS fragment).
    pub(crate) driver: Url,
    /// The options after applying the URL's parameters.
    pub(crate) options: RedisOptions,
    /// The URL with its password replaced, for messages.
    pub(crate) redacted: String,
}

impl ParsedUrl {
    /// Parses `url` and applies its lockkit parameters to `options`:
    /// `prefix`, `fifo`, `cluster`, `nodes` (comma-separated `host:port`),
    /// `queue_ttl_ms`, `timeout_ms`, `durable_tokens`, `pubsub`, `tls_ca_file`;
    /// `protocol` goes to the `redis` crate; anything else is rejected.
    ///
    /// # Errors
    /// [`Error::Configuration`] for a malformed URL, another scheme, an
    /// unknown parameter or an unreadable CA file; [`Error::InvalidInput`]
    /// for invalid values.
    pub(crate) fn parse(url: &str, mut options: RedisOptions) -> Result<Self> {
        // Shape and parameters first, without any parser that could be
        // confused by an unencoded character in a password.
        let checked = BackendUrl::parse(url, "redis", URL_SCHEMES)?;
        checked.check_params(URL_PARAMS)?;
        let redacted = checked.redacted().to_owned();
        let mut driver = Url::parse(url).map_err(|e| Error::Configuration {
            message: format!("malformed Redis URL {redacted:?}: {e}"),
            source: Some(Box::new(e)),
        })?;
        if !matches!(driver.scheme(), "redis" | "rediss") {
            return Err(Error::configuration(format!(
                "the Redis backend takes redis:// or rediss:// URLs, not {redacted:?}"
            )));
        }
        if driver.host_str().is_none_or(str::is_empty) {
            return Err(Error::configuration(format!(
                "the Redis URL {redacted:?} has no host"
            )));
        }
        let mut passthrough = Vec::new();
        let pairs: Vec<(String, String)> = driver
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (key, value) in pairs {
            match key.as_str() {
                "prefix" => options.prefix = KeyPrefix::new(&value)?,
                "fifo" => options.fifo = parse_bool(&key, &value)?,
                "cluster" => options.cluster = parse_bool(&key, &value)?,
                "durable_tokens" => options.durable_tokens = parse_bool(&key, &value)?,
                "pubsub" => options.pubsub = parse_bool(&key, &value)?,
                "nodes" => {
                    options.cluster_nodes = value
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                "queue_ttl_ms" => {
                    options.queue_entry_ttl = Duration::from_millis(parse_u64(&key, &value)?);
                }
                "timeout_ms" => {
                    options.response_timeout = Duration::from_millis(parse_u64(&key, &value)?);
                }
                "tls_ca_file" => {
                    let pem = std::fs::read(&value).map_err(|e| Error::Configuration {
                        message: format!(
                            "cannot read the CA file {value:?} named in {redacted:?}: {e}"
                        ),
                        source: Some(Box::new(e)),
                    })?;
                    options.tls_root_cert = Some(pem);
                }
                _ => passthrough.push((key, value)),
            }
        }
        if passthrough.is_empty() {
            driver.set_query(None);
        } else {
            driver.query_pairs_mut().clear().extend_pairs(passthrough);
        }
        options.validate()?;
        for node in &options.cluster_nodes {
            node_url(&driver, node)?;
        }
        Ok(Self {
            driver,
            options,
            redacted,
        })
    }

    /// The seed URLs: the URL's host first, then the extra cluster nodes,
    /// all with the same scheme, credentials and parameters.
    pub(crate) fn seeds(&self) -> Result<Vec<Url>> {
        let mut seeds = vec![self.driver.clone()];
        for node in &self.options.cluster_nodes {
            seeds.push(node_url(&self.driver, node)?);
        }
        Ok(seeds)
    }

    /// The URL's password, to scrub from messages that might echo it.
    pub(crate) fn password(&self) -> Option<String> {
        self.driver
            .password()
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
    }
}

/// `base` pointed at `node` (`host:port`).
fn node_url(base: &Url, node: &str) -> Result<Url> {
    let bad = || Error::invalid_input(format!("invalid cluster node {node:?}: expected host:port"));
    let (host, port) = node.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let mut url = base.clone();
    url.set_host(Some(host)).map_err(|_| bad())?;
    url.set_port(Some(port)).map_err(|()| bad())?;
    Ok(url)
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::invalid_input(format!(
            "URL parameter {key}={value:?} must be true or false"
        ))),
    }
}

fn parse_u64(key: &str, value: &str) -> Result<u64> {
    value.parse().map_err(|e| {
        Error::invalid_input_from(
            format!("URL parameter {key}={value:?} must be a whole number"),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockkit_params_are_taken_out() {
        let parsed = ParsedUrl::parse(
            "redis://app:s3cret@h:7000/2?prefix=etl:&fifo=1&cluster=true&nodes=h:7001,h2:7002&protocol=resp3",
            RedisOptions::default(),
        )
        .unwrap();
        assert_eq!(parsed.options.prefix.as_str(), "etl:");
        assert!(parsed.options.fifo && parsed.options.cluster);
        assert_eq!(
            parsed.driver.as_str(),
            "redis://app:s3cret@h:7000/2?protocol=resp3"
        );
        let seeds: Vec<String> = parsed
            .seeds()
            .unwrap()
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(
            seeds,
            [
                "redis://app:s3cret@h:7000/2?protocol=resp3",
                "redis://app:s3cret@h:7001/2?protocol=resp3",
                "redis://app:s3cret@h2:7002/2?protocol=resp3"
            ]
        );
        assert_eq!(parsed.password().as_deref(), Some("s3cret"));
        assert!(!parsed.redacted.contains("s3cret"));
    }

    #[test]
    fn bad_urls_are_configuration_errors_without_secrets() {
        for url in [
            "http://u:hunter2@h",
            "redis://u:hunter2@",
            "not a url hunter2",
        ] {
            let err = ParsedUrl::parse(url, RedisOptions::default()).unwrap_err();
            assert!(matches!(err, Error::Configuration { .. }), "{url}: {err}");
            assert!(
                !err.to_string().contains("hunter2") || url.starts_with("not"),
                "{err}"
            );
        }
        for url in [
            "redis://h?prefix=a{b}",
            "redis://h?fifo=maybe",
            "redis://h?nodes=nope",
            "redis://h?queue_ttl_ms=1",
        ] {
            let err = ParsedUrl::parse(url, RedisOptions::default()).unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }), "{url}: {err}");
        }
    }
}
