//! `lockkit dag …` driven as a team would drive it: real processes, the
//! catalog and the locks on an SQLite file and on a private Postgres
//! server. Every check reads the recorded state (the catalog's rows) or a
//! process's exit; waits are on log lines and exits, never on sleeps.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use lockkit_dag::{Catalog, Outcome, RunRecord};
use lockkit_tests::sql_harness::{SqlHarness, SqlKind};

use common::*;

/// Where one test's pipelines keep their state.
struct Env {
    dir: tempfile::TempDir,
    /// The lock backend's URL.
    backend: String,
    /// The catalog's URL (`None`: derived from the backend's, the default).
    catalog: Option<String>,
    _harness: Option<SqlHarness>,
}

impl Env {
    fn sqlite() -> Self {
        let file = sqlite_file();
        Self {
            backend: file.url.clone(),
            catalog: None,
            dir: file.dir,
            _harness: None,
        }
    }

    async fn postgres() -> Self {
        let harness = SqlHarness::start(SqlKind::Postgres).await;
        // The catalog's tables in a schema of their own, so that tests do
        // not share them.
        let schema = format!("dag_{}", lockkit_tests::server::random_suffix());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(harness.pg())
            .await
            .unwrap();
        let sep = if harness.url().contains('?') {
            '&'
        } else {
            '?'
        };
        Self {
            backend: harness.lockkit_url(),
            catalog: Some(format!(
                "{}{sep}options=-c%20search_path%3D{schema}",
                harness.url()
            )),
            dir: tempfile::tempdir().unwrap(),
            _harness: Some(harness),
        }
    }

    fn catalog_url(&self) -> String {
        self.catalog.clone().unwrap_or_else(|| self.backend.clone())
    }

    fn dag(&self) -> Command {
        let mut cmd = lockkit(&self.backend);
        cmd.arg("dag");
        match &self.catalog {
            Some(url) => cmd.env("LOCKKIT_CATALOG", url),
            None => cmd.env_remove("LOCKKIT_CATALOG"),
        };
        cmd
    }

    fn spec(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn load(&self, yaml: &str) {
        let path = self.spec("pipelines.yaml", yaml);
        let out = output(self.dag().arg("load").arg(&path));
        assert_eq!(code(&out), 0, "load: {}", stderr(&out));
    }

    async fn runs(&self, ids: &[i64]) -> Vec<RunRecord> {
        Catalog::open(&self.catalog_url())
            .await
            .unwrap()
            .runs(ids)
            .await
            .unwrap()
    }
}

/// A `lockkit dag run` whose log lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(env: &Env, args: &[&str]) -> Self {
        let mut child = env
            .dag()
            .arg("run")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Takes the lines that have arrived; whether one contains `needle`.
    fn poll(&mut self, needle: &str) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().any(|l| l.contains(needle))
    }

    /// Waits for a log line containing `needle`.
    fn wait_for(&mut self, needle: &str) {
        let give_up = Instant::now() + GIVE_UP;
        while !self.seen.iter().any(|l| l.contains(needle)) {
            let left = give_up.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no log line {needle:?}; got:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Waits for the exit; the code, stdout, and every log line.
    fn finish(mut self) -> (i32, String, String) {
        let code = wait_exit(&mut self.child);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut self.child.stdout.take().unwrap(), &mut out).unwrap();
        // The reader thread ends at EOF.
        while let Ok(line) = self.lines.recv_timeout(GIVE_UP) {
            self.seen.push(line);
        }
        (code, out, self.seen.join("\n"))
    }
}

/// The run id in `run N of PIPELINE: …`.
fn run_id(summary: &str) -> i64 {
    summary
        .lines()
        .find_map(|l| l.strip_prefix("run ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no run id in {summary}"))
}

fn task<'a>(run: &'a RunRecord, name: &str) -> &'a lockkit_dag::TaskRunRecord {
    run.tasks.iter().find(|t| t.task == name).unwrap()
}

// ------------------------------------------------------------- properties

