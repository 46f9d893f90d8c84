//! The report: `results.json` (everything measured) and `README.md`
//! (tables, goals, machine), both in the output directory.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::scenarios::Contention;
use crate::stats::Percentiles;
use crate::subject::{Family, Result};
use crate::upkeep::Upkeep;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// UTC time the run started.
    pub date: String,
    /// `--quick` (short runs: a smoke test, not figures to publish).
    pub quick: bool,
    /// The machine and the servers' versions.
    pub machine: Vec<(String, String)>,
    /// Per backend.
    pub backends: Vec<BackendReport>,
    /// Safety failures (overlaps, token order): any makes the run fail.
    pub failures: Vec<String>,
}

/// One backend's results.
#[derive(Debug, Default, Serialize)]
pub struct BackendReport {
    /// Short id.
    pub id: String,
    /// Heading.
    pub label: String,
    /// `SELECT 1` / `PING` / … round trip.
    pub rtt: Option<Percentiles>,
    /// The subjects, with how they were configured.
    pub subjects: Vec<SubjectInfo>,
    /// P1 rows.
    pub p1: Vec<P1Row>,
    /// P2–P4 runs.
    pub contention: Vec<ContentionRow>,
    /// P5 rows.
    pub p5: Vec<P5Row>,
    /// What P6 counted at the server.
    pub p6_counter: Option<String>,
    /// P6 runs (lockkit only).
    pub p6: Vec<Upkeep>,
    /// P7 runs: lockkit on a lock and on a semaphore.
    pub p7: Vec<P7Row>,
    /// Scenarios that could not run, with the error.
    pub errors: Vec<String>,
}

/// A subject as the report names it.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectInfo {
    /// Label.
    pub label: String,
    /// lockkit, raw or peer.
    pub family: Family,
    /// Configuration note.
    pub note: Option<String>,
}

/// P1: uncontended acquire+release.
#[derive(Debug, Clone, Serialize)]
pub struct P1Row {
    /// Subject label.
    pub subject: String,
    /// Latency of one acquire+release.
    pub latency: Percentiles,
    /// p50 over the raw subject's p50.
    pub ratio_vs_raw: Option<f64>,
}

/// P2/P3/P4: one contended run.
#[derive(Debug, Clone, Serialize)]
pub struct ContentionRow {
    /// `P2`, `P3` or `P4`.
    pub scenario: String,
    /// Subject label.
    pub subject: String,
    /// lockkit, raw or peer.
    pub family: Family,
    /// The run.
    pub run: Contention,
}

/// P7: one run of lockkit's semaphore admission.
#[derive(Debug, Clone, Serialize)]
pub struct P7Row {
    /// Permits per name (1: the lock it is compared with).
    pub permits: u32,
    /// The run.
    pub run: Contention,
}

/// P5: one scale-out level.
#[derive(Debug, Clone, Serialize)]
pub struct P5Row {
    /// Tasks (= distinct locks).
    pub tasks: usize,
    /// Subject label.
    pub subject: String,
    /// Grants per second over all tasks.
    pub grants_per_s: f64,
    /// Over the raw subject at the same level.
    pub ratio_vs_raw: Option<f64>,
}

impl BackendReport {
    /// The run of `scenario` for the lockkit subject with `n` contenders.
    pub fn lockkit_run(&self, scenario: &str, n: usize) -> Option<&Contention> {
        self.contention
            .iter()
            .find(|r| {
                r.scenario == scenario && r.family == Family::Lockkit && r.run.contenders == n
            })
            .map(|r| &r.run)
    }

    /// The run of `scenario` with `n` contenders for the subject whose
    /// label starts with `label`.
    fn subject_run(&self, label: &str, scenario: &str, n: usize) -> Option<&Contention> {
        self.contention
            .iter()
            .find(|r| {
                r.scenario == scenario && r.subject.starts_with(label) && r.run.contenders == n
            })
            .map(|r| &r.run)
    }

