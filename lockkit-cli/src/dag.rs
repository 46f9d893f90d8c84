//! `lockkit dag …`: pipelines from YAML specs, their catalog, their runs.
//!
//! The catalog is `--catalog URL` (or `LOCKKIT_CATALOG`, or the config
//! file's `catalog`), else the lock backend's database when that is SQLite
//! or Postgres, else the default SQLite file — the same file as the locks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lockkit_dag::catalog::{LintProblem, LoadReport};
use lockkit_dag::timeline;
use lockkit_dag::{Catalog, DagError, RunOptions, Spec};
use serde::Serialize;

use crate::cli::DagCommand;
use crate::exit;

/// Exit code of an invalid spec (`EX_DATAERR`).
pub const INVALID_SPEC: u8 = 65;
/// Exit code of a spec file that cannot be read (`EX_NOINPUT`).
pub const NO_INPUT: u8 = 66;
/// Exit code of an output file that cannot be written (`EX_CANTCREAT`).
pub const CANNOT_CREATE: u8 = 73;
/// Exit code of `lint` with findings, a failed run, or a lock whose
/// recorded holds overlapped.
pub const FOUND: u8 = 1;

/// The catalog URL: explicit, else the backend's database if it can hold
/// tables, else the default SQLite file.
fn catalog_url(explicit: Option<String>, backend: Option<&str>) -> Result<String, DagError> {
    if let Some(url) = explicit.filter(|u| !u.trim().is_empty()) {
        return Ok(url);
    }
    let backend = crate::backend::resolve(backend.map(str::to_owned))?;
    match lockkit::spi::url_scheme(&backend).as_deref() {
        Some("sqlite" | "postgres" | "postgresql") => Ok(lockkit::spi::without_params(
            &backend,
            lockkit_sql::LOCKKIT_PARAMS,
        )),
        _ => Ok(crate::backend::resolve(None)?),
    }
}

/// The exit code for an error of the pipeline layer, after printing it.
pub fn report_error(err: &DagError) -> u8 {
    match err {
        DagError::InvalidSpec(problems) => {
            // One line per problem; one line in all for a single problem.
            match problems.0.as_slice() {
                [one] => eprintln!("lockkit: {one} (the spec is invalid; nothing was loaded)"),
                many => {
                    for problem in many {
                        eprintln!("lockkit: {problem}");
                    }
                    eprintln!(
                        "lockkit: the spec is invalid ({} problems); nothing was loaded",
                        many.len()
                    );
                }
            }
            INVALID_SPEC
        }
        DagError::Read { .. } => {
            eprintln!("lockkit: {err}");
            NO_INPUT
        }
        DagError::Write { .. } => {
            eprintln!("lockkit: {err}");
            CANNOT_CREATE
        }
        DagError::UnknownPipeline { .. } | DagError::UnknownRun(_) | DagError::InvalidInput(_) => {
            eprintln!("lockkit: {err}");
            exit::USAGE
        }
        DagError::Catalog(inner) => {
            eprintln!("lockkit: {inner}");
            exit::for_error(inner)
        }
    }
}

