//! The real `lockkit` binary, driven as a pipeline would drive it, against
//! an SQLite file, a private Postgres server and a private Redis server.
//!
//! Waits are on signals (a line the child prints, the process's exit), not
//! on sleeps; the only bounds are generous give-up limits so that a broken
//! binary fails instead of hanging.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lockkit::{LockBackend, LockOptions, Locker};
use lockkit_tests::sql_harness::{SqlHarness, SqlKind};

use common::*;

/// Starts `lockkit run` with a piped stdout and waits for the child's first
/// line (`started`).
fn start_run(backend: &str, args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = lockkit(backend)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lockkit");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    lines.read_line(&mut first).expect("read");
    assert_eq!(first.trim(), "started", "the child runs under the lock");
    (child, lines)
}

fn rest(mut lines: BufReader<std::process::ChildStdout>) -> String {
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut lines, &mut text);
    text
}

// ---------------------------------------------------------------- run

/// The child's exit status passes through exactly, and it sees its lease.
fn exit_status_and_environment(url: &str) {
    let out = output(lockkit(url).args([
        "run",
        "cli-env",
        "--owner",
        "job-7",
        "--",
        "sh",
        "-c",
        "echo \"$LOCKKIT_LOCK_NAME|$LOCKKIT_FENCING_TOKEN|$LOCKKIT_OWNER|$LOCKKIT_LEASE_ID\"; exit 7",
    ]));
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    let line = stdout(&out);
    let fields: Vec<&str> = line.trim().split('|').collect();
    assert_eq!(fields.len(), 4, "{line}");
    assert_eq!(fields[0], "cli-env");
    assert!(
        fields[1].parse::<u64>().is_ok_and(|t| t > 0),
        "token {line}"
    );
    assert_eq!(fields[2], "job-7");
    assert!(!fields[3].is_empty());
    for status in ["0", "1", "42", "255"] {
        let out = output(lockkit(url).args([
            "run",
            "cli-env",
            "--",
            "sh",
            "-c",
            &format!("exit {status}"),
        ]));
        assert_eq!(code(&out).to_string(), status);
    }
    // Killed by a signal: 128 + N, as a shell reports it.
    let out = output(lockkit(url).args(["run", "cli-env", "--", "sh", "-c", "kill -KILL $$"]));
    assert_eq!(code(&out), 128 + 9);
}

/// A held lock: `-n` exits with the conflict code at once, `-E` changes
/// it, and a bounded wait that runs out gives the same code; the command
/// never ran.
async fn busy_and_timeout(url: &str) {
    let (_backend, guard) = hold(url, "cli-busy", "someone-else").await;
    let out = output(lockkit(url).args(["run", "-n", "cli-busy", "--", "sh", "-c", "echo ran"]));
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "the command must not run");
    assert!(
        stderr(&out).contains("someone-else"),
        "names the holder: {}",
        stderr(&out)
    );
    let out = output(lockkit(url).args(["run", "-n", "-E", "99", "cli-busy", "--", "true"]));
    assert_eq!(code(&out), 99);
    let out = output(lockkit(url).args([
        "run", "--wait", "300ms", "cli-busy", "--", "sh", "-c", "echo ran",
    ]));
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    assert!(guard.release().await.expect("release"));
    let out = output(lockkit(url).args(["run", "-n", "cli-busy", "--", "true"]));
    assert_eq!(code(&out), 0, "free again: {}", stderr(&out));
}

