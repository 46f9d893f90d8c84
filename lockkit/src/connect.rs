//! `connect(url)`: pick a backend at run time from a URL.

use std::sync::Arc;

use lockkit_core::memory::MemoryBackend;
use lockkit_core::{Error, LockBackend, Result, redact_url};

/// The URL schemes lockkit understands, the cargo feature each needs, and
/// whether this build has it.
pub const SCHEMES: &[(&str, &str, bool)] = &[
    ("memory", "(always)", true),
    ("sqlite", "sqlite", cfg!(feature = "sqlite")),
    ("postgres", "postgres", cfg!(feature = "postgres")),
    ("postgresql", "postgres", cfg!(feature = "postgres")),
    ("mysql", "mysql", cfg!(feature = "mysql")),
    ("mariadb", "mysql", cfg!(feature = "mysql")),
    ("redis", "redis", cfg!(feature = "redis")),
    ("rediss", "redis", cfg!(feature = "redis")),
    ("etcd", "etcd", cfg!(feature = "etcd")),
    ("etcds", "etcd", cfg!(feature = "etcd")),
    ("zk", "zookeeper", cfg!(feature = "zookeeper")),
    ("zookeeper", "zookeeper", cfg!(feature = "zookeeper")),
];

/// Query parameters lockkit reads itself (the rest go to the driver).
const LOCKKIT_PARAMS: &[&str] = &["table"];

/// Connects to the backend a URL names and returns it as a shared trait
/// object, ready for [`Locker::new`](crate::Locker::new).
///
/// | URL | backend | feature |
/// |---|---|---|
/// | `memory://` | in-process reference backend | always |
/// | `sqlite:///abs/path.db`, `sqlite://rel.db`, `sqlite::memory:` | SQLite | `sqlite` (default) |
/// | `postgres://…`, `mysql://…` | SQL rows | `postgres`, `mysql` |
/// | `redis://[user:pass@]host:port[/db]`, `rediss://…` (`?cluster=true&nodes=h2:p2,…`, `?fifo=true`, `?prefix=…`) | Redis, Redis Cluster | `redis` |
/// | `etcd://[user:pass@]h1:2379[,h2:2379…]`, `etcds://…?ca=…` (TLS: feature `etcd-tls`) | etcd | `etcd` |
/// | `zk://[user:pass@]h1:2181[,h2:2181…][/chroot]`, `zookeeper://…` | ZooKeeper | `zookeeper` |
///
/// SQL URLs take `?table=<name>` (default `locks`; `schema.table` allowed).
///
/// # Errors
/// [`Error::Configuration`] for a malformed URL, an unknown scheme, or a
/// scheme whose cargo feature is not compiled in (the message names the
/// feature); any password in the URL is replaced by `***`. Backend errors
/// while connecting.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lockkit::Result<()> {
/// let backend = lockkit::connect("sqlite::memory:").await?;
/// assert_eq!(backend.kind(), "sqlite");
///
/// let err = lockkit::connect("nosuch://user:hunter2@host").await.unwrap_err();
/// assert!(!err.to_string().contains("hunter2"));
/// # Ok(())
/// # }
/// ```
pub async fn connect(url: &str) -> Result<Arc<dyn LockBackend>> {
    let scheme = scheme_of(url)?;
    let Some(&(_, feature, compiled)) = SCHEMES.iter().find(|(s, _, _)| *s == scheme) else {
        let known: Vec<&str> = SCHEMES.iter().map(|(s, _, _)| *s).collect();
        return Err(Error::configuration(format!(
            "unknown lock backend scheme {scheme:?} in {:?}; known schemes: {}",
            redact_url(url),
            known.join(", ")
        )));
    };
    if !compiled {
        return Err(Error::configuration(format!(
            "the URL {:?} needs the `{feature}` feature of the `lockkit` crate, which this build does not include; \
             enable it with `lockkit = {{ version = \"{}\", features = [\"{feature}\"] }}`",
            redact_url(url),
            env!("CARGO_PKG_VERSION"),
        )));
    }
    let (driver_url, params) = split_params(url);
    match scheme.as_str() {
        "memory" => Ok(Arc::new(MemoryBackend::new())),
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let options = sql_options(&params)?;
            Ok(Arc::new(
                lockkit_sql::sqlite::connect_with(&driver_url, options).await?,
            ))
        }
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => {
            let options = sql_options(&params)?;
            Ok(Arc::new(
                lockkit_sql::postgres::connect_with(&driver_url, options).await?,
            ))
        }
        #[cfg(feature = "mysql")]
        "mysql" | "mariadb" => {
            let options = sql_options(&params)?;
            Ok(Arc::new(
                lockkit_sql::mysql::connect_with(&driver_url, options).await?,
            ))
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(Arc::new(lockkit_redis::connect(url).await?)),
        #[cfg(feature = "etcd")]
        "etcd" | "etcds" => Ok(Arc::new(lockkit_etcd::connect(url).await?)),
        #[cfg(feature = "zookeeper")]
        "zk" | "zookeeper" => Ok(Arc::new(lockkit_zk::connect(url).await?)),
        _ => {
            let _ = (driver_url, params);
            Err(Error::configuration(format!(
                "the `{feature}` backend is not implemented in lockkit {} yet (URL {:?})",
                env!("CARGO_PKG_VERSION"),
                redact_url(url)
            )))
        }
    }
}