/// Runs one `lockkit dag` command; returns the exit code.
pub async fn dispatch(
    command: DagCommand,
    catalog: Option<String>,
    backend: Option<String>,
) -> Result<u8, DagError> {
    let open = || async {
        let url = catalog_url(catalog.clone(), backend.as_deref())?;
        Catalog::open(&url).await
    };
    match command {
        DagCommand::Validate { paths } => {
            let spec = Spec::from_paths(&paths)?;
            println!(
                "OK: {} tasks, {} pipelines",
                spec.tasks.len(),
                spec.pipelines.len()
            );
            Ok(0)
        }
        DagCommand::Load { paths } => {
            // Everything is checked before the catalog is touched.
            let spec = Spec::from_paths(&paths)?;
            let catalog = open().await?;
            let report = catalog.load(&spec).await?;
            print_load(&catalog, &report);
            Ok(0)
        }
        DagCommand::Shared { json } => {
            let catalog = open().await?;
            print_shared(&catalog, json).await
        }
        DagCommand::Lint { paths } => {
            let catalog = if paths.is_empty() {
                open().await?
            } else {
                // A spec not yet loaded: lint it in a private catalog.
                let spec = Spec::from_paths(&paths)?;
                let catalog = Catalog::open("sqlite::memory:").await?;
                catalog.load(&spec).await?;
                catalog
            };
            lint(&catalog).await
        }
        DagCommand::Show { pipeline } => {
            let catalog = open().await?;
            show(&catalog, &pipeline).await
        }
        DagCommand::Run {
            pipeline,
            parallel,
            owner,
            grace,
            notebook_command,
        } => {
            let options = RunOptions {
                parallel,
                owner,
                grace,
                notebook_command,
                log: Arc::new(|line| eprintln!("{line}")),
            };
            options.validate()?;
            let catalog = open().await?;
            let locks = crate::backend::connect(backend).await?;
            let run = lockkit_dag::run_pipeline(&catalog, locks, &pipeline, &options).await?;
            print!("{}", lockkit_dag::report::summary(&run));
            Ok(run_exit_code(&run))
        }
        DagCommand::Runs { last } => {
            let catalog = open().await?;
            let ids = catalog.latest_runs(last).await?;
            let runs = catalog.runs(&ids).await?;
            println!("RUN  PIPELINE  STARTED  ENDED  OUTCOME");
            for run in runs {
                println!(
                    "{}  {}  {}  {}  {}{}",
                    run.run_id,
                    run.pipeline,
                    lockkit_dag::report::clock(run.started_at_ms),
                    run.ended_at_ms
                        .map_or_else(|| "-".to_owned(), lockkit_dag::report::clock),
                    run.outcome,
                    run.detail.map(|d| format!(" ({d})")).unwrap_or_default()
                );
            }
            Ok(0)
        }
        DagCommand::Timeline {
            runs,
            last,
            svg,
            html,
            width,
        } => {
            let catalog = open().await?;
            let ids = if runs.is_empty() {
                catalog.latest_runs(last.unwrap_or(2)).await?
            } else {
                runs
            };
            if ids.is_empty() {
                return Err(DagError::InvalidInput(
                    "no runs are recorded yet: run a pipeline with `lockkit dag run PIPELINE`"
                        .to_owned(),
                ));
            }
            let records = catalog.runs(&ids).await?;
            print!("{}", timeline::text(&records, width));
            if let Some(path) = svg {
                write_file(&path, &timeline::svg(&records))?;
                println!("wrote {}", path.display());
            }
            if let Some(path) = html {
                write_file(&path, &timeline::html(&records))?;
                println!("wrote {}", path.display());
            }
            Ok(check(&records))
        }
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), DagError> {
    std::fs::write(path, text).map_err(|source| DagError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// 0 when the run succeeded, 79 when a lease was lost, else 1.
fn run_exit_code(run: &lockkit_dag::RunRecord) -> u8 {
    if run.outcome == lockkit_dag::Outcome::Succeeded {
        0
    } else if run
        .tasks
        .iter()
        .any(|t| t.outcome == lockkit_dag::Outcome::Lost)
    {
        exit::LOST
    } else {
        FOUND
    }
}

fn print_load(catalog: &Catalog, report: &LoadReport) {
    if !report.changed {
        println!(
            "unchanged: {} already holds this spec ({} tasks, {} pipelines)",
            catalog.url(),
            report.tasks,
            report.pipelines
        );
        return;
    }
    println!(
        "loaded {} tasks, {} pipelines into {}",
        report.tasks,
        report.pipelines,
        catalog.url()
    );
    for (what, items) in [
        ("added", &report.added),
        ("changed", &report.changed_items),
        ("removed", &report.removed),
    ] {
        if !items.is_empty() {
            println!("  {what}: {}", items.join(", "));
        }
    }
}

#[derive(Serialize)]
struct SharedView {
    task: String,
    pipelines: Vec<String>,
    locked: bool,
    lock_name: Option<String>,
    lock_duration_seconds: Option<f64>,
}

async fn print_shared(catalog: &Catalog, json: bool) -> Result<u8, DagError> {
    let shared = catalog.shared_tasks().await?;
    if json {
        let views: Vec<SharedView> = shared
            .iter()
            .map(|s| SharedView {
                task: s.task.clone(),
                pipelines: s.pipelines.clone(),
                locked: s.lock.is_some(),
                lock_name: s.lock.as_ref().map(|l| l.0.clone()),
                lock_duration_seconds: s.lock.as_ref().map(|l| l.1.as_secs_f64()),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&views).unwrap_or_else(|_| "[]".to_owned())
        );
        return Ok(0);
    }
    if shared.is_empty() {
        println!("no task is used by more than one pipeline");
        return Ok(0);
    }
    let rows: Vec<[String; 3]> = shared
        .iter()
        .map(|s| {
            [
                s.task.clone(),
                s.pipelines.join(", "),
                match &s.lock {
                    Some((name, ttl)) => format!("locked: {name}, {}", duration(*ttl)),
                    None => "NOT LOCKED".to_owned(),
                },
            ]
        })
        .collect();
    print_table(["TASK", "PIPELINES", "LOCK"], &rows);
    Ok(0)
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

async fn lint(catalog: &Catalog) -> Result<u8, DagError> {
    let problems = catalog.lint().await?;
    if problems.is_empty() {
        println!("OK: every shared task is locked, and each lock has one duration");
        return Ok(0);
    }
    for problem in &problems {
        let kind = match problem {
            LintProblem::UnlockedSharedTask { .. } => "unlocked shared task",
            LintProblem::LockDurationConflict { .. } => "lock duration conflict",
            LintProblem::SharedOutputWithoutLock { .. } => "shared output",
        };
        println!("error: {kind}: {problem}");
    }
    println!(
        "{} problem{} found",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    Ok(FOUND)
}

async fn show(catalog: &Catalog, name: &str) -> Result<u8, DagError> {
    let (pipeline, tasks) = catalog.pipeline(name).await?;
    let linear = pipeline.edges.len() + 1 == pipeline.tasks.len()
        && pipeline
            .tasks
            .windows(2)
            .all(|w| pipeline.edges.contains(&(w[0].clone(), w[1].clone())));
    if linear {
        println!("{name}: Start -> {} -> End", pipeline.tasks.join(" -> "));
    } else {
        println!("{name}:");
    }
    let rows: Vec<[String; 5]> = tasks
        .iter()
        .enumerate()
        .map(|(i, task)| {
            let after: Vec<&str> = pipeline.dependencies(&task.name).collect();
            [
                format!("{}.", i + 1),
                task.name.clone(),
                if after.is_empty() {
                    "Start".to_owned()
                } else {
                    after.join(", ")
                },
                match &task.action {
                    lockkit_dag::Action::Command(c) => format!("command: {}", shorten(c, 48)),
                    lockkit_dag::Action::Notebook(n) => format!("notebook: {}", shorten(n, 48)),
                },
                match &task.lock {
                    Some(lock) => format!(
                        "lock {} ({}, {})",
                        lock.name,
                        duration(lock.ttl),
                        lock.policy.as_str()
                    ),
                    None => "-".to_owned(),
                },
            ]
        })
        .collect();
    print_table(["#", "TASK", "AFTER", "RUNS", "LOCK"], &rows);
    Ok(0)
}

/// `text` on one line, at most `max` characters (`…` when cut).
fn shorten(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Prints the exclusivity check of the recorded runs; 1 if a lock's holds
/// overlapped.
fn check(runs: &[lockkit_dag::RunRecord]) -> u8 {
    let mut code = 0;
    for lock in timeline::exclusivity(runs) {
        let holders: Vec<String> = lock
            .holds
            .iter()
            .map(|h| {
                format!(
                    "run {} {}–{}{}",
                    h.run_id,
                    lockkit_dag::report::clock(h.start_ms),
                    lockkit_dag::report::clock(h.end_ms),
                    h.token.map(|t| format!(" token {t}")).unwrap_or_default()
                )
            })
            .collect();
        if lock.ok() {
            println!(
                "OK: lock {} was held by one run at a time ({} holds: {})",
                lock.lock_name,
                lock.holds.len(),
                holders.join(", ")
            );
        } else {
            code = FOUND;
            for (i, j) in &lock.overlaps {
                println!(
                    "OVERLAP: lock {}: run {} ({}) and run {} ({}) ran at the same time",
                    lock.lock_name,
                    lock.holds[*i].run_id,
                    lock.holds[*i].task,
                    lock.holds[*j].run_id,
                    lock.holds[*j].task
                );
            }
            if !lock.tokens_rise {
                println!(
                    "OUT OF ORDER: lock {}: fencing tokens do not rise with the holds ({})",
                    lock.lock_name,
                    holders.join(", ")
                );
            }
        }
    }
    let concurrent = timeline::concurrent_tasks(runs);
    if !concurrent.is_empty() {
        let pairs: Vec<String> = concurrent
            .iter()
            .map(|(a, b, ms)| format!("{a} ‖ {b} {}", lockkit_dag::report::seconds(*ms)))
            .collect();
        println!("ran at the same time: {}", pairs.join(", "));
    }
    code
}