    fn rtt_us(&self) -> Option<f64> {
        self.rtt.map(|p| p.p50_us).filter(|&us| us > 0.0)
    }
}

fn ms(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.1} µs")
    } else if us >= 100_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn in_rtts(us: f64, rtt: Option<f64>) -> String {
    rtt.map_or_else(String::new, |rtt| format!(" ({:.1} RTT)", us / rtt))
}

/// The goals of the benchmark issue that a backend's lockkit figures miss.
pub fn missed_goals(backend: &BackendReport) -> Vec<String> {
    let mut missed = Vec::new();
    if let Some(ratio) = backend
        .p1
        .iter()
        .find(|r| r.subject == "lockkit")
        .and_then(|r| r.ratio_vs_raw)
        && ratio > 1.10
    {
        missed.push(format!("P1 {ratio:.2}× raw (goal ≤ 1.10×)"));
    }
    if let (Some(run), Some(rtt)) = (backend.lockkit_run("P2", 8), backend.rtt_us()) {
        let (p50, p99) = (
            run.cross_handoff.p50_us / rtt,
            run.cross_handoff.p99_us / rtt,
        );
        if p50 > 3.0 {
            missed.push(format!("P2 handoff p50 {p50:.1} RTT (goal ≤ 3)"));
        }
        if p99 > 10.0 {
            missed.push(format!("P2 handoff p99 {p99:.1} RTT (goal ≤ 10)"));
        }
    }
    if let (Some(run), Some(peer)) = (
        backend.lockkit_run("P2", 8),
        backend.subject_run("rslock", "P2", 8),
    ) && run.waiter_wait.p50_us * 10.0 > peer.waiter_wait.p50_us
    {
        missed.push(format!(
            "P2 n=8 waiter wait p50 {} vs rslock's {} (goal ≥ 10× lower)",
            ms(run.waiter_wait.p50_us),
            ms(peer.waiter_wait.p50_us)
        ));
    }
    if let (Some(run), Some(floor)) = (
        backend.lockkit_run("P2", 8),
        backend.subject_run("raw pg_advisory_lock", "P2", 8),
    ) && run.wait.max_us > 2.0 * floor.wait.max_us
    {
        missed.push(format!(
            "P2 n=8 worst wait {} vs pg_advisory_lock's {} (goal ≤ 2×)",
            ms(run.wait.max_us),
            ms(floor.wait.max_us)
        ));
    }
    if let Some(run) = backend.lockkit_run("P4", 16) {
        if run.jain < 0.95 {
            missed.push(format!("P4 Jain {:.2} (goal ≥ 0.95)", run.jain));
        }
        let bound = 1.0 / 16.0 + 0.10;
        if run.self_regrant > bound {
            missed.push(format!(
                "P4 self-regrant {:.0}% (goal ≤ {:.0}%)",
                run.self_regrant * 100.0,
                bound * 100.0
            ));
        }
    }
    if let Some(worst) = backend
        .p5
        .iter()
        .filter(|r| r.subject == "lockkit")
        .filter_map(|r| r.ratio_vs_raw.map(|x| (r.tasks, x)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        && worst.1 < 0.7
    {
        missed.push(format!(
            "P5 {:.2}× raw at N = {} (goal ≥ 0.7×)",
            worst.1, worst.0
        ));
    }
    if let Some(big) = backend.p6.last()
        && big.heap_bytes_per_lock > 1024.0
    {
        missed.push(format!(
            "P6 {:.0} B heap per held lock (goal ≤ 1 KiB)",
            big.heap_bytes_per_lock
        ));
    }
    if let (Some(small), Some(big)) = (backend.p6.first(), backend.p6.last())
        && let (Some(a), Some(b)) = (small.requests_per_period, big.requests_per_period)
        && big.held > small.held
        && b > 2.0 * a.max(1.0) + 2.0
    {
        missed.push(format!(
            "P6 requests per period grow with held locks ({a:.0} at {} → {b:.0} at {})",
            small.held, big.held
        ));
    }
    missed
}

/// The headline table (also copied into the repository README).
pub fn headline(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| backend | RTT p50 | P1 acquire+release p50 (× raw) | P2 n=8 cross handoff p50 / p99 | P2 n=8 waiter wait p50 / max | P3 grants/s (n=16) | P4 Jain (n=16) | P5 × raw (worst N) | P6 requests/period, held 100 → many |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for b in &report.backends {
        let rtt = b.rtt_us();
        let p1 =
            b.p1.iter()
                .find(|r| r.subject == "lockkit")
                .map_or("–".to_owned(), |r| {
                    format!(
                        "{}{}",
                        ms(r.latency.p50_us),
                        r.ratio_vs_raw
                            .map_or(String::new(), |x| format!(" ({x:.2}×)"))
                    )
                });
        let p2 = b.lockkit_run("P2", 8).map_or("–".to_owned(), |r| {
            format!(
                "{}{} / {}{}",
                ms(r.cross_handoff.p50_us),
                in_rtts(r.cross_handoff.p50_us, rtt),
                ms(r.cross_handoff.p99_us),
                in_rtts(r.cross_handoff.p99_us, rtt)
            )
        });
        let wait = b.lockkit_run("P2", 8).map_or("–".to_owned(), |r| {
            format!(
                "{} / {}",
                ms(r.waiter_wait.p50_us),
                ms(r.waiter_wait.max_us)
            )
        });
        let p3 = b
            .lockkit_run("P3", 16)
            .map_or("–".to_owned(), |r| format!("{:.0}", r.grants_per_s));
        let p4 = b
            .lockkit_run("P4", 16)
            .map_or("–".to_owned(), |r| format!("{:.2}", r.jain));
        let p5 =
            b.p5.iter()
                .filter(|r| r.subject == "lockkit")
                .filter_map(|r| r.ratio_vs_raw.map(|x| (r.tasks, x)))
                .min_by(|a, c| a.1.total_cmp(&c.1))
                .map_or("–".to_owned(), |(n, x)| format!("{x:.2}× (N={n})"));
        let p6 = match (b.p6.first(), b.p6.last()) {
            (Some(a), Some(z)) => match (a.requests_per_period, z.requests_per_period) {
                (Some(x), Some(y)) => format!("{x:.0} → {y:.0} ({} locks)", z.held),
                _ => "not counted (embedded)".to_owned(),
            },
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {p1} | {p2} | {wait} | {p3} | {p4} | {p5} | {p6} |",
            b.label,
            rtt.map_or("–".to_owned(), ms)
        );
    }
    out
}

/// Writes `results.json` and `README.md` into `dir`.
pub fn write(report: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(dir.join("README.md"), markdown(report))?;
    Ok(())
}

/// What a backend's nature costs, whatever lockkit does (the goals count
/// round trips of an empty request).
fn backend_limit(id: &str) -> Option<&'static str> {
    Some(match id {
        "memory" => {
            "the backend is its own server, in the client's process: its heap per held lock includes the server's record of the lock (holder, fence counter, release hub), which other backends keep on the server."
        }
        "sqlite" => {
            "one writer at a time per database file; a waiter in another process hears of a release through the wake file (inotify), a few hundred µs after the commit."
        }
        "postgres" => {
            "a lease row's hand-off is three commits in a row — the holder's DELETE with its NOTIFY, the delivery to the waiter's LISTEN connection, the waiter's grant (counter + upsert + leaving the queue) — against an RTT of an empty `SELECT 1`; the raw upsert + DELETE pair alone is about 4 RTT. `pg_advisory_lock` hands over inside the server without a client round trip, but it is no lease: a holder that hangs keeps it for as long as its connection lives, and it has no fencing token."
        }
        "mariadb" => {
            "no push channel: waiters poll (5–250 ms, jittered), so a released lock goes to whoever retries first; a row lease needs a transaction per grant (counter + locking count + upsert), sent as one batch after a read."
        }
        "redis" | "redis-unfair" => {
            "a grant is one script call; a hand-off adds the pub/sub message to the waiter and its script call."
        }
        "redis-cluster" => {
            "a script may touch one hash slot only, so renewal is one call per lock (names sharing a hash tag could batch)."
        }
        "etcd" => {
            "every grant and release is a Raft write (fsynced by the leader); a hand-off is the holder's delete, the watch event to the next waiter and its read. P1: a grant is one transaction like the raw pair's, but a heavier one — its compare ranges over the name's prefix (the holder and its queue), its put attaches the key to the session lease, and a refused try reads the holder in the same transaction."
        }
        "zookeeper" => {
            "every grant and release is a ZAB write (fsynced); a hand-off is the holder's delete, the watch event to the next waiter and its read of the queue. P1: the lock recipe needs a read of the lock's children after its sequential create to learn its place — three requests against the raw pair's two. A held lease keeps a child watch on its lock node (so a deletion by someone else is seen at once), which costs a watcher registration in the ZooKeeper client and a small waiting task per lease."
        }
        _ => return None,
    })
}

fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# lockkit contention benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `cargo run -p lockkit-benches --release{}` on {}. Every figure below comes from this one run, \
         on the machine below, with private servers on loopback started by the test fixtures; compare ratios, not absolutes.\n",
        if report.quick { " -- --quick" } else { "" },
        report.date
    );
    if report.quick {
        let _ = writeln!(
            out,
            "**Quick mode**: short runs for a smoke test; these figures are noisy and not the published ones.\n"
        );
    }
    let _ = writeln!(out, "## Machine\n\n| item | value |\n|---|---|");
    for (k, v) in &report.machine {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    let _ = writeln!(out, "\n## Headline (lockkit per backend)\n");
    out.push_str(&headline(report));
    let _ = writeln!(
        out,
        "\nRTT: one `PING` / `SELECT 1` / range read / `exists` on the same client crate. Handoff: the holder starts its release → a different contender's acquire returns. Wait: acquire call → grant; waiter wait: the same for grants that followed another contender's (self-regrants left out). P2–P4 start after every client took the lock once. Holds are 1 ms except P3 (zero).\n"
    );
    if !report.failures.is_empty() {
        let _ = writeln!(out, "## Safety failures\n");
        for f in &report.failures {
            let _ = writeln!(out, "- {f}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Goals missed\n");
    for b in &report.backends {
        let missed = missed_goals(b);
        let _ = writeln!(
            out,
            "- **{}**: {}",
            b.label,
            if missed.is_empty() {
                "none".to_owned()
            } else {
                missed.join("; ")
            }
        );
    }
    let _ = writeln!(out, "\n## Where the backend sets the limit\n");
    for b in &report.backends {
        if let Some(limit) = backend_limit(&b.id) {
            let _ = writeln!(out, "- **{}**: {limit}", b.label);
        }
    }
    for b in &report.backends {
        backend_section(&mut out, b);
    }
    let _ = writeln!(
        out,
        "\n## Charts\n\n![cross handoff latency CDF, n = 8](handoff-cdf.svg)\n\n![grants per contender, P4](grants-per-contender.svg)"
    );
    out
}

fn backend_section(out: &mut String, b: &BackendReport) {
    let rtt = b.rtt_us();
    let _ = writeln!(out, "\n## {}\n", b.label);
    if let Some(rtt) = b.rtt {
        let _ = writeln!(
            out,
            "Round trip p50 {} (p99 {}).\n",
            ms(rtt.p50_us),
            ms(rtt.p99_us)
        );
    }
    for s in &b.subjects {
        if let Some(note) = &s.note {
            let _ = writeln!(out, "- {}: {note}", s.label);
        }
    }
    for e in &b.errors {
        let _ = writeln!(out, "- **not measured**: {e}");
    }
    let _ = writeln!(
        out,
        "\n**P1 uncontended acquire+release**\n\n| subject | p50 | p99 | × raw |\n|---|---|---|---|"
    );
    for r in &b.p1 {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.subject,
            ms(r.latency.p50_us),
            ms(r.latency.p99_us),
            r.ratio_vs_raw.map_or("–".to_owned(), |x| format!("{x:.2}"))
        );
    }
    let _ = writeln!(
        out,
        "\n**P2 handoff, P3 hot lock, P4 fairness**\n\n| scenario | subject | n | grants/s | cross handoff p50 / p99 | self-regrant | wait p50 / p99 / max | waiter wait p50 / max | Jain | timeouts | errors | overlaps |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in &b.contention {
        let c = &r.run;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {}{} / {}{} | {:.0}% | {} / {} / {} | {} / {} | {:.2} | {} | {} | {} |",
            r.scenario,
            r.subject,
            c.contenders,
            c.grants_per_s,
            ms(c.cross_handoff.p50_us),
            in_rtts(c.cross_handoff.p50_us, rtt),
            ms(c.cross_handoff.p99_us),
            in_rtts(c.cross_handoff.p99_us, rtt),
            c.self_regrant * 100.0,
            ms(c.wait.p50_us),
            ms(c.wait.p99_us),
            ms(c.wait.max_us),
            ms(c.waiter_wait.p50_us),
            ms(c.waiter_wait.max_us),
            c.jain,
            c.timeouts,
            c.errors,
            c.overlaps
        );
    }
    if !b.p5.is_empty() {
        let _ = writeln!(
            out,
            "\n**P5 scale-out (N tasks on N locks)**\n\n| N | subject | grants/s | × raw |\n|---|---|---|---|"
        );
        for r in &b.p5 {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} |",
                r.tasks,
                r.subject,
                r.grants_per_s,
                r.ratio_vs_raw.map_or("–".to_owned(), |x| format!("{x:.2}"))
            );
        }
    }
    if !b.p7.is_empty() {
        let _ = writeln!(
            out,
            "\n**P7 semaphore admission** (lockkit, 1 ms holds)\n\n| permits | contenders | grants/s | × lock | wait p50 / p99 | Jain | beyond permits | errors |\n|---|---|---|---|---|---|---|---|"
        );
        let lock_rate =
            b.p7.iter()
                .find(|r| r.permits == 1)
                .map(|r| r.run.grants_per_s)
                .filter(|&g| g > 0.0);
        for r in &b.p7 {
            let c = &r.run;
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {} / {} | {:.2} | {} | {} |",
                r.permits,
                c.contenders,
                c.grants_per_s,
                lock_rate.map_or("–".to_owned(), |l| format!("{:.2}", c.grants_per_s / l)),
                ms(c.wait.p50_us),
                ms(c.wait.p99_us),
                c.jain,
                c.overlaps,
                c.errors
            );
        }
    }
    if !b.p6.is_empty() {
        let _ = writeln!(
            out,
            "\n**P6 upkeep** (TTL 3 s, renewal every 1 s; counted: {})\n\n| held | take them | requests/period held | idle | heap per lock | lost |\n|---|---|---|---|---|---|",
            b.p6_counter.as_deref().unwrap_or("nothing: no server")
        );
        for u in &b.p6 {
            let fmt = |x: Option<f64>| x.map_or("–".to_owned(), |x| format!("{x:.1}"));
            let _ = writeln!(
                out,
                "| {} | {:.1} s | {} | {} | {:.0} B | {} |",
                u.held,
                u.acquire_seconds,
                fmt(u.requests_per_period),
                fmt(u.idle_requests_per_period),
                u.heap_bytes_per_lock,
                u.lost
            );
        }
    }
}
