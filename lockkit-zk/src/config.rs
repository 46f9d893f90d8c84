//! Connection settings: [`ZkOptions`] and the `zk://` URL they are read from.

use std::fmt;
use std::time::Duration;

use lockkit_core::spi::{BackendUrl, parse_host_list};
use lockkit_core::{Error, Result};
use percent_encoding::percent_decode_str;

/// The port ZooKeeper listens on when a URL names none.
pub const DEFAULT_PORT: u16 = 2181;

/// Settings of a ZooKeeper backend. Build with [`ZkOptions::default`] and
/// the setters; URL query parameters override them (see [`connect_with`]).
///
/// | field | URL parameter | default |
/// |---|---|---|
/// | [`session_timeout`](Self::session_timeout) | `session_timeout_ms` | 10 s |
/// | [`root`](Self::root) | `root` | `/lockkit` |
/// | [`expiry_margin`](Self::expiry_margin) | `expiry_margin_ms` | 100 ms |
/// | [`connect_timeout`](Self::connect_timeout) | `connect_timeout_ms` | 10 s |
/// | [`detached`](Self::detached) | — | `false` |
///
/// [`connect_with`]: crate::connect_with
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZkOptions {
    /// The ZooKeeper session timeout asked for; the server clamps it to
    /// `[minSessionTimeout, maxSessionTimeout]` (by default 2–20 ×
    /// `tickTime`). It bounds how long a crashed client's nodes stay (its
    /// waiters keep their place for at most this long) and how long a
    /// disconnected client may keep claiming its leases: every lease is
    /// reported lost once no reply came from the server for 2/3 of it.
    pub session_timeout: Duration,
    /// The node under which lockkit keeps its data (below the chroot):
    /// `<root>/locks/<encoded name>/<lease nodes>` and `<root>/clock`.
    pub root: String,
    /// Extra time, beyond a lease's TTL by the server's clock, before a
    /// contender treats an unrenewed lease as expired. Covers clock skew
    /// between ZooKeeper servers after a leader change.
    pub expiry_margin: Duration,
    /// How long [`connect`](crate::connect) tries to reach the ensemble.
    pub connect_timeout: Duration,
    /// Leave the session open when the backend is dropped (its nodes then
    /// live until the session times out, as if the process had crashed).
    /// For tests and hand-over; normally `false`, so dropping the backend
    /// closes the session and frees its nodes at once.
    pub detached: bool,
}

impl Default for ZkOptions {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(10),
            root: "/lockkit".to_owned(),
            expiry_margin: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(10),
            detached: false,
        }
    }
}

impl ZkOptions {
    /// The same options with another session timeout.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// The same options with another root node.
    pub fn root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// The same options with another expiry margin.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.expiry_margin = margin;
        self
    }

    /// The same options with another connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The same options with the session detached (see [`Self::detached`]).
    pub fn detached(mut self, detached: bool) -> Self {
        self.detached = detached;
        self
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`Error::Configuration`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        validate_path(&self.root, "root")?;
        if self.session_timeout < Duration::from_millis(100)
            || self.session_timeout > Duration::from_secs(3600)
        {
            return Err(Error::configuration(format!(
                "session timeout {:?} is out of range (100 ms ..= 1 h)",
                self.session_timeout
            )));
        }
        if self.expiry_margin > Duration::from_secs(60) {
            return Err(Error::configuration(format!(
                "expiry margin {:?} is over 60 s",
                self.expiry_margin
            )));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::configuration("connect timeout must not be zero"));
        }
        Ok(())
    }
}

/// Digest credentials (`user:password` in the URL).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password (never printed).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

impl Credentials {
    /// The payload of a `digest` auth packet: `user:password`.
    pub fn digest(&self) -> Vec<u8> {
        format!("{}:{}", self.user, self.password).into_bytes()
    }
}

/// The URL schemes of the ZooKeeper backend.
pub const URL_SCHEMES: &[&str] = &["zk", "zookeeper"];

/// The URL parameters a ZooKeeper URL may carry.
pub const URL_PARAMS: &[&str] = &[
    "session_timeout_ms",
    "expiry_margin_ms",
    "connect_timeout_ms",
    "root",
];

/// A parsed `zk://` / `zookeeper://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkUrl {
    /// `host:port,host:port` as the ZooKeeper client wants it.
    pub hosts: String,
    /// The chroot path, if any (`/apps/locks`).
    pub chroot: Option<String>,
    /// Digest credentials, if any.
    pub credentials: Option<Credentials>,
    /// The options after applying the URL's query parameters.
    pub options: ZkOptions,
    /// The URL with its password replaced by `***`, for messages.
    pub redacted: String,
}

