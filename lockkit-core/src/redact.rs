//! Keeping secrets out of messages.

/// Replaces the password of a URL (`scheme://user:password@host/…`) with
/// `***`, and any `password=`/`pass=`/`pwd=` query value likewise, so the
/// URL can appear in errors and logs.
///
/// Works on strings that are not valid URLs too; it never fails.
///
/// ```
/// use lockkit_core::redact_url;
///
/// assert_eq!(
///     redact_url("postgres://app:s3cret@db:5432/locks"),
///     "postgres://app:***@db:5432/locks"
/// );
/// assert_eq!(redact_url("redis://:hunter2@cache"), "redis://:***@cache");
/// assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    out.push_str(head);
    // The authority ends at the first '/', '?' or '#'; its userinfo ends at
    // the last '@' inside it.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..=colon]);
                    out.push_str("***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    out.push_str(&redact_query(tail));
    out
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
}
