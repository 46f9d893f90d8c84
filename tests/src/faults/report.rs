//! The reliability report: which fault holds on which backend, what is a
//! documented limitation, and the figures measured.
//!
//! [`MATRIX`] is the expected verdict of every (backend, fault) cell that
//! applies. Each fault test computes its verdict from what it observed and
//! [`record`]s it: the test fails when the verdict differs from the
//! matrix, so a changed behaviour cannot go unnoticed in either direction.
//! Recorded outcomes go to `target/reliability/`; the `reliability_report`
//! binary merges them into `docs/reliability/results.json` and renders
//! `docs/RELIABILITY.md`, and `tests/tests/reliability_report.rs` fails
//! when either is stale.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What a fault test found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every property of the fault held.
    Holds,
    /// A property the backend cannot keep under this fault (see the note).
    Limitation,
}

/// One expected cell of the report.
#[derive(Debug, Clone, Copy)]
pub struct Cell {
    /// The backend key (see [`BACKENDS`]).
    pub backend: &'static str,
    /// The fault key (see [`FAULTS`]).
    pub fault: &'static str,
    /// What the test must find.
    pub expect: Verdict,
}

/// Backend keys and how the report names them, in report order.
pub const BACKENDS: &[(&str, &str)] = &[
    ("sqlite", "SQLite"),
    ("postgres", "Postgres"),
    ("mariadb", "MariaDB"),
    ("redis", "Redis"),
    ("redis-aof", "Redis (AOF always)"),
    ("redis-fifo", "Redis FIFO"),
    ("redis-cluster", "Redis Cluster"),
    ("etcd", "etcd"),
    ("etcd-3", "etcd ×3"),
    ("zookeeper", "ZooKeeper"),
    ("zookeeper-3", "ZooKeeper ×3"),
];

/// Fault keys and their descriptions, in report order.
pub const FAULTS: &[(&str, &str)] = &[
    (
        "holder-paused",
        "holder SIGSTOPped past its TTL; a competitor takes the lock; the holder resumes and sends its write",
    ),
    (
        "replies-delayed",
        "every reply delayed past the TTL (proxy) while holding, and for a new grant",
    ),
    (
        "cut-mid-hold",
        "the holder's connections cut (proxy, RST) while it holds",
    ),
    (
        "cut-mid-acquire",
        "the grant applied on the server, its reply lost, the connection cut: the ambiguous acquire",
    ),
    (
        "server-paused",
        "the server SIGSTOPped past the TTL while a lock is held, then resumed",
    ),
    (
        "server-restarted",
        "the server SIGKILLed and restarted on its data directory while a lock is held",
    ),
    (
        "holder-killed",
        "the holder SIGKILLed: the lock must be free within TTL + the backend's expiry slack",
    ),
    (
        "clock-jump",
        "holders whose wall clock is an hour ahead or behind (faketime)",
    ),
    (
        "leader-killed",
        "the cluster leader SIGKILLed while a lock is held and waited for",
    ),
    (
        "leader-partitioned",
        "the leader cut off from the majority (network namespaces + iptables) while its client holds a lock",
    ),
    (
        "replica-promoted",
        "an acknowledged grant not yet replicated; the replica promoted (REPLICAOF NO ONE)",
    ),
    (
        "contended-counter",
        "three processes increment a fenced counter under the lock with random sleeps; one is paused inside its critical section",
    ),
];

const fn holds(backend: &'static str, fault: &'static str) -> Cell {
    Cell {
        backend,
        fault,
        expect: Verdict::Holds,
    }
}

const fn limitation(backend: &'static str, fault: &'static str) -> Cell {
    Cell {
        backend,
        fault,
        expect: Verdict::Limitation,
    }
}