/// Another process force-releases the lock while the command runs: the
/// command gets SIGTERM and `lockkit` exits with the lost code.
async fn lost_mid_run(url: &str) {
    let script = "trap 'echo got-term; exit 0' TERM; echo started; while :; do sleep 0.05; done";
    let (mut child, lines) = start_run(
        url,
        &[
            "run", "--ttl", "3s", "--grace", "30s", "cli-lost", "--", "sh", "-c", script,
        ],
    );
    // A second process force-releases it.
    let out = output(lockkit(url).args(["release", "--force", "--yes", "cli-lost"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(wait_exit(&mut child), 79, "the lost code");
    assert!(
        rest(lines).contains("got-term"),
        "the command was sent SIGTERM"
    );
}

/// SIGTERM to `lockkit` reaches the command; its status passes through and
/// the lock is free afterwards.
async fn forwards_sigterm(url: &str) {
    let script = "trap 'echo got-term; exit 3' TERM; echo started; while :; do sleep 0.05; done";
    let (mut child, lines) = start_run(url, &["run", "cli-signal", "--", "sh", "-c", script]);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal lockkit");
    assert_eq!(wait_exit(&mut child), 3);
    assert!(rest(lines).contains("got-term"));
    let name = lockkit::LockName::new("cli-signal").unwrap();
    assert!(
        backend(url)
            .await
            .current(&name)
            .await
            .expect("current")
            .is_none()
    );
}

// ------------------------------------------------------------ inspect

/// `status` and `inspect` show the holder, as a table and as JSON; an
/// `inspect` of a free lock exits 1; `release --force --yes` frees it.
async fn status_inspect_release(url: &str) {
    let (_backend, guard) = hold(url, "cli-shown", "owner-a").await;
    let token = guard.token().get();
    let out = output(lockkit(url).args(["status", "--json"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let locks: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let shown = locks
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "cli-shown")
        .expect("the held lock is listed");
    assert_eq!(shown["owner"], "owner-a");
    assert_eq!(shown["token"].as_u64(), Some(token));
    assert!(shown["held_for_seconds"].as_f64().is_some_and(|s| s >= 0.0));
    let out = output(lockkit(url).args(["status", "--prefix", "cli-sh"]));
    let table = stdout(&out);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("cli-shown") && table.contains("owner-a"),
        "{table}"
    );
    let out = output(lockkit(url).args(["status", "--prefix", "cli-sh", "--soon", "1h"]));
    assert!(stdout(&out).contains("! expires soon"), "{}", stdout(&out));
    let out = output(lockkit(url).args(["status", "--prefix", "cli-sh", "--soon", "1ms"]));
    assert!(!stdout(&out).contains("expires soon"), "{}", stdout(&out));
    let out = output(lockkit(url).args(["status", "--prefix", "nothing-"]));
    assert_eq!(stdout(&out).trim(), "no locks held");

    let out = output(lockkit(url).args(["inspect", "cli-shown", "--json"]));
    assert_eq!(code(&out), 0);
    let view: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(view["owner"], "owner-a");
    assert_eq!(view["lease_id"], guard.lease().lease_id.as_str());
    let out = output(lockkit(url).args(["inspect", "cli-free"]));
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("free"));

    let out = output(lockkit(url).args(["release", "cli-shown"]));
    assert_eq!(code(&out), 2, "--force is required");
    let out = output(lockkit(url).args(["release", "--force", "--yes", "cli-shown"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lost = tokio::time::timeout(GIVE_UP, guard.lost())
        .await
        .expect("the holder learns of the loss");
    assert!(matches!(lost, lockkit::LostReason::NotHeld), "{lost:?}");
    let out = output(lockkit(url).args(["release", "--force", "--yes", "cli-shown"]));
    assert_eq!(code(&out), 1, "not held any more");
}

/// `run --permits 2`: two holders fill the semaphore, a third command is
/// refused with the conflict code, a lock request (one permit) is refused
/// for disagreeing, `status` shows 2/2 and `inspect` lists both holders;
/// once one holder goes, a command runs with a permit of its own.
async fn semaphore_run_and_status(url: &str) {
    let backend = backend(url).await;
    let opts = LockOptions::new().ttl(Duration::from_secs(30)).permits(2);
    let mut guards = Vec::new();
    for owner in ["loader-1", "loader-2"] {
        let guard = Locker::new(Arc::clone(&backend), owner)
            .expect("locker")
            .acquire_with("cli-sem", &opts)
            .await
            .expect("a permit");
        guards.push(guard);
    }
    let out = output(lockkit(url).args([
        "run",
        "-n",
        "--permits",
        "2",
        "cli-sem",
        "--",
        "sh",
        "-c",
        "echo ran",
    ]));
    assert_eq!(code(&out), 75, "both permits are held: {}", stderr(&out));
    assert!(stdout(&out).is_empty(), "the command must not run");
    let out = output(lockkit(url).args(["run", "-n", "cli-sem", "--", "true"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("permit"),
        "says why: {}",
        stderr(&out)
    );
    let out = output(lockkit(url).args(["run", "--permits", "0", "cli-sem", "--", "true"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    let out = output(lockkit(url).args(["status", "--prefix", "cli-sem"]));
    let table = stdout(&out);
    assert!(table.contains("PERMITS"), "{table}");
    assert_eq!(
        table.matches("2/2").count(),
        2,
        "one row per holder: {table}"
    );
    let out = output(lockkit(url).args(["status", "--json", "--prefix", "cli-sem"]));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["permits"] == 2 && r["permits_used"] == 2),
        "{rows:?}"
    );
    let out = output(lockkit(url).args(["inspect", "cli-sem", "--json"]));
    let holders: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let owners: Vec<&str> = holders
        .as_array()
        .expect("a semaphore's holders are an array")
        .iter()
        .map(|h| h["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["loader-1", "loader-2"]);

    let first = guards.remove(0);
    assert!(first.release().await.expect("release"));
    let out = output(lockkit(url).args([
        "run",
        "-n",
        "--permits",
        "2",
        "cli-sem",
        "--",
        "sh",
        "-c",
        "echo \"$LOCKKIT_FENCING_TOKEN\"",
    ]));
    assert_eq!(code(&out), 0, "a permit came free: {}", stderr(&out));
    let token: u64 = stdout(&out)
        .trim()
        .parse()
        .expect("the child sees its token");
    assert!(
        token > guards[0].token().get(),
        "a later grant has a larger token"
    );
    for guard in guards {
        assert!(guard.release().await.expect("release"));
    }
}

// ------------------------------------------------------------ exporter

/// A running `lockkit exporter` on `url`; killed on drop.
struct Exporter {
    child: Child,
    addr: String,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_exporter(url: &str, extra: &[&str]) -> Exporter {
    let mut child = lockkit(url)
        .args(["exporter", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the exporter");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    lines.read_line(&mut line).expect("read");
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .filter(|a| a.contains(':'))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    Exporter { child, addr }
}

/// One HTTP/1.0 GET; the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the exporter");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// One sample of Prometheus text: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Prometheus text: `(name, labels, value)` for every sample line.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("closing brace");
                    let labels = inner
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), Vec::new()),
            };
            (name, labels, value.parse().expect("a number"))
        })
        .collect()
}

fn value_of(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    samples
        .iter()
        .find(|(n, labels, _)| {
            n == name && label.is_none_or(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_shows_the_held_locks() {
    let file = sqlite_file();
    let (_a, first) = hold(&file.url, "exp-orders", "team-a").await;
    let (_b, second) = hold(&file.url, "exp-ledger", "team-a").await;
    let (_c, third) = hold(&file.url, "exp-<b>html</b>", "team-b").await;
    let exporter = start_exporter(&file.url, &["--max-lock-series", "2", "--soon", "1h"]);

    let (status, body) = get(&exporter.addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    let scraped = samples(&body);
    assert_eq!(value_of(&scraped, "lockkit_locks_active", None), Some(3.0));
    assert_eq!(
        value_of(&scraped, "lockkit_scrape_success", None),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &scraped,
            "lockkit_locks_by_owner",
            Some(("owner", "team-a"))
        ),
        Some(2.0)
    );
    assert_eq!(
        value_of(
            &scraped,
            "lockkit_locks_by_owner",
            Some(("owner", "team-b"))
        ),
        Some(1.0)
    );
    // TTL 3 s, renewed: every lock expires within the hour.
    assert_eq!(
        value_of(&scraped, "lockkit_locks_expiring", None),
        Some(3.0)
    );
    let per_lock: Vec<_> = scraped
        .iter()
        .filter(|(n, _, _)| n == "lockkit_lock_held_seconds")
        .collect();
    assert_eq!(per_lock.len(), 2, "capped at --max-lock-series");
    assert_eq!(
        value_of(&scraped, "lockkit_lock_series_dropped", None),
        Some(1.0)
    );
    let expires = value_of(
        &scraped,
        "lockkit_lock_expires_in_seconds",
        Some(("lock", "exp-ledger")),
    )
    .expect("expiry of exp-ledger");
    assert!((0.0..=3.0).contains(&expires), "{expires}");

    let (status, body) = get(&exporter.addr, "/healthz");
    assert!(status.contains("200") && body.trim() == "ok");
    let (status, page) = get(&exporter.addr, "/");
    assert!(status.contains("200"));
    assert!(
        page.contains("exp-orders") && page.contains("team-b"),
        "{page}"
    );
    assert!(
        page.contains("exp-&lt;b&gt;html&lt;/b&gt;"),
        "names are escaped"
    );
    let (status, _) = get(&exporter.addr, "/nothing");
    assert!(status.contains("404"));

    for guard in [first, second, third] {
        assert!(guard.release().await.expect("release"));
    }
    let (_, body) = get(&exporter.addr, "/metrics");
    assert_eq!(
        value_of(&samples(&body), "lockkit_locks_active", None),
        Some(0.0)
    );
}

/// The status page as a real browser renders it: headless Chromium loads
/// it while locks are held, and the table it built has their rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_renders_in_chromium() {
    let chromium = lockkit_tests::server::require_binary(
        "chromium",
        &["/usr/bin"],
        "install Chromium (Debian: apt-get install chromium)",
    );
    let file = sqlite_file();
    let (_a, guard) = hold(&file.url, "page-nightly", "team-page").await;
    let exporter = start_exporter(&file.url, &["--soon", "1h"]);
    let (out, dom) = chromium_dom(&chromium, &format!("http://{}/", exporter.addr));
    assert!(out.status.success(), "chromium failed: {}", stderr(&out));
    assert!(dom.contains("<table id=\"locks\">"), "no table in {dom}");
    assert!(
        dom.contains("<tr class=\"soon\"><td class=\"name\">page-nightly</td><td class=\"owner\">team-page</td>"),
        "the held lock's row (expiring within the hour): {dom}"
    );
    assert!(dom.contains(&format!("<td class=\"token\">{}</td>", guard.token().get())));
    assert!(guard.release().await.expect("release"));
}

// ---------------------------------------------------------- dashboards

/// The `lockkit_…` metric names a PromQL expression uses.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("lockkit_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every PromQL expression of the exporter dashboard and of the alert rules
/// uses only metric names that are really emitted: by a live
/// `lockkit exporter` scrape, or by the lockkit library in a process that
/// renders its metrics with `metrics-exporter-prometheus` (acquire, renew,
/// release and a loss are exercised here to make them appear).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alert_queries_use_only_emitted_metrics() {
    let file = sqlite_file();
    let (_b, held) = hold(&file.url, "dash-held", "team-dash").await;
    let exporter = start_exporter(&file.url, &[]);
    let (_, scrape) = get(&exporter.addr, "/metrics");
    let mut emitted: Vec<String> = samples(&scrape).into_iter().map(|(n, _, _)| n).collect();

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    let memory: Arc<dyn LockBackend> = Arc::new(lockkit::memory::MemoryBackend::new());
    let locker = Locker::new(Arc::clone(&memory), "metrics-client").unwrap();
    let guard = locker.acquire("dash-client").await.expect("acquire");
    guard.extend(Duration::from_secs(20)).await.expect("extend");
    assert!(guard.release().await.expect("release"));
    let doomed = locker.acquire("dash-lost").await.expect("acquire");
    assert!(memory.force_release(&doomed.name()).await.expect("force"));
    tokio::time::timeout(GIVE_UP, doomed.lost())
        .await
        .expect("lost");
    emitted.extend(samples(&recorder.render()).into_iter().map(|(n, _, _)| n));

    let mut exprs = dashboard_queries("deploy/grafana/lockkit-exporter.json", "expr");
    let alerts = repo_file("deploy/prometheus/alerts.yml");
    exprs.extend(
        alerts
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:"))
            .map(|e| ("alert rule".to_owned(), e.trim().to_owned())),
    );
    assert!(exprs.len() > 10, "{exprs:?}");
    for (panel, expr) in &exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty() || expr.contains("up{"),
            "{panel}: no lockkit metric in {expr}"
        );
        for name in names {
            assert!(
                emitted.contains(&name),
                "{panel}: `{name}` in {expr} is never emitted; emitted: {emitted:?}"
            );
        }
    }
    assert!(held.release().await.expect("release"));
}

/// Every SQL panel of the Postgres dashboard runs against a real lockkit
/// lock table and returns the columns its panel reads, with the values the
/// held locks imply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_dashboard_queries_run_on_a_real_lock_table() {
    use sqlx::Row;
    let harness = SqlHarness::start(SqlKind::Postgres).await;
    let url = harness.lockkit_url();
    let (_a, first) = hold(&url, "sql-one", "team-x").await;
    let (_b, second) = hold(&url, "sql-two", "team-x").await;
    let (_c, third) = hold(&url, "sql-three", "team-y").await;
    let expected: &[(&str, &[&str])] = &[
        ("Active locks", &["value"]),
        ("Locks near expiry", &["value"]),
        ("Average hold time (current holds, s)", &["value"]),
        ("Locks per owner", &["owner", "locks"]),
        (
            "Held locks",
            &[
                "lock",
                "owner",
                "token",
                "acquired_at",
                "held_seconds",
                "expires_in_seconds",
            ],
        ),
    ];
    let table = harness.table().to_string();
    let panels = run_sql_panels(
        "deploy/grafana/lockkit-postgres.json",
        harness.pg(),
        &[("$table", &table), ("$soon", "3600")],
        expected,
    )
    .await;
    for (title, rows) in panels {
        let first_row = &rows[0];
        match title.as_str() {
            "Active locks" | "Locks near expiry" => {
                assert_eq!(first_row.get::<i64, _>("value"), 3, "{title}");
            }
            "Average hold time (current holds, s)" => {
                assert!(first_row.get::<f64, _>("value") >= 0.0);
            }
            "Locks per owner" => {
                let owners: Vec<(String, i64)> = rows
                    .iter()
                    .map(|r| (r.get("owner"), r.get("locks")))
                    .collect();
                assert_eq!(owners, [("team-x".to_owned(), 2), ("team-y".to_owned(), 1)]);
            }
            _ => {
                let locks: Vec<String> = rows.iter().map(|r| r.get("lock")).collect();
                assert_eq!(locks.len(), 3, "{locks:?}");
                let token: i64 = rows
                    .iter()
                    .find(|r| r.get::<String, _>("lock") == "sql-one")
                    .expect("sql-one")
                    .get("token");
                assert_eq!(u64::try_from(token).ok(), Some(first.token().get()));
            }
        }
    }
    for guard in [first, second, third] {
        assert!(guard.release().await.expect("release"));
    }
}

// ----------------------------------------------------------- bad input

#[test]
fn bad_input_is_one_line_with_a_documented_code() {
    let file = sqlite_file();
    let cases: &[(&[&str], &str, i32)] = &[
        (&["run", "x", "true"], "", 2),
        (&["run", "x"], "", 2),
        (&["run", "x", "--ttl", "0s", "--", "true"], "", 2),
        (&["run", "x", "--ttl", "soon", "--", "true"], "", 2),
        (&["run", "", "--", "true"], "", 2),
        (&["inspect", "x"], "nosuch://user:hunter2@host", 78),
        (
            &["status"],
            "postgres://user:hunter2@127.0.0.1:1/db?bogus=1",
            78,
        ),
        // Unreachable (nothing listens on port 1 of loopback).
        (&["status"], "postgres://user:hunter2@127.0.0.1:1/db", 69),
        (&["status"], "redis://:hunter2@127.0.0.1:1", 69),
    ];
    for (args, url, expected) in cases {
        let url = if url.is_empty() {
            file.url.as_str()
        } else {
            url
        };
        let out = output(lockkit(url).args(*args));
        let err = stderr(&out);
        assert_eq!(code(&out), *expected, "{args:?} {url}: {err}");
        assert!(!err.contains("hunter2"), "password shown: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("lockkit: "), "{err}");
    }
    let out = output(lockkit(&file.url).args(["run", "x", "--", "/nonexistent/command"]));
    assert_eq!(code(&out), 127);
}

/// The config file gives defaults; flags and the environment win over it;
/// a bad file is a configuration error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_gives_defaults_that_flags_override() {
    let file = sqlite_file();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("lockkit.toml");
    std::fs::write(
        &config,
        format!(
            "backend = \"{}\"\n[run]\nconflict_exit_code = 42\nowner = \"from-file\"\n",
            file.url
        ),
    )
    .expect("write config");
    let (_b, guard) = hold(&file.url, "cfg-busy", "holder").await;
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("LOCKKIT_BACKEND")
            .env("LOCKKIT_CONFIG", &config)
            .stdin(Stdio::null())
            .args(extra);
        output(&mut cmd)
    };
    // The backend and the conflict code come from the file.
    assert_eq!(code(&run(&["run", "-n", "cfg-busy", "--", "true"])), 42);
    assert_eq!(
        code(&run(&["run", "-n", "-E", "43", "cfg-busy", "--", "true"])),
        43
    );
    let out = run(&["run", "cfg-free", "--", "sh", "-c", "echo $LOCKKIT_OWNER"]);
    assert_eq!(stdout(&out).trim(), "from-file", "{}", stderr(&out));
    // A flag's backend wins over the file's.
    let other = sqlite_file();
    let out = run(&[
        "--backend",
        &other.url,
        "run",
        "-n",
        "cfg-busy",
        "--",
        "true",
    ]);
    assert_eq!(code(&out), 0, "another database: free there");
    std::fs::write(&config, "[run]\nttll = \"1m\"\n").expect("write");
    let out = run(&["status"]);
    assert_eq!(code(&out), 78);
    assert!(
        stderr(&out).contains("lockkit.toml") && stderr(&out).contains("ttll"),
        "{}",
        stderr(&out)
    );
    assert!(guard.release().await.expect("release"));
}

#[test]
fn the_default_backend_is_a_per_user_sqlite_file() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = output(
        Command::new(BIN)
            .env_remove("LOCKKIT_BACKEND")
            .env_remove("XDG_DATA_HOME")
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .args(["run", "default-file", "--", "true"]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(home.path().join(".local/share/lockkit/locks.db").exists());
}

#[test]
fn help_lists_the_exit_codes_and_completions_are_generated() {
    let out = output(Command::new(BIN).arg("--help"));
    assert!(stdout(&out).contains("Exit codes:") && stdout(&out).contains("79"));
    let out = output(Command::new(BIN).args(["completions", "bash"]));
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("lockkit"));
}

// ------------------------------------------------------------ backends

async fn every_property(url: &str) {
    exit_status_and_environment(url);
    busy_and_timeout(url).await;
    lost_mid_run(url).await;
    forwards_sigterm(url).await;
    status_inspect_release(url).await;
    semaphore_run_and_status(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_backend() {
    let file = sqlite_file();
    every_property(&file.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend() {
    let harness = SqlHarness::start(SqlKind::Postgres).await;
    every_property(&harness.lockkit_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend() {
    let url = format!(
        "{}?prefix=cli-{}",
        lockkit_tests::redis::shared_server_url(),
        lockkit_tests::server::random_suffix()
    );
    every_property(&url).await;
}
