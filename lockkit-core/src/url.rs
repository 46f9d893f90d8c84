//! Backend URLs, checked before any I/O: see [`BackendUrl`].

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::redact::{redact_url, split_prefix};

/// A backend URL split into its parts, checked before any I/O.
///
/// Every server backend takes `scheme://[user[:password]@]hosts[/path][?params]`;
/// this type splits that shape once, for all of them, so the same rules
/// and the same error messages apply everywhere:
///
/// - the scheme must be followed by `//` (`postgres:/u:pw@h/db` is
///   rejected, not half-parsed into a different URL);
/// - the credentials end at the **last** `@`; if they would contain `/`,
///   `?` or `#` (an unencoded character in a generated password, or an `@`
///   in a parameter value) the URL is ambiguous and rejected, with a hint
///   to percent-encode;
/// - unknown query parameters are rejected, naming the parameter and the
///   valid ones ([`check_params`](Self::check_params));
/// - every message carries the URL through [`redact_url`], never the
///   password, and never a fragment of the credentials.
///
/// ```
/// use lockkit_core::spi::BackendUrl;
///
/// let url = BackendUrl::parse("redis://app:s3cr%2Ft@h:6379/2?fifo=true", "redis", &["redis", "rediss"])?;
/// assert_eq!(url.scheme(), "redis");
/// assert_eq!(url.hosts(), "h:6379");
/// assert_eq!(url.path(), "/2");
/// assert_eq!(url.credentials()?, Some(("app".to_owned(), Some("s3cr/t".to_owned()))));
/// assert_eq!(url.redacted(), "redis://app:***@h:6379/2?fifo=true");
/// url.check_params(&["fifo", "prefix"])?;
///
/// let err = url.check_params(&["prefix"]).unwrap_err();
/// assert!(err.to_string().contains("unknown parameter `fifo`"));
///
/// // One slash, or a password with an unencoded '/': rejected, password hidden.
/// let err = BackendUrl::parse("redis:/:pw@h", "redis", &["redis"]).unwrap_err();
/// assert!(!err.to_string().contains("pw"));
/// let err = BackendUrl::parse("redis://u:Sup/3rS3cret@h", "redis", &["redis"]).unwrap_err();
/// assert!(!format!("{err:?}").contains("3rS3cret"));
/// # Ok::<(), lockkit_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BackendUrl<'a> {
    raw: &'a str,
    backend: &'static str,
    scheme: String,
    userinfo: Option<&'a str>,
    hosts: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
    redacted: String,
}

/// The scheme of `url`, lower-cased, if it starts with one (`"postgres"`
/// for `postgres://…`, `"sqlite"` for `sqlite::memory:`). Nothing else of
/// the URL is looked at.
pub fn url_scheme(url: &str) -> Option<String> {
    let (prefix, _) = split_prefix(url);
    let scheme = prefix.trim_end_matches('/').strip_suffix(':')?;
    Some(scheme.to_ascii_lowercase())
}

/// The decoded query parameters of any URL, in order (`+` and `%20` are
/// spaces). The query starts at the first `?` after the last `@`, and ends
/// at `#`.
///
/// ```
/// assert_eq!(
///     lockkit_core::spi::url_params("sqlite:///x.db?table=ops.locks&mode=rwc"),
///     [("table".to_owned(), "ops.locks".to_owned()), ("mode".to_owned(), "rwc".to_owned())]
/// );
/// ```
pub fn url_params(url: &str) -> Vec<(String, String)> {
    split_query(url)
        .1
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// `url` without the query parameters named in `drop` (for handing the
/// rest to a driver); everything else stays byte for byte.
///
/// ```
/// assert_eq!(
///     lockkit_core::spi::without_params("sqlite:///x.db?table=t&mode=rwc#f", &["table"]),
///     "sqlite:///x.db?mode=rwc#f"
/// );
/// ```
pub fn without_params(url: &str, drop: &[&str]) -> String {
    let (base, query, fragment) = split_query(url);
    let Some(query) = query else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !pair.is_empty() && !drop.contains(&key)
        })
        .collect();
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// `(before the query, query, fragment)`; the query begins at the first `?`
/// after the last `@`.
fn split_query(url: &str) -> (&str, Option<&str>, Option<&str>) {
    let host_start = url.rfind('@').map_or(0, |at| at + 1);
    let (head, fragment) = match url[host_start..].find('#') {
        Some(i) => (&url[..host_start + i], Some(&url[host_start + i + 1..])),
        None => (url, None),
    };
    match head[host_start..].find('?') {
        Some(i) => (
            &head[..host_start + i],
            Some(&head[host_start + i + 1..]),
            fragment,
        ),
        None => (head, None, fragment),
    }
}

