//! Passwords never appear in errors, whatever the URL looks like, and
//! malformed URLs are rejected before any connection.
//!
//! A table of well-formed and malformed URLs with a password, for every
//! scheme `lockkit::connect` knows. Well-formed ones point at a closed port
//! on loopback, so they fail when connecting; every error's `Display`,
//! `Debug` and source chain must be free of the password and of every
//! piece of it.
#![cfg(all(
    feature = "postgres",
    feature = "mysql",
    feature = "redis",
    feature = "etcd",
    feature = "zookeeper"
))]

use std::error::Error as _;
use std::time::Duration;

use lockkit::Error;

/// The password, and the pieces a parser might cut it into.
const PASSWORD: &str = "Xq7Zr9Pw";
const PIECES: &[&str] = &["Xq7", "Zr9Pw", "Zr9", "q7Z"];

/// URL templates; `{s}` is the scheme, `{pw}` the password in some
/// spelling. The port is closed on loopback.
const TEMPLATES: &[&str] = &[
    "{s}://u:{pw}@127.0.0.1:1/db",
    "{s}://u:Xq7/Zr9Pw@127.0.0.1:1/db",
    "{s}://u:Xq7?Zr9Pw@127.0.0.1:1/db",
    "{s}://u:Xq7#Zr9Pw@127.0.0.1:1/db",
    "{s}://u:Xq7@Zr9Pw@127.0.0.1:1/db",
    "{s}://u:Xq7\\Zr9Pw@127.0.0.1:1/db",
    "{s}://u:Xq7 Zr9Pw@127.0.0.1:1/db",
    "{s}://u:Xq7%2FZr9Pw@127.0.0.1:1/db",
    "{s}://u:Xq7%ZZr9Pw@127.0.0.1:1/db",
    "{s}:/u:{pw}@127.0.0.1:1/db",
    "{s}:u:{pw}@127.0.0.1:1/db",
    "{s}//u:{pw}@127.0.0.1:1/db",
    "{s} ://u:{pw}@127.0.0.1:1/db",
    "{s}://u:{pw}@127.0.0.1:1/db?tabel=x",
    "{s}://u:{pw}@127.0.0.1:1/db?password={pw}",
    "{s}://u:{pw}@127.0.0.1:notaport/db",
    "{s}://u:{pw}@/db",
    "{s}://u:{pw}@[::1:1/db",
    "{s}://:{pw}@127.0.0.1:1",
    "{s}://u:{pw}@127.0.0.2:1,127.0.0.3:2/db",
    "{s}://u:{pw}@127.0.0.1:1/db#fragment",
    "{s}://u:{pw}@127.0.0.1:1/db?table=bad-name",
    "{s}://u:{pw}@127.0.0.1:1/db?sslmode=bogus",
    "{s}://u:{pw}@127.0.0.1:1/%ZZ",
];

const SCHEMES: &[&str] = &[
    "postgres",
    "postgresql",
    "mysql",
    "mariadb",
    "redis",
    "rediss",
    "etcd",
    "etcds",
    "zk",
    "zookeeper",
    "memory",
    "nosuch",
];

/// SQLite URLs are paths (an `@` may be part of a file name), so only
/// failing ones: a directory that does not exist, a bad parameter.
const SQLITE_URLS: &[&str] = &[
    "sqlite:///nonexistent-lockkit-dir/u:Xq7Zr9Pw@x.db",
    "sqlite://u:Xq7Zr9Pw@/nonexistent-lockkit-dir/x.db?mode=rw",
    "sqlite::memory:?password=Xq7Zr9Pw",
    "sqlite:/nonexistent-lockkit-dir/u:Xq7Zr9Pw@x.db?tabel=x",
];

/// Everything an error can show: Display, Debug and every source's Display.
fn error_text(err: &Error) -> String {
    let mut text = format!("{err}\n{err:?}");
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(&format!("\n{s}\n{s:?}"));
        source = s.source();
    }
    text
}

