//! # lockkit-benches
//!
//! Contention benchmarks: lockkit on every backend, beside the raw
//! commands of each backend (same client crate) and the peer crates
//! (`rslock`, `distributed-lock-redis`, `distributed-lock-postgres`), in
//! one run on the same private servers, so that every figure can be read
//! as a ratio. See `docs/benchmarks/README.md` for the latest report and
//! `ARCHITECTURE.md` §10 for what each scenario measures.
//!
//! ```text
//! cargo run -p lockkit-benches --release -- [--quick] [--backends redis,etcd] [--scenarios p1,p2]
//! ```
//!
//! Writes `results.json`, `README.md` and two SVG charts into `--out`
//! (default `docs/benchmarks`), and with `--readme README.md` replaces the
//! headline table between the `<!-- bench:headline -->` markers there.
//! Exits 1 when any contended run saw two holders at once or a fencing
//! token out of order, or lockkit returned an error.

mod alloc;
mod charts;
mod probe;
mod report;
mod scenarios;
mod servers;
mod stats;
mod subject;
mod subjects;
mod upkeep;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::report::{BackendReport, ContentionRow, P1Row, P5Row, Report, SubjectInfo};
use crate::servers::{Backend, Servers};
use crate::subject::{Family, Result, Subject};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// The scenarios of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Uncontended acquire+release vs the raw commands.
    P1,
    /// Handoff latency with 2, 8, 32 contenders.
    P2,
    /// Grants per second on one hot lock, zero hold.
    P3,
    /// Fairness: 16 contenders, Jain's index.
    P4,
    /// Scale-out: N tasks on N locks.
    P5,
    /// Upkeep: many held locks renewing.
    P6,
    /// Semaphore admission: 8 contenders on a semaphore of 3 permits
    /// beside the same run on a lock.
    P7,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Contention benchmarks of lockkit against the raw commands and peer crates"
)]
struct Args {
    /// Short runs (a smoke test; figures are not for publishing).
    #[arg(long)]
    quick: bool,
    /// Backends to run (default: all): memory, sqlite, postgres, mariadb,
    /// redis, redis-unfair, redis-cluster, etcd, zookeeper.
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
    /// Scenarios to run (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    scenarios: Vec<Scenario>,
    /// Directory for results.json, README.md and the charts.
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    /// Also replace the headline table in this README (between
    /// `<!-- bench:headline -->` and `<!-- /bench:headline -->`).
    #[arg(long)]
    readme: Option<PathBuf>,
}