impl<'a> BackendUrl<'a> {
    /// Splits `url` for `backend` (a name for messages: `"postgres"`),
    /// whose schemes are `schemes` (lower-case).
    ///
    /// # Errors
    /// [`Error::Configuration`] (with the URL redacted) when the scheme is
    /// missing or not one of `schemes`, when it is not followed by `//`,
    /// or when the credentials would contain `/`, `?` or `#`.
    pub fn parse(url: &'a str, backend: &'static str, schemes: &[&str]) -> Result<Self> {
        let redacted = redact_url(url);
        let expected = schemes
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(" or ");
        let bad = |why: String| {
            Error::configuration(format!("malformed {backend} URL {redacted:?}: {why}"))
        };
        let scheme = url_scheme(url).ok_or_else(|| {
            bad(format!(
                "it does not start with a scheme; expected {expected}"
            ))
        })?;
        if !schemes.contains(&scheme.as_str()) {
            return Err(bad(format!(
                "the {backend} backend takes {expected} URLs, not {scheme}:"
            )));
        }
        let rest = url
            .get(scheme.len() + 1..)
            .and_then(|r| r.strip_prefix("//"))
            .ok_or_else(|| {
                bad(format!(
                    "the scheme must be followed by two slashes ({scheme}://…)"
                ))
            })?;
        let (userinfo, after) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        if userinfo.is_some_and(|u| u.contains(['/', '?', '#', '\\'])) {
            return Err(bad(
                "the part before the last '@' must be user[:password]; percent-encode '/', '?', \
                 '#' and '@' in user names, passwords and parameter values (%2F, %3F, %23, %40)"
                    .to_owned(),
            ));
        }
        let (after, fragment) = match after.split_once('#') {
            Some((a, f)) => (a, Some(f)),
            None => (after, None),
        };
        let (after, query) = match after.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (after, None),
        };
        let (hosts, path) = match after.find('/') {
            Some(slash) => after.split_at(slash),
            None => (after, ""),
        };
        Ok(Self {
            raw: url,
            backend,
            scheme,
            userinfo,
            hosts,
            path,
            query,
            fragment,
            redacted,
        })
    }

    /// The URL as given.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The scheme, lower-cased.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host list as written (`h1:2379,h2:2379`), possibly empty.
    pub fn hosts(&self) -> &'a str {
        self.hosts
    }

    /// The path, starting with `/`, or empty.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The raw query (without `?`), if any.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The raw fragment (without `#`), if any.
    pub fn fragment(&self) -> Option<&'a str> {
        self.fragment
    }

    /// The URL with its password replaced by `***`, for messages.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// A [`Error::Configuration`] about this URL: `"malformed <backend> URL
    /// <redacted>: <why>"`. `why` must not quote the credentials.
    pub fn error(&self, why: impl std::fmt::Display) -> Error {
        Error::configuration(format!(
            "malformed {} URL {:?}: {why}",
            self.backend, self.redacted
        ))
    }

    /// The user name and password, percent-decoded: `None` without an `@`,
    /// `Some((user, None))` without a `:`.
    ///
    /// # Errors
    /// [`Error::Configuration`] when they do not decode to UTF-8.
    pub fn credentials(&self) -> Result<Option<(String, Option<String>)>> {
        let Some(info) = self.userinfo else {
            return Ok(None);
        };
        let decode = |part: &str, what: &str| -> Result<String> {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(Cow::into_owned)
                .map_err(|_| self.error(format!("the {what} is not valid percent-encoded UTF-8")))
        };
        Ok(Some(match info.split_once(':') {
            Some((user, password)) => (
                decode(user, "user name")?,
                Some(decode(password, "password")?),
            ),
            None => (decode(info, "user name")?, None),
        }))
    }

    /// The query parameters, decoded (`+` and `%20` are spaces), in order.
    pub fn params(&self) -> Vec<(String, String)> {
        url_params(self.raw)
    }

    /// Rejects parameters not in `known`.
    ///
    /// # Errors
    /// [`Error::Configuration`] naming the first unknown parameter and the
    /// valid ones.
    pub fn check_params(&self, known: &[&str]) -> Result<()> {
        for (key, _) in self.params() {
            if !known.contains(&key.as_str()) {
                let valid = if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                };
                return Err(Error::configuration(format!(
                    "unknown parameter `{key}` in the {} URL {:?}; valid parameters: {valid}",
                    self.backend, self.redacted
                )));
            }
        }
        Ok(())
    }

    /// The URL as given, without the query parameters named in `drop` (for
    /// handing the rest to a driver). Everything else stays byte for byte.
    pub fn without_params(&self, drop: &[&str]) -> String {
        without_params(self.raw, drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: &[&str] = &["postgres", "postgresql"];

    #[test]
    fn splits_well_formed_urls() {
        let url = BackendUrl::parse(
            "postgres://u:p%40ss@h:5432/db?sslmode=require&table=t#f",
            "postgres",
            PG,
        )
        .unwrap();
        assert_eq!(url.hosts(), "h:5432");
        assert_eq!(url.path(), "/db");
        assert_eq!(url.query(), Some("sslmode=require&table=t"));
        assert_eq!(url.fragment(), Some("f"));
        assert_eq!(
            url.credentials().unwrap(),
            Some(("u".to_owned(), Some("p@ss".to_owned())))
        );
        assert_eq!(
            url.without_params(&["table"]),
            "postgres://u:p%40ss@h:5432/db?sslmode=require#f"
        );
        assert_eq!(
            url.without_params(&["table", "sslmode"]),
            "postgres://u:p%40ss@h:5432/db#f"
        );
        let multi = BackendUrl::parse("zk://a:1,b:2/chroot", "zookeeper", &["zk"]).unwrap();
        assert_eq!(multi.hosts(), "a:1,b:2");
        assert_eq!(multi.path(), "/chroot");
        assert_eq!(url_scheme("SQLite::memory:").as_deref(), Some("sqlite"));
        assert_eq!(url_scheme("no scheme here"), None);
    }

    #[test]
    fn rejects_ambiguous_urls_without_quoting_credentials() {
        for url in [
            "postgres:/u:Zq7xW@h/db",
            "postgres:u:Zq7xW@h/db",
            "postgres//u:Zq7xW@h/db",
            "postgres://u:Zq7/xW@h/db",
            "postgres://u:Zq7?xW@h/db",
            "postgres://u:Zq7#xW@h/db",
            "mysql://u:Zq7xW@h/db",
        ] {
            let err = BackendUrl::parse(url, "postgres", PG).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(matches!(err, Error::Configuration { .. }), "{url}: {text}");
            for fragment in ["Zq7", "xW"] {
                assert!(!text.contains(fragment), "{url}: {text}");
            }
        }
    }
}