/// The scheme of `url`, lower-cased. URLs that may name several hosts
/// (`etcd://h1:2379,h2:2379`, `zk://h1:2181,h2:2181/chroot`) are not valid
/// for a URL parser, so their scheme is read directly; every other URL must
/// parse.
fn scheme_of(url: &str) -> Result<String> {
    const MULTI_HOST: &[&str] = &["etcd", "etcds", "zk", "zookeeper"];
    if let Some((scheme, _)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if MULTI_HOST.contains(&scheme.as_str()) {
            return Ok(scheme);
        }
    }
    let parsed = url::Url::parse(url).map_err(|e| Error::Configuration {
        message: format!("malformed lock backend URL {:?}: {e}", redact_url(url)),
        source: Some(Box::new(e)),
    })?;
    Ok(parsed.scheme().to_ascii_lowercase())
}

/// Splits lockkit's own query parameters off `url`, returning the URL for
/// the driver and the parameters.
fn split_params(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if LOCKKIT_PARAMS.contains(&key) {
            ours.push((key.to_owned(), value.to_owned()));
        } else {
            theirs.push(pair);
        }
    }
    let mut driver = base.to_owned();
    if !theirs.is_empty() {
        driver.push('?');
        driver.push_str(&theirs.join("&"));
    }
    if let Some(fragment) = fragment {
        driver.push('#');
        driver.push_str(fragment);
    }
    (driver, ours)
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
fn sql_options(params: &[(String, String)]) -> Result<lockkit_sql::SqlOptions> {
    let mut options = lockkit_sql::SqlOptions::default();
    for (key, value) in params {
        if key == "table" {
            options.table = lockkit_sql::TableName::new(value)?;
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lockkit_params() {
        let (driver, ours) = split_params("sqlite:///tmp/x.db?table=ops.locks&mode=rwc");
        assert_eq!(driver, "sqlite:///tmp/x.db?mode=rwc");
        assert_eq!(ours, vec![("table".to_owned(), "ops.locks".to_owned())]);
        let (driver, ours) = split_params("sqlite::memory:");
        assert_eq!(driver, "sqlite::memory:");
        assert!(ours.is_empty());
    }

    #[tokio::test]
    async fn errors_are_clear_and_redacted() {
        let err = connect("not a url").await.unwrap_err();
        assert!(matches!(err, Error::Configuration { .. }), "{err}");

        let err = connect("ftp://user:s3cret@host/x").await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown lock backend scheme"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");

        let err = connect("sqlite::memory:?table=bad-name").await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn missing_feature_is_named() {
        let err = connect("redis://:pw@localhost:6379").await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`redis` feature"), "{msg}");
        assert!(!msg.contains(":pw@"), "{msg}");
    }

    #[test]
    fn multi_host_urls_have_a_scheme() {
        assert_eq!(scheme_of("etcd://h1:2379,h2:2379").unwrap(), "etcd");
        assert_eq!(scheme_of("ZK://h1:1,h2:2/chroot").unwrap(), "zk");
        assert_eq!(scheme_of("sqlite::memory:").unwrap(), "sqlite");
        assert!(scheme_of("postgres://h1:1,h2:2/db").is_err());
    }

    #[tokio::test]
    async fn memory_and_sqlite_connect() {
        assert_eq!(connect("memory://").await.unwrap().kind(), "memory");
        #[cfg(feature = "sqlite")]
        assert_eq!(
            connect("sqlite::memory:?table=other_locks")
                .await
                .unwrap()
                .kind(),
            "sqlite"
        );
    }
}