/// Sizes of one run.
struct Plan {
    p1_iterations: usize,
    p2_contenders: &'static [usize],
    p2_seconds: f64,
    p3_seconds: f64,
    p4_seconds: f64,
    p5_tasks: &'static [usize],
    p5_seconds: f64,
    p6_held: &'static [usize],
    p6_periods: u32,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                p1_iterations: 200,
                p2_contenders: &[2, 8],
                p2_seconds: 1.5,
                p3_seconds: 1.5,
                p4_seconds: 2.0,
                p5_tasks: &[1, 4, 16],
                p5_seconds: 0.5,
                p6_held: &[100, 1000],
                p6_periods: 2,
            }
        } else {
            Self {
                p1_iterations: 2000,
                p2_contenders: &[2, 8, 32],
                p2_seconds: 5.0,
                p3_seconds: 5.0,
                p4_seconds: 30.0,
                p5_tasks: &[1, 4, 16, 64],
                p5_seconds: 3.0,
                p6_held: &[100, 10_000],
                p6_periods: 5,
            }
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lockkit-benches: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lockkit-benches: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the plan; `Ok(false)` when a safety check failed.
async fn run(args: Args) -> Result<bool> {
    let plan = Plan::new(args.quick);
    let backends: Vec<String> = if args.backends.is_empty() {
        servers::ALL.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.backends.clone()
    };
    for id in &backends {
        if !servers::ALL.contains(&id.as_str()) {
            return Err(
                format!("unknown backend {id:?}; known: {}", servers::ALL.join(", ")).into(),
            );
        }
    }
    let wants = |s: Scenario| args.scenarios.is_empty() || args.scenarios.contains(&s);
    let mut report = Report {
        date: shell("date -u +%Y-%m-%dT%H:%MZ"),
        quick: args.quick,
        machine: machine(),
        backends: Vec::new(),
        failures: Vec::new(),
    };
    let mut servers = Servers::default();
    for id in &backends {
        let id = servers::ALL
            .iter()
            .copied()
            .find(|known| known == id)
            .ok_or("unknown backend")?;
        eprintln!("== {id}: starting");
        let mut out = BackendReport {
            id: id.to_owned(),
            label: id.to_owned(),
            ..BackendReport::default()
        };
        let backend = match servers.backend(id).await {
            Ok(backend) => backend,
            Err(e) => {
                eprintln!("   error: {e}");
                report.failures.push(format!("{id}: could not start: {e}"));
                out.errors.push(format!("could not start: {e}"));
                report.backends.push(out);
                continue;
            }
        };
        out.label.clone_from(&backend.label);
        match backend.probe.version().await {
            Ok(Some(version)) => report.machine.push((format!("{id} server"), version)),
            Ok(None) => {}
            Err(e) => out.errors.push(format!("server version: {e}")),
        }
        match backend
            .probe
            .round_trip(if args.quick { 200 } else { 2000 })
            .await
        {
            Ok(rtt) => out.rtt = rtt,
            Err(e) => out.errors.push(format!("round trip: {e}")),
        }
        out.subjects = backend
            .subjects
            .iter()
            .map(|s| SubjectInfo {
                label: s.label(),
                family: s.family(),
                note: s.note(),
            })
            .collect();
        if wants(Scenario::P1) {
            eprintln!("   P1");
            p1(&backend, &plan, &mut out).await;
        }
        for subject in backend.subjects.iter().filter(|s| s.can_wait()) {
            let mut runs: Vec<(&str, usize, Duration, f64)> = Vec::new();
            if wants(Scenario::P2) {
                for &n in plan.p2_contenders {
                    runs.push(("P2", n, Duration::from_millis(1), plan.p2_seconds));
                }
            }
            if wants(Scenario::P3) {
                runs.push(("P3", 16, Duration::ZERO, plan.p3_seconds));
            }
            if wants(Scenario::P4) {
                runs.push(("P4", 16, Duration::from_millis(1), plan.p4_seconds));
            }
            for (scenario, n, hold, seconds) in runs {
                eprintln!("   {scenario} {} n={n}", subject.label());
                let lock = format!(
                    "{}-{}-{n}-{}",
                    scenario.to_lowercase(),
                    id,
                    fastrand::u32(..)
                );
                match scenarios::contend(
                    subject,
                    n,
                    hold,
                    Duration::from_secs_f64(seconds),
                    &lock,
                    1,
                )
                .await
                {
                    Ok(run) => {
                        let what = format!("{id} {scenario} {} n={n}", subject.label());
                        if run.overlaps > 0 {
                            report
                                .failures
                                .push(format!("{what}: {} overlapping grants", run.overlaps));
                        }
                        if run.token_violations > 0 {
                            report.failures.push(format!(
                                "{what}: {} tokens not above the previous grant's",
                                run.token_violations
                            ));
                        }
                        if subject.family() == Family::Lockkit && run.errors > 0 {
                            report.failures.push(format!(
                                "{what}: {} errors, first: {}",
                                run.errors,
                                run.first_error.clone().unwrap_or_default()
                            ));
                        }
                        out.contention.push(ContentionRow {
                            scenario: scenario.to_owned(),
                            subject: subject.label(),
                            family: subject.family(),
                            run,
                        });
                    }
                    Err(e) => note_error(&mut report, &mut out, subject.as_ref(), scenario, &e),
                }
            }
        }
        if wants(Scenario::P5) {
            eprintln!("   P5");
            p5(&backend, &plan, &mut out).await;
        }
        if wants(Scenario::P6) {
            eprintln!("   P6");
            out.p6_counter = backend.counter.as_ref().map(|c| c.describe().to_owned());
            for &held in plan.p6_held {
                match upkeep::upkeep(
                    &backend.lockkit,
                    backend.counter.as_ref(),
                    held,
                    plan.p6_periods,
                    id,
                )
                .await
                {
                    Ok(u) => {
                        if u.lost > 0 {
                            report.failures.push(format!(
                                "{id} P6: {} of {held} held locks were lost",
                                u.lost
                            ));
                        }
                        out.p6.push(u);
                    }
                    Err(e) => note_error(&mut report, &mut out, backend.lockkit.as_ref(), "P6", &e),
                }
            }
        }
        if wants(Scenario::P7) {
            eprintln!("   P7");
            p7(&backend, &plan, id, &mut report, &mut out).await;
        }
        report.backends.push(out);
    }
    report::write(&report, &args.out)?;
    charts::write(&report, &args.out)?;
    if let Some(readme) = &args.readme {
        update_readme(readme, &report::headline(&report))?;
    }
    eprintln!("wrote {}", args.out.display());
    for failure in &report.failures {
        eprintln!("FAILED: {failure}");
    }
    Ok(report.failures.is_empty())
}

fn note_error(
    report: &mut Report,
    out: &mut BackendReport,
    subject: &dyn Subject,
    scenario: &str,
    error: &crate::subject::BoxError,
) {
    let message = format!("{scenario} {}: {error}", subject.label());
    eprintln!("   error: {message}");
    if subject.family() == Family::Lockkit {
        report.failures.push(format!("{}: {message}", out.id));
    }
    out.errors.push(message);
}

async fn p1(backend: &Backend, plan: &Plan, out: &mut BackendReport) {
    match scenarios::uncontended(&backend.subjects, plan.p1_iterations, backend.id).await {
        Ok(latencies) => {
            let raw = backend.raw.as_ref().and_then(|raw| {
                let i = backend.subjects.iter().position(|s| Arc::ptr_eq(s, raw))?;
                latencies[i].as_ref().ok().map(|p| p.p50_us)
            });
            for (subject, latency) in backend.subjects.iter().zip(latencies) {
                match latency {
                    Ok(latency) => out.p1.push(P1Row {
                        subject: subject.label(),
                        latency,
                        ratio_vs_raw: raw.map(|raw| latency.p50_us / raw),
                    }),
                    Err(e) => out.errors.push(format!("P1 {}: {e}", subject.label())),
                }
            }
        }
        Err(e) => out.errors.push(format!("P1: {e}")),
    }
}

async fn p5(backend: &Backend, plan: &Plan, out: &mut BackendReport) {
    let mut subjects: Vec<Arc<dyn Subject>> = vec![backend.lockkit.clone()];
    subjects.extend(backend.raw.clone());
    for &tasks in plan.p5_tasks {
        let mut rates = Vec::new();
        for subject in &subjects {
            let seconds = Duration::from_secs_f64(plan.p5_seconds);
            match scenarios::scale_out(subject, tasks, seconds, backend.id).await {
                Ok(rate) => rates.push((subject.label(), rate)),
                Err(e) => out
                    .errors
                    .push(format!("P5 {} N={tasks}: {e}", subject.label())),
            }
        }
        let raw = rates.get(1).map(|(_, rate)| *rate);
        for (subject, rate) in rates {
            out.p5.push(P5Row {
                tasks,
                subject,
                grants_per_s: rate,
                ratio_vs_raw: raw.map(|raw| rate / raw),
            });
        }
    }
}

fn shell(command: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", command])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn machine() -> Vec<(String, String)> {
    vec![
        (
            "cpu".into(),
            shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        ),
        ("cores".into(), shell("nproc")),
        (
            "memory".into(),
            shell("free -g | awk '/Mem:/ {print $2 \" GiB\"}'"),
        ),
        ("kernel".into(), shell("uname -sr")),
        ("rustc".into(), shell("rustc --version")),
        ("lockkit".into(), env!("CARGO_PKG_VERSION").to_owned()),
        (
            "build".into(),
            if cfg!(debug_assertions) {
                "debug (figures not comparable)"
            } else {
                "release"
            }
            .to_owned(),
        ),
    ]
}

/// Replaces the text between the headline markers of `readme`.
fn update_readme(readme: &std::path::Path, table: &str) -> Result<()> {
    const START: &str = "<!-- bench:headline -->";
    const END: &str = "<!-- /bench:headline -->";
    let text = std::fs::read_to_string(readme)?;
    let (Some(start), Some(end)) = (text.find(START), text.find(END)) else {
        return Err(format!("{} has no {START} … {END} markers", readme.display()).into());
    };
    if end < start {
        return Err(format!("{}: {END} comes before {START}", readme.display()).into());
    }
    let updated = format!("{}{START}\n{table}{}", &text[..start], &text[end..]);
    std::fs::write(readme, updated)?;
    Ok(())
}

/// P7: semaphore admission — [`P7_CONTENDERS`] lockkit contenders, 1 ms
/// holds, on a lock and on a semaphore of [`P7_PERMITS`] permits of the
/// same backend: grants per second side by side, and no more than the
/// permit count inside at once.
async fn p7(
    backend: &Backend,
    plan: &Plan,
    id: &str,
    report: &mut Report,
    out: &mut BackendReport,
) {
    let supported = match backend.lockkit.locker("p7-probe").await {
        Ok(locker) => locker.backend().capabilities().max_permits,
        Err(e) => {
            note_error(report, out, backend.lockkit.as_ref(), "P7", &e);
            return;
        }
    };
    if supported < P7_PERMITS {
        out.errors.push(format!(
            "P7 not run: the backend admits at most {supported} permit(s) per name"
        ));
        return;
    }
    for permits in [1, P7_PERMITS] {
        let subject: Arc<dyn Subject> = Arc::new(backend.lockkit.semaphore(permits));
        let lock = format!("p7-{id}-{permits}-{}", fastrand::u32(..));
        eprintln!("   P7 {} n={P7_CONTENDERS}", subject.label());
        match scenarios::contend(
            &subject,
            P7_CONTENDERS,
            Duration::from_millis(1),
            Duration::from_secs_f64(plan.p2_seconds),
            &lock,
            permits as usize,
        )
        .await
        {
            Ok(run) => {
                let what = format!("{id} P7 {}", subject.label());
                if run.overlaps > 0 {
                    report.failures.push(format!(
                        "{what}: {} grants beyond {permits} holder(s)",
                        run.overlaps
                    ));
                }
                if run.token_violations > 0 || run.errors > 0 {
                    report.failures.push(format!(
                        "{what}: {} token violations, {} errors (first: {})",
                        run.token_violations,
                        run.errors,
                        run.first_error.clone().unwrap_or_default()
                    ));
                }
                out.p7.push(report::P7Row { permits, run });
            }
            Err(e) => note_error(report, out, subject.as_ref(), "P7", &e),
        }
    }
}

/// P7's contenders.
const P7_CONTENDERS: usize = 8;
/// P7's semaphore size.
const P7_PERMITS: u32 = 3;