fn urls() -> Vec<String> {
    let mut urls = Vec::new();
    for scheme in SCHEMES {
        for template in TEMPLATES {
            let url = template.replace("{s}", scheme).replace("{pw}", PASSWORD);
            urls.push(url);
        }
    }
    urls.extend(SQLITE_URLS.iter().map(|u| (*u).to_owned()));
    urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passwords_never_appear_in_errors() {
    let urls = urls();
    assert!(urls.len() >= 20 * 10);
    let tasks: Vec<_> = urls
        .iter()
        .cloned()
        .map(|url| {
            tokio::spawn(async move {
                // ZooKeeper keeps retrying a closed port until its connect
                // timeout; keep that short where the URL still parses.
                let url = if url.starts_with("zk") && !url.contains('?') {
                    format!("{url}?connect_timeout_ms=300")
                } else {
                    url
                };
                let outcome = tokio::time::timeout(Duration::from_secs(60), lockkit::connect(&url))
                    .await
                    .unwrap_or_else(|_| panic!("connecting to {url:?} did not finish within 60 s"));
                (url, outcome.err())
            })
        })
        .collect();
    let mut leaks = Vec::new();
    for task in tasks {
        let (url, err) = task.await.expect("task");
        let Some(err) = err else {
            panic!("{url:?} must fail: its port is closed or it is malformed");
        };
        let text = error_text(&err);
        if PIECES.iter().any(|piece| text.contains(piece)) || text.contains(PASSWORD) {
            leaks.push(format!("{url}\n    -> {text}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "passwords leaked in {} of {} errors:\n{}",
        leaks.len(),
        urls.len(),
        leaks.join("\n")
    );
}

/// A single slash (or none) after the scheme, and a password that would
/// change the host or path, are refused before connecting: the error is a
/// configuration error that says so, returned at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_urls_are_rejected_before_any_connection() {
    for scheme in [
        "postgres", "mysql", "mariadb", "redis", "rediss", "etcd", "zk",
    ] {
        for url in [
            format!("{scheme}:/u:{PASSWORD}@127.0.0.1:9/db"),
            format!("{scheme}:u:{PASSWORD}@127.0.0.1:9/db"),
            format!("{scheme}://u:Xq7/Zr9Pw@127.0.0.1:9/db"),
            format!("{scheme}://u:Xq7?Zr9Pw@127.0.0.1:9/db"),
        ] {
            let started = std::time::Instant::now();
            let err = lockkit::connect(&url)
                .await
                .err()
                .unwrap_or_else(|| panic!("{url}"));
            assert!(matches!(err, Error::Configuration { .. }), "{url}: {err:?}");
            let text = err.to_string();
            assert!(
                text.contains("malformed")
                    && (text.contains("two slashes") || text.contains("percent-encode")),
                "{url}: the message says what is wrong: {text}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{url}: rejected without any I/O"
            );
        }
    }
}

/// Unknown URL parameters are rejected on every backend, naming the
/// parameter and the valid ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_parameters_are_rejected_everywhere() {
    for url in [
        "postgres://u@127.0.0.1:9/db?tabel=x",
        "mysql://u@127.0.0.1:9/db?tabel=x",
        "redis://127.0.0.1:9?tabel=x",
        "etcd://127.0.0.1:9?tabel=x",
        "zk://127.0.0.1:9?tabel=x",
        "memory://?tabel=x",
    ] {
        let err = lockkit::connect(url)
            .await
            .err()
            .unwrap_or_else(|| panic!("{url}"));
        let text = err.to_string();
        assert!(matches!(err, Error::Configuration { .. }), "{url}: {err:?}");
        assert!(
            text.contains("unknown parameter `tabel`") && text.contains("valid parameters"),
            "{url}: {text}"
        );
    }
    let err = lockkit::connect("sqlite::memory:?tabel=x")
        .await
        .expect_err("rejected");
    assert!(matches!(err, Error::Configuration { .. }), "{err:?}");
    assert!(err.to_string().contains("tabel"), "{err}");
}