/// DAG1 and DAG2 run at once as two processes. The first to reach NodeB
/// holds it until the test has seen the other wait for the lock; the
/// recorded times show the two NodeB commands one after the other, with
/// rising tokens, and the timeline (text, SVG) says so.
async fn two_runs_never_overlap_the_shared_task(env: &Env) -> PathBuf {
    let gate = env.dir.path().join("gate");
    env.load(&format!(
        r#"
tasks:
  - {{name: NodeA, command: echo a}}
  - {{name: NodeD, command: echo d}}
  - name: NodeB
    command: echo "B of $LOCKKIT_PIPELINE, token $LOCKKIT_FENCING_TOKEN"; while [ ! -e '{gate}' ]; do sleep 0.05; done
    lock: {{lock_status: enable, lock_duration: 30s}}
  - {{name: NodeC, command: echo c}}
  - {{name: NodeE, command: echo e}}
pipelines:
  - {{name: DAG1, flow: Start -> NodeA -> NodeB -> NodeC -> End}}
  - {{name: DAG2, flow: Start -> NodeD -> NodeB -> NodeE -> End}}
"#,
        gate = gate.display()
    ));
    let mut runs = [
        Running::start(env, &["DAG1"]),
        Running::start(env, &["DAG2"]),
    ];
    // One holds NodeB while the other waits for it.
    let give_up = Instant::now() + GIVE_UP;
    loop {
        let started: Vec<bool> = runs.iter_mut().map(|r| r.poll("NodeB: started")).collect();
        let waiting: Vec<bool> = runs
            .iter_mut()
            .map(|r| r.poll("NodeB: waiting for lock NodeB"))
            .collect();
        if (started[0] && waiting[1] && !started[1]) || (started[1] && waiting[0] && !started[0]) {
            break;
        }
        assert!(
            !(started[0] && started[1]),
            "both NodeB commands started before the gate opened"
        );
        assert!(Instant::now() < give_up, "the runs did not meet at NodeB");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::fs::write(&gate, "").unwrap();
    let [one, two] = runs;
    let (code1, out1, log1) = one.finish();
    let (code2, out2, log2) = two.finish();
    assert_eq!(code1, 0, "{log1}");
    assert_eq!(code2, 0, "{log2}");
    let records = env.runs(&[run_id(&out1), run_id(&out2)]).await;
    let mut b: Vec<_> = records.iter().map(|r| task(r, "NodeB")).collect();
    b.sort_by_key(|t| t.started_at_ms);
    let (first, second) = (b[0], b[1]);
    assert!(
        first.ended_at_ms.unwrap() <= second.started_at_ms.unwrap(),
        "NodeB overlapped: {first:?} / {second:?}"
    );
    assert!(second.locked_at_ms.unwrap() >= first.ended_at_ms.unwrap());
    assert!(
        second.lock_wait_ms().unwrap() > 0,
        "the second waited: {second:?}"
    );
    assert!(first.token.unwrap() < second.token.unwrap(), "tokens rise");
    assert!(records.iter().all(|r| r.outcome == Outcome::Succeeded));
    assert!(
        out1.contains("TOKEN") && out1.contains("LOCK WAIT"),
        "{out1}"
    );

    let svg = env.dir.path().join("timeline.svg");
    let out = output(
        env.dag()
            .args(["timeline", "--last", "2", "--svg"])
            .arg(&svg),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("OK: lock NodeB was held by one run at a time (2 holds"),
        "{}",
        stdout(&out)
    );
    let bars = svg_bars(&std::fs::read_to_string(&svg).unwrap(), "NodeB");
    assert_eq!(bars.len(), 2, "{bars:?}");
    assert!(
        bars[0].1 <= bars[1].0,
        "the SVG's NodeB bars overlap: {bars:?}"
    );
    assert_eq!(
        bars,
        [
            (first.started_at_ms.unwrap(), first.ended_at_ms.unwrap()),
            (second.started_at_ms.unwrap(), second.ended_at_ms.unwrap())
        ]
    );
    svg
}

/// `(start, end)` of the `<rect class="task">` bars of `task`, by start.
fn svg_bars(svg: &str, task: &str) -> Vec<(i64, i64)> {
    let attr = |rect: &str, name: &str| -> i64 {
        let key = format!("{name}=\"");
        let at = rect.find(&key).unwrap() + key.len();
        rect[at..].split('"').next().unwrap().parse().unwrap()
    };
    let mut bars: Vec<(i64, i64)> = svg
        .split("<rect ")
        .filter(|r| r.starts_with("class=\"task\"") && r.contains(&format!("data-task=\"{task}\"")))
        .map(|r| (attr(r, "data-start-ms"), attr(r, "data-end-ms")))
        .collect();
    bars.sort_unstable();
    bars
}

/// With the lock held elsewhere, a `skip` task is skipped, its dependant
/// too, and the run still succeeds.
async fn the_skip_policy_skips(env: &Env) {
    env.load(
        "
tasks:
  - {name: A, command: echo a}
  - {name: B, command: echo ran-b, lock: {lock_status: enable, lock_duration: 30s, lock_name: warehouse, policy: skip}}
  - {name: C, command: echo ran-c}
pipelines:
  - {name: P, flow: Start -> A -> B -> C -> End}
",
    );
    let (_backend, guard) = hold(&env.backend, "warehouse", "nightly-holder").await;
    let (code, out, log) = Running::start(env, &["P"]).finish();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("ran-b") && !log.contains("ran-c"), "{log}");
    let run = &env.runs(&[run_id(&out)]).await[0];
    assert_eq!(run.outcome, Outcome::Succeeded);
    assert_eq!(task(run, "A").outcome, Outcome::Succeeded);
    let b = task(run, "B");
    assert_eq!(b.outcome, Outcome::Skipped);
    assert!(
        b.detail.as_deref().unwrap().contains("nightly-holder"),
        "{b:?}"
    );
    assert_eq!(b.started_at_ms, None);
    assert_eq!(task(run, "C").outcome, Outcome::Skipped);
    assert!(guard.release().await.unwrap());
}

