//! Helpers shared by the CLI's test files: the binary, its output, a
//! private SQLite file, a lock held by the test itself, headless Chromium.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockkit::{LockBackend, LockOptions, Locker};

pub const BIN: &str = env!("CARGO_BIN_EXE_lockkit");

/// Far above anything these steps take; only a hang reaches it.
pub const GIVE_UP: Duration = Duration::from_secs(120);

pub fn lockkit(backend: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("LOCKKIT_BACKEND", backend)
        // No user's config file leaks into the tests.
        .env("XDG_CONFIG_HOME", "/nonexistent/lockkit-tests")
        .env_remove("LOCKKIT_CONFIG")
        .stdin(Stdio::null());
    cmd
}

pub fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("run lockkit")
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh SQLite database file for one test.
pub struct SqliteFile {
    pub dir: tempfile::TempDir,
    pub url: String,
}

pub fn sqlite_file() -> SqliteFile {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("locks.db").display());
    SqliteFile { dir, url }
}

pub async fn backend(url: &str) -> Arc<dyn LockBackend> {
    lockkit::connect(url).await.expect("connect")
}

pub async fn hold(
    url: &str,
    name: &str,
    owner: &str,
) -> (Arc<dyn LockBackend>, lockkit::LockGuard) {
    let backend = backend(url).await;
    let guard = Locker::new(Arc::clone(&backend), owner)
        .expect("locker")
        .acquire_with(name, &LockOptions::new().ttl(Duration::from_secs(3)))
        .await
        .expect("hold the lock");
    (backend, guard)
}

/// Waits for the process to exit (a hang fails after [`GIVE_UP`]).
pub fn wait_exit(child: &mut Child) -> i32 {
    let give_up = Instant::now() + GIVE_UP;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code().expect("lockkit exits, it is not killed");
        }
        assert!(Instant::now() < give_up, "lockkit did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Loads `url` in headless Chromium; its output and the rendered DOM.
pub fn chromium_dom(chromium: &Path, url: &str) -> (Output, String) {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = output(
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url),
    );
    let dom = stdout(&out);
    (out, dom)
}

/// A file of the repository, by its path from the root.
pub fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// `(panel title, query)` of every target of a Grafana dashboard, the query
/// from the target's `field` (`expr`, `rawSql`).
pub fn dashboard_queries(path: &str, field: &str) -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file(path)).expect("dashboard JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("title").to_owned();
        for target in panel["targets"].as_array().expect("targets") {
            queries.push((
                title.clone(),
                target[field].as_str().expect(field).to_owned(),
            ));
        }
    }
    assert!(!queries.is_empty(), "{path} has no queries");
    queries
}

/// Runs every SQL panel of the Postgres dashboard at `path` on `pool`
/// (`vars` replaces the dashboard's `$variables`) and checks that each
/// returns rows with the columns `expected` lists for its title; the
/// panels' titles and rows.
pub async fn run_sql_panels(
    path: &str,
    pool: &sqlx::PgPool,
    vars: &[(&str, &str)],
    expected: &[(&str, &[&str])],
) -> Vec<(String, Vec<sqlx::postgres::PgRow>)> {
    use sqlx::{Column, Row};
    let queries = dashboard_queries(path, "rawSql");
    assert_eq!(
        queries.len(),
        expected.len(),
        "{path}: one expectation per panel"
    );
    let mut results = Vec::new();
    for (title, sql) in queries {
        let columns = expected
            .iter()
            .find(|(t, _)| *t == title)
            .unwrap_or_else(|| panic!("no expectation for panel {title:?}"))
            .1;
        // The dashboard's own query text, with the test's values.
        let sql = vars
            .iter()
            .fold(sql, |sql, (var, value)| sql.replace(var, value));
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{title}: {sql}: {e}"));
        let first = rows.first().unwrap_or_else(|| panic!("{title}: no rows"));
        let names: Vec<&str> = first.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, columns, "{title}");
        results.push((title, rows));
    }
    results
}