/// Every cell that applies, with its expected verdict. A cell missing here
/// does not apply (see [`NOT_APPLICABLE`]).
pub const MATRIX: &[Cell] = &[
    holds("sqlite", "holder-paused"),
    holds("sqlite", "holder-killed"),
    holds("sqlite", "clock-jump"),
    holds("sqlite", "contended-counter"),
    holds("postgres", "holder-paused"),
    holds("postgres", "replies-delayed"),
    holds("postgres", "cut-mid-hold"),
    holds("postgres", "cut-mid-acquire"),
    holds("postgres", "server-paused"),
    holds("postgres", "server-restarted"),
    holds("postgres", "holder-killed"),
    holds("postgres", "clock-jump"),
    holds("postgres", "contended-counter"),
    holds("mariadb", "holder-paused"),
    holds("mariadb", "replies-delayed"),
    holds("mariadb", "cut-mid-hold"),
    holds("mariadb", "cut-mid-acquire"),
    holds("mariadb", "server-paused"),
    holds("mariadb", "server-restarted"),
    holds("mariadb", "holder-killed"),
    holds("mariadb", "clock-jump"),
    holds("mariadb", "contended-counter"),
    holds("redis", "holder-paused"),
    holds("redis", "replies-delayed"),
    holds("redis", "cut-mid-hold"),
    holds("redis", "cut-mid-acquire"),
    holds("redis", "server-paused"),
    limitation("redis", "server-restarted"),
    holds("redis", "holder-killed"),
    holds("redis", "clock-jump"),
    limitation("redis", "replica-promoted"),
    holds("redis", "contended-counter"),
    holds("redis-aof", "server-restarted"),
    holds("redis-fifo", "holder-paused"),
    holds("redis-fifo", "cut-mid-acquire"),
    holds("redis-fifo", "holder-killed"),
    holds("redis-fifo", "contended-counter"),
    holds("redis-cluster", "holder-paused"),
    holds("redis-cluster", "holder-killed"),
    holds("redis-cluster", "contended-counter"),
    holds("etcd", "holder-paused"),
    holds("etcd", "replies-delayed"),
    holds("etcd", "cut-mid-hold"),
    holds("etcd", "cut-mid-acquire"),
    holds("etcd", "server-paused"),
    holds("etcd", "server-restarted"),
    holds("etcd", "holder-killed"),
    holds("etcd", "clock-jump"),
    holds("etcd", "contended-counter"),
    holds("etcd-3", "leader-killed"),
    holds("etcd-3", "leader-partitioned"),
    holds("etcd-3", "contended-counter"),
    holds("zookeeper", "holder-paused"),
    holds("zookeeper", "replies-delayed"),
    holds("zookeeper", "cut-mid-hold"),
    holds("zookeeper", "cut-mid-acquire"),
    holds("zookeeper", "server-paused"),
    holds("zookeeper", "server-restarted"),
    holds("zookeeper", "holder-killed"),
    holds("zookeeper", "clock-jump"),
    holds("zookeeper", "contended-counter"),
    holds("zookeeper-3", "leader-killed"),
    holds("zookeeper-3", "leader-partitioned"),
    holds("zookeeper-3", "contended-counter"),
];

/// Why cells are absent from the matrix, for the report.
pub const NOT_APPLICABLE: &[&str] = &[
    "SQLite is a file, not a server: no network or server faults apply; its clock is the machine's.",
    "Network faults (proxy) run against one server per backend; Redis Cluster clients follow \
     MOVED redirects to the nodes' own addresses, so a proxy cannot stand in front of them.",
    "Leader faults need a cluster: etcd ×3 and ZooKeeper ×3. Redis has no consensus: its failover \
     is the replica-promoted row.",
    "Redis FIFO and Redis Cluster share the standalone server's network and restart behaviour; \
     their rows cover what their own scripts add (queues, slots).",
    "The in-memory backend lives in one process: none of these faults apply to it; the \
     conformance suite is its contract test.",
];

/// How the suite's servers are configured, which decides what a restart
/// may forget; for the report.
pub const CONFIGURATION: &[&str] = &[
    "Postgres: durable (`fsync`, `synchronous_commit`, `full_page_writes` on). With \
     `synchronous_commit=off` a killed server forgets commits it has acknowledged: during \
     development the suite saw a grant vanish and its token handed out again after a restart \
     (the fenced store refused the second use). Keep `synchronous_commit` on for the lock table.",
    "MariaDB: `innodb_flush_log_at_trx_commit=2`: a killed server keeps every commit (the log \
     is in the OS cache); a machine crash could lose the last second. Use 1 where machines crash.",
    "Redis: no persistence (`appendonly no`, `save \"\"`), and the Redis (AOF always) row with \
     `appendonly yes` + `appendfsync always`.",
    "etcd and ZooKeeper: their defaults (every write fsynced before it is acknowledged); etcd's data \
     directory on tmpfs where available, which survives a process kill but not a reboot.",
    "SQLite: the default journal; a killed holder process cannot lose a committed grant.",
];