/// Another process force-releases NodeB while it runs: the command gets
/// SIGTERM, the run fails with the lost code, NodeC never runs, and the
/// record says why. (The runner learns of it at its next renewal, within
/// a third of the 9 s TTL; the TTL leaves a loaded machine room to renew
/// until then.)
async fn a_lost_lease_stops_the_task(env: &Env) {
    env.load(
        "
tasks:
  - name: NodeB
    command: trap 'echo got-term; exit 0' TERM; echo started; while :; do sleep 0.05; done
    lock: {lock_status: enable, lock_duration: 9s}
  - {name: NodeC, command: echo ran-c}
pipelines:
  - {name: P, flow: Start -> NodeB -> NodeC -> End}
",
    );
    let mut run = Running::start(env, &["P", "--grace", "30s"]);
    run.wait_for("NodeB: | started");
    let out = output(lockkit(&env.backend).args(["release", "--force", "--yes", "NodeB"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (code, out, log) = run.finish();
    assert_eq!(code, 79, "{log}");
    assert!(log.contains("got-term"), "the command got SIGTERM: {log}");
    assert!(!log.contains("ran-c"), "{log}");
    let run = &env.runs(&[run_id(&out)]).await[0];
    assert_eq!(run.outcome, Outcome::Failed);
    assert!(
        run.detail.as_deref().unwrap().contains("NodeB lost"),
        "{run:?}"
    );
    let b = task(run, "NodeB");
    assert_eq!(b.outcome, Outcome::Lost);
    assert!(b.detail.as_deref().unwrap().contains("was lost"), "{b:?}");
    assert!(b.ended_at_ms.is_some());
    assert_eq!(task(run, "NodeC").outcome, Outcome::NotRun);
}

/// A failing task stops what depends on it; another branch still runs.
async fn a_failed_task_stops_its_dependants(env: &Env) {
    env.load(
        "
tasks:
  - {name: A, command: exit 3}
  - {name: B, command: echo ran-b}
  - {name: X, command: echo ran-x}
pipelines:
  - {name: P, flow: [Start -> A -> B -> End, Start -> X -> End]}
",
    );
    let (code, out, log) = Running::start(env, &["P", "--parallel", "1"]).finish();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("ran-x") && !log.contains("ran-b"), "{log}");
    let run = &env.runs(&[run_id(&out)]).await[0];
    assert_eq!(run.outcome, Outcome::Failed);
    let a = task(run, "A");
    assert_eq!((a.outcome, a.exit_code), (Outcome::Failed, Some(3)));
    let b = task(run, "B");
    assert_eq!(b.outcome, Outcome::NotRun);
    assert_eq!(b.detail.as_deref(), Some("A failed"));
    assert_eq!(task(run, "X").outcome, Outcome::Succeeded);
}

async fn every_property(env_of: impl AsyncFn() -> Env) -> PathBuf {
    let svg = two_runs_never_overlap_the_shared_task(&env_of().await).await;
    the_skip_policy_skips(&env_of().await).await;
    a_lost_lease_stops_the_task(&env_of().await).await;
    a_failed_task_stops_its_dependants(&env_of().await).await;
    svg
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_catalog_and_locks() {
    let env = Env::sqlite();
    let svg = two_runs_never_overlap_the_shared_task(&env).await;
    // The SVG opens in a browser, with both NodeB bars.
    let chromium = lockkit_tests::server::require_binary(
        "chromium",
        &["/usr/bin"],
        "install Chromium (Debian: apt-get install chromium)",
    );
    let (out, dom) = chromium_dom(&chromium, &format!("file://{}", svg.display()));
    assert!(out.status.success(), "chromium failed: {}", stderr(&out));
    assert_eq!(dom.matches(r#"class="task""#).count(), 6, "{dom}");
    let nodeb_bars = dom
        .split("<rect ")
        .filter(|r| r.starts_with(r#"class="task""#) && r.contains(r#"data-task="NodeB""#))
        .count();
    assert_eq!(nodeb_bars, 2, "{dom}");
    assert!(
        dom.split("<rect ")
            .any(|r| r.starts_with(r#"class="wait""#) && r.contains(r#"data-task="NodeB""#)),
        "the second NodeB's wait is drawn: {dom}"
    );
    the_skip_policy_skips(&Env::sqlite()).await;
    a_lost_lease_stops_the_task(&Env::sqlite()).await;
    a_failed_task_stops_its_dependants(&Env::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_catalog_and_locks() {
    every_property(Env::postgres).await;
}

// ---------------------------------------------------------- the CLI's face

const SEED: &str = "
tasks:
  - {name: NodeA, command: echo a}
  - {name: NodeB, notebook: nb.ipynb, lock: {lock_status: enable, lock_duration: 10 mins}}
  - {name: NodeC, command: echo c}
  - {name: NodeD, command: echo d}
  - {name: NodeE, command: echo e}
pipelines:
  - {name: DAG1, flow: Start -> NodeA -> NodeB -> NodeC -> End}
  - {name: DAG2, flow: Start -> NodeD -> NodeB -> NodeE -> End}
";

#[test]
fn shared_lint_show_and_every_bad_input() {
    let env = Env::sqlite();
    let good = env.spec("good.yaml", SEED);
    // The catalog defaults to the backend's SQLite file.
    let out = output(env.dag().arg("load").arg(&good));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("loaded 5 tasks, 2 pipelines"),
        "{}",
        stdout(&out)
    );
    let out = output(env.dag().arg("load").arg(&good));
    assert!(stdout(&out).starts_with("unchanged"), "{}", stdout(&out));

    let out = output(env.dag().arg("shared"));
    assert_eq!(code(&out), 0);
    let shared = stdout(&out);
    let row = shared
        .lines()
        .find(|l| l.starts_with("NodeB"))
        .unwrap_or_else(|| panic!("{shared}"));
    assert!(
        row.contains("DAG1, DAG2") && row.contains("locked: NodeB, 10m"),
        "{shared}"
    );
    let out = output(env.dag().args(["shared", "--json"]));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json[0]["task"], "NodeB");
    assert_eq!(json[0]["locked"], true);
    assert_eq!(json[0]["lock_duration_seconds"], 600.0);

    let out = output(env.dag().arg("lint"));
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let unlocked = env.spec(
        "unlocked.yaml",
        &SEED.replace(", lock: {lock_status: enable, lock_duration: 10 mins}", ""),
    );
    let out = output(env.dag().arg("lint").arg(&unlocked));
    assert_eq!(code(&out), 1, "lint fails on an unlocked shared task");
    assert!(
        stdout(&out).contains("error: unlocked shared task: task NodeB is shared by pipelines DAG1, DAG2 but has no lock"),
        "{}",
        stdout(&out)
    );

    let out = output(env.dag().args(["show", "DAG2"]));
    assert_eq!(code(&out), 0);
    let shown = stdout(&out);
    assert!(
        shown.starts_with("DAG2: Start -> NodeD -> NodeB -> NodeE -> End"),
        "{shown}"
    );
    assert!(shown.contains("lock NodeB (10m, wait)"), "{shown}");

    // An invalid spec: every problem with its file and line; nothing loaded.
    let bad = env.spec(
        "bad.yaml",
        "
tasks:
  - {name: NodeA, command: echo a}
  - {name: NodeB, command: echo b, lock: {lock_status: enable}}
pipelines:
  - {name: DAG1, flow: [Start -> NodeA -> NodeB -> End, NodeB -> NodeA]}
  - {name: DAG9, flow: Start -> NodeZ -> End}
",
    );
    let out = output(env.dag().arg("load").arg(&bad));
    assert_eq!(code(&out), 65, "{}", stderr(&out));
    let err = stderr(&out);
    let file = bad.display().to_string();
    for expected in [
        format!("lockkit: {file}:4: task NodeB: the lock is enabled but has no lock_duration"),
        format!("lockkit: {file}:7: pipeline DAG9: unknown task \"NodeZ\""),
        "nothing was loaded".to_owned(),
    ] {
        assert!(err.contains(&expected), "{expected:?} in {err}");
    }
    let cycle = env.spec(
        "cycle.yaml",
        "tasks: [{name: A, command: x}, {name: B, command: x}]\npipelines:\n  - {name: L, flow: [Start -> A -> B -> End, B -> A]}\n",
    );
    let out = output(env.dag().arg("load").arg(&cycle));
    assert_eq!(code(&out), 65);
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "lockkit: {}:3: pipeline L: cycle A -> B -> A (the spec is invalid; nothing was loaded)",
            cycle.display()
        ),
        "one line for one problem"
    );
    let out = output(env.dag().args(["show", "DAG1"]));
    assert_eq!(
        code(&out),
        0,
        "the old spec is still there: {}",
        stderr(&out)
    );
    let out = output(env.dag().arg("shared"));
    assert!(stdout(&out).contains("NodeB"), "unchanged");

    let out = output(
        env.dag()
            .arg("load")
            .arg(env.dir.path().join("missing.yaml")),
    );
    assert_eq!(code(&out), 66, "{}", stderr(&out));
    let out = output(env.dag().args(["run", "DAG7"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no pipeline \"DAG7\" in the catalog (known: DAG1, DAG2)"),
        "{}",
        stderr(&out)
    );
    let out = output(env.dag().args(["timeline", "4242"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    // An unreachable catalog: exit 69, password redacted; a bad URL: 78.
    let out = output(
        env.dag()
            .env("LOCKKIT_CATALOG", "postgres://etl:hunter2@127.0.0.1:1/ops")
            .arg("shared"),
    );
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    let out = output(
        env.dag()
            .env("LOCKKIT_CATALOG", "redis://127.0.0.1/")
            .arg("shared"),
    );
    assert_eq!(code(&out), 78, "{}", stderr(&out));
    let out = output(env.dag().args(["run", "DAG1", "--parallel", "0"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

/// Every SQL panel of `deploy/grafana/lockkit-pipelines.json` runs on a
/// real Postgres catalog after real runs, and returns the columns its panel
/// reads with the values those runs imply.
#[tokio::test(flavor = "multi_thread")]
async fn the_pipelines_dashboard_queries_run_on_a_real_catalog() {
    use sqlx::Row;
    let env = Env::postgres().await;
    a_failed_task_stops_its_dependants(&env).await;
    two_runs_never_overlap_the_shared_task(&env).await;
    let pool = sqlx::PgPool::connect(&env.catalog_url()).await.unwrap();
    let expected: &[(&str, &[&str])] = &[
        (
            "Shared tasks",
            &["task", "pipelines", "locked", "lock_name"],
        ),
        ("Runs by outcome", &["outcome", "runs"]),
        ("Lock wait per lock (ms)", &["time", "metric", "value"]),
        ("Task run time (s)", &["time", "metric", "value"]),
        (
            "Recent runs",
            &[
                "run_id",
                "pipeline",
                "owner",
                "started_at",
                "seconds",
                "outcome",
                "detail",
            ],
        ),
        (
            "Failed tasks and lost leases",
            &[
                "run_id",
                "pipeline",
                "task",
                "outcome",
                "exit_code",
                "token",
                "detail",
                "ended_at",
            ],
        ),
    ];
    let panels = run_sql_panels(
        "deploy/grafana/lockkit-pipelines.json",
        &pool,
        &[],
        expected,
    )
    .await;
    for (title, rows) in panels {
        let first = &rows[0];
        match title.as_str() {
            "Shared tasks" => {
                assert_eq!(rows.len(), 1);
                assert_eq!(first.get::<String, _>("task"), "NodeB");
                assert_eq!(first.get::<String, _>("pipelines"), "DAG1, DAG2");
                assert!(first.get::<bool, _>("locked"));
            }
            "Runs by outcome" => {
                let counts: Vec<(String, i64)> = rows
                    .iter()
                    .map(|r| (r.get("outcome"), r.get("runs")))
                    .collect();
                assert_eq!(
                    counts,
                    [("failed".to_owned(), 1), ("succeeded".to_owned(), 2)]
                );
            }
            "Lock wait per lock (ms)" => {
                assert_eq!(rows.len(), 2);
                assert!(rows.iter().all(|r| r.get::<String, _>("metric") == "NodeB"));
                assert!(
                    rows.iter().any(|r| r.get::<i64, _>("value") > 0),
                    "one waited"
                );
            }
            "Task run time (s)" => assert_eq!(rows.len(), 2 + 6, "A and X, then six"),
            "Recent runs" => assert_eq!(rows.len(), 3),
            _ => {
                assert_eq!(rows.len(), 1);
                assert_eq!(first.get::<String, _>("task"), "A");
                assert_eq!(first.get::<i64, _>("exit_code"), 3);
            }
        }
    }
}