impl ZkUrl {
    /// Parses `zk://[user:password@]host[:port][,host[:port]…][/chroot][?param=value&…]`
    /// (also `zookeeper://`), applying query parameters on top of `base`.
    ///
    /// # Errors
    /// [`Error::Configuration`] for anything malformed (wrong scheme, no
    /// host, bad port, bad chroot, unknown or bad parameter); the message
    /// carries the URL with its password redacted.
    ///
    /// ```
    /// use lockkit_zk::{ZkOptions, ZkUrl};
    ///
    /// let url = ZkUrl::parse("zk://app:s3cret@zk1:2181,zk2/locks?session_timeout_ms=4000", ZkOptions::default())?;
    /// assert_eq!(url.hosts, "zk1:2181,zk2:2181");
    /// assert_eq!(url.chroot.as_deref(), Some("/locks"));
    /// assert_eq!(url.credentials.as_ref().map(|c| c.user.as_str()), Some("app"));
    /// assert_eq!(url.options.session_timeout, std::time::Duration::from_secs(4));
    /// assert_eq!(url.redacted, "zk://app:***@zk1:2181,zk2/locks?session_timeout_ms=4000");
    /// # Ok::<(), lockkit_core::Error>(())
    /// ```
    pub fn parse(url: &str, base: ZkOptions) -> Result<Self> {
        let parsed = BackendUrl::parse(url, "ZooKeeper", URL_SCHEMES)?;
        let redacted = parsed.redacted().to_owned();
        let bad =
            |why: &str| Error::configuration(format!("invalid ZooKeeper URL {redacted:?}: {why}"));
        if parsed.fragment().is_some() {
            return Err(bad("fragments are not allowed"));
        }
        parsed.check_params(URL_PARAMS)?;
        let credentials = match parsed.credentials()? {
            None => None,
            Some((_, None)) => return Err(bad("credentials must be user:password")),
            Some((user, Some(password))) => {
                if user.is_empty() || user.contains(':') {
                    return Err(bad("the user name must be non-empty and contain no ':'"));
                }
                Some(Credentials { user, password })
            }
        };
        let hosts = parse_host_list(parsed.hosts(), DEFAULT_PORT)
            .map_err(|why| bad(&why))?
            .join(",");
        let chroot = match parsed.path() {
            "" | "/" => None,
            p => {
                let decoded = decode(p).map_err(|_| bad("the chroot is not valid UTF-8"))?;
                validate_path(&decoded, "chroot").map_err(|e| bad(&e.to_string()))?;
                Some(decoded)
            }
        };
        let mut options = base;
        for (key, value) in parsed.params() {
            let millis = || {
                value
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| bad(&format!("`{key}` must be a whole number of milliseconds")))
            };
            match key.as_str() {
                "session_timeout_ms" => options.session_timeout = millis()?,
                "expiry_margin_ms" => options.expiry_margin = millis()?,
                "connect_timeout_ms" => options.connect_timeout = millis()?,
                // `check_params` let only the names in URL_PARAMS through.
                _ => options.root = value.clone(),
            }
        }
        options
            .validate()
            .map_err(|e| bad(&e.to_string().replace("configuration error: ", "")))?;
        Ok(Self {
            hosts,
            chroot,
            credentials,
            options,
            redacted,
        })
    }
}

fn decode(s: &str) -> std::result::Result<String, std::str::Utf8Error> {
    percent_decode_str(s).decode_utf8().map(|c| c.into_owned())
}

/// Checks a ZooKeeper path used as chroot or root: absolute, no trailing
/// `/`, no empty, `.` or `..` segment, no control characters.
fn validate_path(path: &str, what: &str) -> Result<()> {
    let bad = |why: &str| Error::configuration(format!("bad {what} {path:?}: {why}"));
    let Some(rest) = path.strip_prefix('/') else {
        return Err(bad("it must start with '/'"));
    };
    if rest.is_empty() {
        return Err(bad("it must name a node below '/'"));
    }
    for segment in rest.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(bad("empty, '.' and '..' segments are not allowed"));
        }
        if segment.chars().any(|c| c.is_control()) {
            return Err(bad("control characters are not allowed"));
        }
    }
    if rest == "zookeeper" || rest.starts_with("zookeeper/") {
        return Err(bad("/zookeeper is reserved by the server"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<ZkUrl> {
        ZkUrl::parse(url, ZkOptions::default())
    }

    #[test]
    fn parses_hosts_chroot_credentials_and_params() {
        let url = parse("zookeeper://u%40x:p%3Aw@a:1,b,[::1]:3/x/y?root=/r&expiry_margin_ms=5")
            .expect("valid");
        assert_eq!(url.hosts, "a:1,b:2181,[::1]:3");
        assert_eq!(url.chroot.as_deref(), Some("/x/y"));
        let creds = url.credentials.expect("credentials");
        assert_eq!(creds.user, "u@x");
        assert_eq!(creds.password, "p:w");
        assert_eq!(url.options.root, "/r");
        assert_eq!(url.options.expiry_margin, Duration::from_millis(5));
        assert!(!format!("{creds:?}").contains("p:w"));
    }

    #[test]
    fn rejects_bad_urls_with_password_redacted() {
        for bad in [
            "redis://h",
            "zk://",
            "zk://u:hunter2@",
            "zk://u:hunter2@h:0",
            "zk://u:hunter2@h:99999",
            "zk://u:hunter2@h,/x",
            "zk://u:hunter2@h/x/",
            "zk://u:hunter2@h/x//y",
            "zk://u:hunter2@h/../y",
            "zk://u:hunter2@h/zookeeper",
            "zk://u:hunter2@h?nope=1",
            "zk://u:hunter2@h?session_timeout_ms=abc",
            "zk://u:hunter2@h?session_timeout_ms=1",
            "zk://u:hunter2@h?root=relative",
            "zk://u:hunter2@h:1:2",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(matches!(err, Error::Configuration { .. }), "{bad}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{bad}: {err}");
        }
    }
}