/// Notes on the limitations, for the report.
pub const LIMITATION_NOTES: &[(&str, &str, &str)] = &[
    (
        "redis",
        "server-restarted",
        "Without persistence (`appendonly no`, the default here), a restarted Redis has forgotten \
         every lease and fence counter: the next grant comes at once and its token starts again \
         at or below the old holder's. The old holder learns of the loss at its next renewal; a fenced \
         store refuses the new holder's token (stale, or reused) until the counter passes the old \
         one. With \
         `appendonly yes` + `appendfsync always` (row Redis (AOF always)) tokens survive.",
    ),
    (
        "redis",
        "replica-promoted",
        "Redis replicates asynchronously: a grant acknowledged by the primary and not yet on the \
         replica is gone after a promotion, and the next grant reuses its token. Both holders \
         believe they hold the lock; the fenced store detects it (the second lease with the same \
         token is refused as `Reused`). Only fencing at the store makes Redis failover safe.",
    ),
];

/// What one fault test measured, as stored in `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The backend key.
    pub backend: String,
    /// The fault key.
    pub fault: String,
    /// The verdict computed from the observations.
    pub verdict: Verdict,
    /// What violated a property (empty when the verdict is `holds`).
    #[serde(default)]
    pub observed: Vec<String>,
    /// Measured figures, e.g. `detect_ms`, `recover_ms`, `grants_during`.
    #[serde(default)]
    pub figures: BTreeMap<String, String>,
}

impl Outcome {
    /// An outcome for `backend` × `fault` with no observations yet.
    pub fn new(backend: &str, fault: &str) -> Self {
        Self {
            backend: backend.to_owned(),
            fault: fault.to_owned(),
            verdict: Verdict::Holds,
            observed: Vec::new(),
            figures: BTreeMap::new(),
        }
    }

    /// Adds a figure.
    pub fn figure(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.figures.insert(key.to_owned(), value.to_string());
        self
    }

    /// Adds a milliseconds figure, rounded.
    pub fn ms(&mut self, key: &str, ms: f64) -> &mut Self {
        self.figure(key, format!("{ms:.0}"))
    }

    /// Records a property violation (the verdict becomes `limitation`).
    pub fn violated(&mut self, what: impl Into<String>) -> &mut Self {
        self.observed.push(what.into());
        self.verdict = Verdict::Limitation;
        self
    }

    /// Records a violation when `ok` is false.
    pub fn require(&mut self, ok: bool, what: impl Into<String>) -> &mut Self {
        if !ok {
            self.violated(what);
        }
        self
    }
}

/// The matrix cell of `backend` × `fault`.
pub fn cell(backend: &str, fault: &str) -> Option<Cell> {
    MATRIX
        .iter()
        .find(|c| c.backend == backend && c.fault == fault)
        .copied()
}

/// Where fault tests write their outcomes: `target/reliability/`.
pub fn results_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("reliability")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes `outcome` to [`results_dir`] and checks it against [`MATRIX`].
///
/// # Panics
/// When the cell is not in the matrix, or the verdict differs from the
/// expected one (with what was observed): the behaviour changed, so either
/// the code or the matrix (and the report) must change.
pub fn record(outcome: &Outcome) {
    let dir = results_dir();
    std::fs::create_dir_all(&dir).expect("create target/reliability");
    let file = dir.join(format!("{}__{}.json", outcome.backend, outcome.fault));
    let json = serde_json::to_string_pretty(outcome).expect("encode the outcome");
    std::fs::write(&file, json).expect("write the outcome");
    let cell = cell(&outcome.backend, &outcome.fault).unwrap_or_else(|| {
        panic!(
            "{} × {} is not in faults::report::MATRIX",
            outcome.backend, outcome.fault
        )
    });
    assert_eq!(
        outcome.verdict,
        cell.expect,
        "{} × {}: expected {:?}, found {:?}: {:#?}\nfigures: {:?}",
        outcome.backend,
        outcome.fault,
        cell.expect,
        outcome.verdict,
        outcome.observed,
        outcome.figures
    );
}

/// Problems that make `results` unfit for the report: cells missing or
/// extra, verdicts that differ from the matrix.
pub fn check_results(results: &[Outcome]) -> Vec<String> {
    let mut problems = Vec::new();
    for cell in MATRIX {
        match results
            .iter()
            .find(|r| r.backend == cell.backend && r.fault == cell.fault)
        {
            None => problems.push(format!("no result for {} × {}", cell.backend, cell.fault)),
            Some(r) if r.verdict != cell.expect => problems.push(format!(
                "{} × {}: result says {:?}, the matrix {:?}",
                cell.backend, cell.fault, r.verdict, cell.expect
            )),
            Some(_) => {}
        }
    }
    for r in results {
        if cell(&r.backend, &r.fault).is_none() {
            problems.push(format!(
                "result for {} × {} is not in the matrix",
                r.backend, r.fault
            ));
        }
    }
    problems
}

