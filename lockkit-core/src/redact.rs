//! Keeping secrets out of messages.
//!
//! Redaction never depends on the URL being well formed: generated
//! passwords often contain `/`, `?`, `#` or `@` unencoded, which makes URL
//! parsers see a different host, port or path — and a parser's error must
//! not be the reason a password is printed.

/// Replaces the password of a URL with `***`, and any `password=`, `pass=`,
/// `pwd=`, `secret=`, `token=`, `sslpassword=` query value likewise, so the
/// URL can appear in errors and logs.
///
/// The rule is textual and conservative. Everything between the scheme
/// (with the slashes after it) and the **last** `@` of the string is
/// credentials:
/// - in a well-formed URL (`scheme://user:password@host…`, no `/`, `?` or
///   `#` in the credentials) the user name stays and the password becomes
///   `***`; a user name alone (`etcd://user@host`) stays as it is;
/// - in anything else (a password with an unencoded `/`, a single slash
///   after the scheme, a missing `:`) the whole of it becomes `***`.
///
/// An `@` in a query value therefore masks more than needed; that is the
/// price of never printing a password. Works on any string; never fails.
///
/// ```
/// use lockkit_core::redact_url;
///
/// assert_eq!(
///     redact_url("postgres://app:s3cret@db:5432/locks"),
///     "postgres://app:***@db:5432/locks"
/// );
/// assert_eq!(redact_url("redis://:hunter2@cache"), "redis://:***@cache");
/// // Malformed: the password has an unencoded '/', or one slash is missing.
/// assert_eq!(redact_url("postgres://u:Sup/3rS3cret@h/db"), "postgres://***@h/db");
/// assert_eq!(redact_url("postgres:/u:pw@h/db"), "postgres:/***@h/db");
/// assert_eq!(redact_url("redis//u:pw@h"), "***@h");
/// assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let (prefix, rest) = split_prefix(url);
    let mut out = String::with_capacity(url.len() + 3);
    out.push_str(prefix);
    let tail = match rest.rfind('@') {
        Some(at) => {
            let (credentials, tail) = rest.split_at(at);
            let well_formed =
                prefix.ends_with("://") && !credentials.contains(['/', '?', '#', '\\']);
            match credentials.find(':') {
                Some(colon) if well_formed => {
                    out.push_str(&credentials[..=colon]);
                    out.push_str("***");
                }
                None if well_formed => out.push_str(credentials),
                _ => out.push_str("***"),
            }
            tail
        }
        None => rest,
    };
    out.push_str(&redact_query(tail));
    out
}

/// Splits `url` after its scheme and the slashes that follow it
/// (`"postgres://"`, `"postgres:/"`, `"sqlite:"`); `("", url)` when it does
/// not start with a scheme.
pub(crate) fn split_prefix(url: &str) -> (&str, &str) {
    let Some(colon) = url.find(':') else {
        return ("", url);
    };
    let scheme = &url[..colon];
    let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return ("", url);
    }
    let after = &url[colon + 1..];
    let slashes = after.len() - after.trim_start_matches('/').len();
    url.split_at(colon + 1 + slashes)
}

fn redact_query(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_owned();
    };
    let (path, query) = tail.split_at(q + 1);
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}{}{fragment}", pairs.join("&"))
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    matches!(
        key.as_str(),
        "password" | "pass" | "pwd" | "secret" | "token" | "sslpassword"
    )
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_userinfo_and_query_secrets() {
        assert_eq!(
            redact_url("mysql://root:p@ss@w0rd@h:3306/db"),
            "mysql://root:***@h:3306/db"
        );
        assert_eq!(redact_url("etcd://user@h:2379"), "etcd://user@h:2379");
        assert_eq!(
            redact_url("zk://h:2181/root?user=a&password=b#frag"),
            "zk://h:2181/root?user=a&password=***#frag"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn malformed_urls_mask_everything_before_the_last_at() {
        for (url, want) in [
            ("postgres://u:Sup/3rS3cret@h/db", "postgres://***@h/db"),
            ("postgres:/u:pw@h/db", "postgres:/***@h/db"),
            ("redis:/:pw@h/", "redis:/***@h/"),
            ("redis//u:pw@h", "***@h"),
            ("redis:u:pw@h", "redis:***@h"),
            ("mysql://u:a?b#c@h/db", "mysql://***@h/db"),
            ("zk://u:pa/ss@h:2181/chroot", "zk://***@h:2181/chroot"),
            ("://u:pw@h", "***@h"),
            ("u:pw@h", "u:***@h"),
            ("etcd://u\\x:pw@h", "etcd://***@h"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }
}
