//! `connect(url)`: pick a backend at run time from a URL.

use std::sync::Arc;

use lockkit_core::memory::MemoryBackend;
use lockkit_core::spi::{BackendUrl, url_scheme};
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
/// Every backend rejects query parameters it does not know, naming the
/// valid ones.
///
/// # Errors
/// Before any I/O, [`Error::Configuration`] for a malformed URL (a single
/// slash after the scheme, an unencoded `/`, `?` or `#` in a password), an
/// unknown parameter, an unknown scheme, or a scheme whose cargo feature is
/// not compiled in (the message names the feature). Then
/// [`Error::Transient`] for an unreachable server and
/// [`Error::Configuration`] for refused credentials. Passwords never appear
/// in a message, whatever the URL looks like.
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
    match scheme.as_str() {
        "memory" => memory(url),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(lockkit_sql::sqlite::connect(url).await?)),
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(lockkit_sql::postgres::connect(url).await?)),
        #[cfg(feature = "mysql")]
        "mysql" | "mariadb" => Ok(Arc::new(lockkit_sql::mysql::connect(url).await?)),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(Arc::new(lockkit_redis::connect(url).await?)),
        #[cfg(feature = "etcd")]
        "etcd" | "etcds" => Ok(Arc::new(lockkit_etcd::connect(url).await?)),
        #[cfg(feature = "zookeeper")]
        "zk" | "zookeeper" => Ok(Arc::new(lockkit_zk::connect(url).await?)),
        _ => Err(Error::configuration(format!(
            "the `{feature}` backend is not implemented in lockkit {} yet (URL {:?})",
            env!("CARGO_PKG_VERSION"),
            redact_url(url)
        ))),
    }
}

/// `memory://` takes no host, path or parameters.
fn memory(url: &str) -> Result<Arc<dyn LockBackend>> {
    let parsed = BackendUrl::parse(url, "memory", &["memory"])?;
    parsed.check_params(&[])?;
    if !parsed.hosts().is_empty() || !parsed.path().is_empty() || parsed.as_str().contains('@') {
        return Err(parsed.error("memory:// takes no host, credentials or path"));
    }
    Ok(Arc::new(MemoryBackend::new()))
}

/// The scheme of `url`, lower-cased; the rest of the URL is the
/// backend's to check, so a password that confuses URL parsers cannot
/// end up in this message.
fn scheme_of(url: &str) -> Result<String> {
    url_scheme(url).ok_or_else(|| {
        Error::configuration(format!(
            "malformed lock backend URL {:?}: it does not start with a scheme such as sqlite:, postgres:// or redis://",
            redact_url(url)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_are_clear_and_redacted() {
        let err = connect("not a url").await.unwrap_err();
        assert!(matches!(err, Error::Configuration { .. }), "{err}");

        let err = connect("ftp://user:s3cret@host/x").await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unknown lock backend scheme"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");

        let err = connect("sqlite::memory:?table=bad-name").await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
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
    fn schemes_are_read_without_parsing() {
        assert_eq!(scheme_of("etcd://h1:2379,h2:2379").unwrap(), "etcd");
        assert_eq!(scheme_of("ZK://h1:1,h2:2/chroot").unwrap(), "zk");
        assert_eq!(scheme_of("sqlite::memory:").unwrap(), "sqlite");
        assert_eq!(scheme_of("postgres://u:Sup/3r@h/db").unwrap(), "postgres");
        assert!(scheme_of("//u:pw@h").is_err());
    }

    #[tokio::test]
    async fn memory_urls_take_nothing() {
        for url in ["memory://h", "memory://?x=1", "memory:/", "memory://u:pw@"] {
            let err = connect(url).await.unwrap_err();
            assert!(matches!(err, Error::Configuration { .. }), "{url}: {err}");
            assert!(!err.to_string().contains("pw"), "{err}");
        }
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