fn describe_figures(figures: &BTreeMap<String, String>) -> String {
    figures
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders `docs/RELIABILITY.md` from the matrix and `results`.
pub fn render(results: &[Outcome]) -> String {
    let find = |b: &str, f: &str| results.iter().find(|r| r.backend == b && r.fault == f);
    let mut md = String::new();
    md.push_str(
        "# Reliability under faults\n\n\
         <!-- Generated by `cargo run -p lockkit-tests --bin reliability_report` from \
         docs/reliability/results.json; tests/tests/reliability_report.rs fails when it is stale. -->\n\n\
         What lockkit promises when servers, networks and holders misbehave, per backend, as \
         measured by the fault suite (`tests/tests/faults_*.rs`, run by `.ci/run`). Each cell is \
         one test: **holds** means every property below held; **limitation** means the test \
         shows a documented limitation of the backend (notes at the end); — means the fault \
         does not apply.\n\n\
         Properties checked in every cell: the recorded history of grants, renewals, losses and \
         releases from several processes fits a mutex model (no two claims overlap once a \
         holder past its safe deadline counts as having lost the lease; tokens rise in grant \
         order); no write with a stale token is accepted by the fenced store; the figures are \
         milliseconds on `CLOCK_MONOTONIC`, measured on a shared 2-core machine (orders of \
         magnitude, not benchmarks).\n\n",
    );
    md.push_str("| backend |");
    for (i, _) in FAULTS.iter().enumerate() {
        let _ = write!(md, " {} |", i + 1);
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(FAULTS.len()));
    md.push('\n');
    for (key, label) in BACKENDS {
        let _ = write!(md, "| {label} |");
        for (fault, _) in FAULTS {
            let mark = match (cell(key, fault), find(key, fault)) {
                (None, _) => "—",
                (Some(_), None) => "not run",
                (Some(_), Some(r)) => match r.verdict {
                    Verdict::Holds => "holds",
                    Verdict::Limitation => "limitation",
                },
            };
            let _ = write!(md, " {mark} |");
        }
        md.push('\n');
    }
    md.push_str("\nFaults:\n\n");
    for (i, (key, text)) in FAULTS.iter().enumerate() {
        let _ = writeln!(md, "{}. `{key}`: {text}.", i + 1);
    }
    md.push_str("\n## Figures\n");
    for (fault, text) in FAULTS {
        let _ = write!(
            md,
            "\n### `{fault}`\n\n{text}.\n\n| backend | verdict | figures |\n|---|---|---|\n"
        );
        for (key, label) in BACKENDS {
            if let Some(r) = find(key, fault) {
                let verdict = match r.verdict {
                    Verdict::Holds => "holds",
                    Verdict::Limitation => "limitation",
                };
                let _ = writeln!(
                    md,
                    "| {label} | {verdict} | {} |",
                    describe_figures(&r.figures)
                );
            }
        }
    }
    md.push_str("\n## Limitations\n\n");
    for (backend, fault, note) in LIMITATION_NOTES {
        let label = BACKENDS
            .iter()
            .find(|(k, _)| k == backend)
            .map_or(*backend, |(_, l)| l);
        let _ = writeln!(md, "- **{label} × `{fault}`.** {note}");
        if let Some(r) = find(backend, fault) {
            for what in &r.observed {
                let _ = writeln!(md, "  - observed: {what}");
            }
        }
    }
    md.push_str("\n## Server configuration\n\n");
    for line in CONFIGURATION {
        let _ = writeln!(md, "- {line}");
    }
    md.push_str("\n## Not applicable\n\n");
    for why in NOT_APPLICABLE {
        let _ = writeln!(md, "- {why}");
    }
    md.push_str(
        "\n## Regenerating\n\n\
         ```sh\n\
         cargo test -p lockkit-tests --all-features --test 'faults_*'\n\
         cargo run -p lockkit-tests --bin reliability_report\n\
         ```\n\n\
         The first command writes one outcome per cell to `target/reliability/`; the second \
         merges them into `docs/reliability/results.json` and renders this page. \
         `LOCKKIT_FAULT_SOAK=1` runs the soak variant of the lost-update counter (six \
         processes × 40 rounds instead of three × 6).\n",
    );
    md
}
