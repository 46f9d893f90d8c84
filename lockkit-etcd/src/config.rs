//! Connection settings: the URL forms and [`EtcdOptions`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lockkit_core::spi::{BackendUrl, parse_host_list};
use lockkit_core::{Error, Result};

/// The key prefix used when neither the URL nor the options name one.
pub const DEFAULT_PREFIX: &str = "lockkit";

/// The URL schemes of the etcd backend (`etcds://` and `https://` are TLS).
pub const URL_SCHEMES: &[&str] = &["etcd", "etcds", "http", "https"];

/// The URL parameters an etcd URL may carry.
pub const URL_PARAMS: &[&str] = &[
    "prefix", "ca", "cert", "key", "domain", "user", "username", "password",
];

/// The port used for an endpoint given without one (etcd's client port).
pub const DEFAULT_PORT: u16 = 2379;

/// Options for [`connect_with`](crate::connect_with). Settings given here
/// win over the same settings in the URL.
///
/// ```
/// use std::time::Duration;
/// use lockkit_etcd::EtcdOptions;
///
/// let options = EtcdOptions::new()
///     .prefix("pipelines/locks")
///     .credentials("app", "s3cret")
///     .request_timeout(Duration::from_secs(3));
/// assert!(!format!("{options:?}").contains("s3cret"));
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct EtcdOptions {
    /// Key prefix under which locks live (default [`DEFAULT_PREFIX`]).
    pub prefix: Option<String>,
    /// User name and password for etcd's authentication.
    pub credentials: Option<(String, String)>,
    /// TLS settings; implies `https` endpoints (needs the `tls` feature).
    pub tls: Option<TlsFiles>,
    /// Time limit of one etcd request (default 5 s); a request that takes
    /// longer is a transient failure.
    pub request_timeout: Option<Duration>,
    /// Time limit for connecting and the first round trip (default 10 s).
    pub connect_timeout: Option<Duration>,
}

impl EtcdOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Sets the user name and password.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// Sets TLS files (and so `https` endpoints).
    pub fn tls(mut self, tls: TlsFiles) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the time limit of one request.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// Sets the time limit for connecting.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }
}

impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("prefix", &self.prefix)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(user, _)| (user, "***")),
            )
            .field("tls", &self.tls)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// PEM files for TLS: the CA that signed the servers' certificates and,
/// for client-certificate authentication, the client's certificate and key.
///
/// In a URL: `etcds://host:2379?ca=/path/ca.pem&cert=/path/client.pem&key=/path/client-key.pem&domain=etcd.example`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsFiles {
    /// CA certificate(s) to trust (PEM). Without it, the system roots.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), with [`key`](Self::key).
    pub cert: Option<PathBuf>,
    /// Client private key (PEM), with [`cert`](Self::cert).
    pub key: Option<PathBuf>,
    /// The server name to verify, when it differs from the endpoint host.
    pub domain: Option<String>,
}

impl TlsFiles {
    /// TLS trusting the CA in `ca` (PEM).
    pub fn with_ca(ca: impl Into<PathBuf>) -> Self {
        Self {
            ca: Some(ca.into()),
            ..Self::default()
        }
    }

    /// Adds a client certificate and key (PEM files).
    pub fn client_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// Sets the server name to verify.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }
}

/// Everything needed to connect, from the URL and the options together.
#[derive(Clone)]
pub(crate) struct Settings {
    /// `http://host:port` or `https://host:port`, one per member.
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// The URL with any password replaced, for messages.
    pub(crate) redacted: String,
}

