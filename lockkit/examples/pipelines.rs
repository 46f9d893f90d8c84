//! The main job: two pipelines that share the sub-task `node_b`.
//!
//! ```text
//! pipeline_1: start -> node_a -> node_b -> node_c -> end
//! pipeline_2: start -> node_d -> node_b -> node_e -> end
//! ```
//!
//! `cargo run -p lockkit --example pipelines` starts both pipelines as
//! separate OS processes on one SQLite lock table (a temporary file, or
//! `--url <lock backend URL>`), collects what they did, prints a timeline
//! and checks that `node_b` never ran in both at once. It exits non-zero if
//! it did.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockkit::{LockOptions, Locker};

/// A task of a pipeline: name, how long it runs, whether it is shared.
struct Task {
    name: &'static str,
    millis: u64,
    locked: bool,
}

fn tasks_of(pipeline: &str) -> Option<[Task; 3]> {
    let task = |name, millis, locked| Task {
        name,
        millis,
        locked,
    };
    match pipeline {
        "pipeline_1" => Some([
            task("node_a", 120, false),
            task("node_b", 400, true),
            task("node_c", 150, false),
        ]),
        "pipeline_2" => Some([
            task("node_d", 100, false),
            task("node_b", 400, true),
            task("node_e", 150, false),
        ]),
        _ => None,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--pipeline") => match args.as_slice() {
            [_, pipeline, url, epoch] => run_pipeline(pipeline, url, epoch),
            _ => usage(),
        },
        Some("--url") => match args.get(1) {
            Some(url) => coordinate(url),
            None => usage(),
        },
        None => {
            let dir = match tempfile::tempdir() {
                Ok(dir) => dir,
                Err(e) => {
                    eprintln!("cannot create a temporary directory: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let url = format!("sqlite://{}/locks.db", dir.path().display());
            coordinate(&url)
        }
        Some(_) => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: pipelines [--url <lock backend URL>]");
    ExitCode::from(2)
}

/// One event a pipeline reports: `EVENT <ms since epoch> <pipeline> <task> <what> [token]`.
#[derive(Debug)]
struct Event {
    at: u64,
    pipeline: String,
    task: String,
    what: String,
    token: Option<u64>,
}

fn coordinate(url: &str) -> ExitCode {
    println!(
        "lockkit pipelines demo: two pipelines share node_b; lock table at {}",
        lockkit::redact_url(url)
    );
    let epoch = now_ms();
    let Ok(me) = std::env::current_exe() else {
        eprintln!("cannot find this program's path");
        return ExitCode::FAILURE;
    };
    let children: Vec<_> = ["pipeline_1", "pipeline_2"]
        .iter()
        .map(|p| {
            Command::new(&me)
                .args(["--pipeline", p, url, &epoch.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
        })
        .collect();
    let mut events = Vec::new();
    for child in children {
        let output = match child.and_then(std::process::Child::wait_with_output) {
            Ok(output) => output,
            Err(e) => {
                eprintln!("cannot run a pipeline process: {e}");
                return ExitCode::FAILURE;
            }
        };
        if !output.status.success() {
            eprintln!("a pipeline process failed: {}", output.status);
            return ExitCode::FAILURE;
        }
        events.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(parse_event),
        );
    }
    events.sort_by_key(|e| e.at);
    print_timeline(&events, epoch);
    check_node_b(&events, epoch)
}

fn parse_event(line: &str) -> Option<Event> {
    let mut parts = line.strip_prefix("EVENT ")?.split(' ');
    Some(Event {
        at: parts.next()?.parse().ok()?,
        pipeline: parts.next()?.to_owned(),
        task: parts.next()?.to_owned(),
        what: parts.next()?.to_owned(),
        token: parts.next().and_then(|t| t.parse().ok()),
    })
}

fn print_timeline(events: &[Event], epoch: u64) {
    println!();
    println!("{:>8}  {:<11} {:<7} event", "time", "pipeline", "task");
    for e in events {
        let token = e
            .token
            .map(|t| format!(" (fencing token {t})"))
            .unwrap_or_default();
        println!(
            "{:>5} ms  {:<11} {:<7} {}{token}",
            e.at.saturating_sub(epoch),
            e.pipeline,
            e.task,
            e.what.replace('_', " ")
        );
    }
    // A Gantt chart, 20 ms per column: letters run, '.' waits for the lock.
    let end = events.iter().map(|e| e.at).max().unwrap_or(epoch);
    let columns = usize::try_from(end.saturating_sub(epoch) / 20 + 1).unwrap_or(0);
    println!();
    for pipeline in ["pipeline_1", "pipeline_2"] {
        let mut row = vec![' '; columns];
        let mut open: Option<(u64, char)> = None;
        for e in events.iter().filter(|e| e.pipeline == pipeline) {
            let mark = match e.what.as_str() {
                "waiting_for_lock" => Some('.'),
                "start" => e.task.chars().last().map(|c| c.to_ascii_uppercase()),
                _ => None,
            };
            if let Some((from, c)) = open.take() {
                fill(&mut row, from, e.at, epoch, c);
            }
            open = mark.map(|c| (e.at, c));
        }
        println!("{pipeline} |{}|", row.into_iter().collect::<String>());
    }
    println!(
        "{:11} 20 ms per column; A..E = node_a..node_e, '.' = waiting for the node_b lock",
        ""
    );
}

fn fill(row: &mut [char], from: u64, to: u64, epoch: u64, c: char) {
    let a = usize::try_from(from.saturating_sub(epoch) / 20).unwrap_or(0);
    let b = usize::try_from(to.saturating_sub(epoch) / 20).unwrap_or(0);
    for slot in row.iter_mut().take(b.max(a + 1)).skip(a) {
        *slot = c;
    }
}

fn check_node_b(events: &[Event], epoch: u64) -> ExitCode {
    let mut runs = Vec::new();
    for start in events
        .iter()
        .filter(|e| e.task == "node_b" && e.what == "start")
    {
        let end = events.iter().find(|e| {
            e.task == "node_b"
                && e.what == "end"
                && e.pipeline == start.pipeline
                && e.at >= start.at
        });
        match end {
            Some(end) => runs.push((start.pipeline.clone(), start.at, end.at, start.token)),
            None => {
                eprintln!("node_b in {} never finished", start.pipeline);
                return ExitCode::FAILURE;
            }
        }
    }
    println!();
    for (pipeline, from, to, token) in &runs {
        println!(
            "node_b ran in {pipeline} from {} ms to {} ms with fencing token {}",
            from - epoch,
            to - epoch,
            token.map_or("?".to_owned(), |t| t.to_string())
        );
    }
    let overlapping = runs
        .iter()
        .enumerate()
        .any(|(i, a)| runs.iter().skip(i + 1).any(|b| a.1 < b.2 && b.1 < a.2));
    if runs.len() == 2 && !overlapping {
        println!("OK: node_b never ran in both pipelines at once");
        ExitCode::SUCCESS
    } else {
        println!("FAILED: node_b runs overlapped (or did not both run): {runs:?}");
        ExitCode::FAILURE
    }
}

fn emit(pipeline: &str, task: &str, what: &str, token: Option<u64>) {
    let token = token.map(|t| format!(" {t}")).unwrap_or_default();
    println!("EVENT {} {pipeline} {task} {what}{token}", now_ms());
}

#[tokio::main(flavor = "current_thread")]
async fn run_pipeline(pipeline: &str, url: &str, epoch: &str) -> ExitCode {
    let (Some(tasks), Ok(_epoch)) = (tasks_of(pipeline), epoch.parse::<u64>()) else {
        return usage();
    };
    match run_tasks(pipeline, url, &tasks).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{pipeline}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_tasks(pipeline: &str, url: &str, tasks: &[Task]) -> lockkit::Result<()> {
    let backend = lockkit::connect(url).await?;
    // The seed's `lock: {lock_status: enable, lock_duration: 10 mins}`.
    let locker = Locker::new(backend, pipeline)?.with_options(
        LockOptions::new()
            .ttl(Duration::from_secs(600))
            .wait_timeout(Duration::from_secs(60)),
    )?;
    for task in tasks {
        if task.locked {
            emit(pipeline, task.name, "waiting_for_lock", None);
            let millis = task.millis;
            locker
                .run_exclusive(task.name, locker.options(), |lease| async move {
                    emit(pipeline, task.name, "start", Some(lease.token().get()));
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                    emit(pipeline, task.name, "end", None);
                })
                .await?;
        } else {
            emit(pipeline, task.name, "start", None);
            tokio::time::sleep(Duration::from_millis(task.millis)).await;
            emit(pipeline, task.name, "end", None);
        }
    }
    Ok(())
}