impl Settings {
    /// Parses `url` and merges `options` over it.
    ///
    /// # Errors
    /// [`Error::Configuration`] for a malformed URL (password redacted).
    pub(crate) fn new(url: &str, options: EtcdOptions) -> Result<Self> {
        let parsed = BackendUrl::parse(url, "etcd", URL_SCHEMES)?;
        let redacted = parsed.redacted().to_owned();
        let bad = |why: &str| {
            Error::configuration(format!(
                "invalid etcd URL {redacted:?}: {why}; expected etcd://[user:password@]host:port[,host:port…][?prefix=…] or etcds://…?ca=…"
            ))
        };
        parsed.check_params(URL_PARAMS)?;
        let mut tls_from_url = match parsed.scheme() {
            "etcds" | "https" => Some(TlsFiles::default()),
            _ => None,
        };
        if !matches!(parsed.path(), "" | "/") {
            return Err(bad(
                "a path is not allowed; use ?prefix=… for the key prefix",
            ));
        }
        let mut credentials = match parsed.credentials()? {
            Some((user, password)) => {
                if user.is_empty() {
                    return Err(bad("empty user name"));
                }
                Some((user, password.unwrap_or_default()))
            }
            None => None,
        };
        let hostports = parse_host_list(parsed.hosts(), DEFAULT_PORT).map_err(|why| bad(&why))?;
        let mut prefix = None;
        for (key, value) in parsed.params() {
            match key.as_str() {
                "prefix" => prefix = Some(value),
                "ca" | "cert" | "key" | "domain" => {
                    let tls = tls_from_url.get_or_insert_with(TlsFiles::default);
                    match key.as_str() {
                        "ca" => tls.ca = Some(value.into()),
                        "cert" => tls.cert = Some(value.into()),
                        "key" => tls.key = Some(value.into()),
                        _ => tls.domain = Some(value),
                    }
                }
                "user" | "username" => {
                    let password = credentials.take().map(|(_, p)| p).unwrap_or_default();
                    credentials = Some((value, password));
                }
                // `check_params` let only the names in URL_PARAMS through.
                _ => {
                    let user = credentials.take().map(|(u, _)| u).unwrap_or_default();
                    credentials = Some((user, value));
                }
            }
        }
        let tls = options.tls.or(tls_from_url);
        let credentials = options.credentials.or(credentials);
        if credentials
            .as_ref()
            .is_some_and(|(user, _)| user.is_empty())
        {
            return Err(bad("a password needs a user name"));
        }
        if let Some(files) = &tls
            && files.cert.is_some() != files.key.is_some()
        {
            return Err(bad(
                "a client certificate needs its key and vice versa (cert=… and key=…)",
            ));
        }
        let http = if tls.is_some() { "https" } else { "http" };
        Ok(Self {
            endpoints: hostports
                .into_iter()
                .map(|h| format!("{http}://{h}"))
                .collect(),
            prefix: options
                .prefix
                .or(prefix)
                .unwrap_or_else(|| DEFAULT_PREFIX.to_owned()),
            credentials,
            tls,
            request_timeout: options.request_timeout.unwrap_or(Duration::from_secs(5)),
            connect_timeout: options.connect_timeout.unwrap_or(Duration::from_secs(10)),
            redacted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_cluster_and_auth_forms() {
        let s = Settings::new("etcd://h1:1,h2:2,h3", EtcdOptions::new()).unwrap();
        assert_eq!(
            s.endpoints,
            ["http://h1:1", "http://h2:2", "http://h3:2379"]
        );
        assert_eq!(s.prefix, DEFAULT_PREFIX);
        assert!(s.credentials.is_none() && s.tls.is_none());

        let s = Settings::new(
            "etcd://root:p%40ss@[::1]:2379/?prefix=team%2Flocks",
            EtcdOptions::new(),
        )
        .unwrap();
        assert_eq!(s.endpoints, ["http://[::1]:2379"]);
        assert_eq!(s.credentials, Some(("root".into(), "p@ss".into())));
        assert_eq!(s.prefix, "team/locks");
        assert!(!s.redacted.contains("p%40ss"), "{}", s.redacted);

        let s = Settings::new(
            "etcds://h:1?ca=/tmp/ca.pem&cert=/c&key=/k&domain=etcd.local",
            EtcdOptions::new().prefix("override"),
        )
        .unwrap();
        assert_eq!(s.endpoints, ["https://h:1"]);
        assert_eq!(s.prefix, "override");
        let tls = s.tls.unwrap();
        assert_eq!(tls.ca, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(tls.domain.as_deref(), Some("etcd.local"));
    }

    #[test]
    fn rejects_malformed_urls_without_leaking_passwords() {
        for url in [
            "etcd://root:hunter2@",
            "etcd://root:hunter2@h:notaport",
            "etcd://root:hunter2@h:1,,h:2",
            "etcd://root:hunter2@h:1/path",
            "etcd://root:hunter2@h:1?bogus=1",
            "etcd://root:hunter2@h:1?cert=/only-cert",
            "redis://root:hunter2@h:1",
            "etcd://:hunter2@h:1",
            "no scheme",
        ] {
            let err = Settings::new(url, EtcdOptions::new())
                .err()
                .unwrap_or_else(|| panic!("{url} must be rejected"));
            assert!(matches!(err, Error::Configuration { .. }), "{url}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
