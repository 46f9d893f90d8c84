//! Running a pipeline: its tasks in dependency order, in parallel where the
//! graph allows (at most [`RunOptions::parallel`] at once), each locked
//! task under a lease named by its lock, every step recorded in the
//! catalog.
//!
//! A task's life: *ready* (its dependencies succeeded) → *locked* (its
//! lease granted; skipped for unlocked tasks) → *started* (its command
//! runs, with `LOCKKIT_LOCK_NAME`, `LOCKKIT_FENCING_TOKEN`,
//! `LOCKKIT_LEASE_ID`, `LOCKKIT_OWNER`, `LOCKKIT_PIPELINE`,
//! `LOCKKIT_RUN_ID`, `LOCKKIT_TASK`, `LOCKKIT_TASK_INPUT` and
//! `LOCKKIT_TASK_OUTPUT` in its environment) → *ended* → the lease is
//! released. The recorded `started_at`/`ended_at` of a locked task lie
//! inside its lease, so two runs' intervals for one lock never overlap.
//!
//! - The lease is renewed at a third of `lock_duration` while the command
//!   runs. If it is lost, the command gets `SIGTERM`, then `SIGKILL` after
//!   [`RunOptions::grace`]; the task is recorded as `lost` with the
//!   reason, and the run fails.
//! - A failed (or lost) task stops its dependants (`not_run`); other
//!   branches go on. A skipped task skips its dependants.
//! - `SIGTERM`, `SIGINT` (unless from a terminal), `SIGHUP` and `SIGQUIT`
//!   are forwarded to the running commands; no new task starts, waits for
//!   locks end, and the run is recorded as `cancelled`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lockkit_core::{Error, LockBackend, LockGuard, LockName, LockOptions, Locker};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::error::{DagError, Result};
use crate::process::{self, Ended, Signals, Target};
use crate::record::{Outcome, RunRecord, TaskRunRecord, now_ms};
use crate::spec::{Action, LockPolicy, Task};

/// The default command template for `notebook:` tasks.
pub const DEFAULT_NOTEBOOK_COMMAND: &str = "jupyter nbconvert --execute --to notebook {notebook}";

/// Where the runner's log lines go (one line each, without newline).
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// How to run a pipeline.
#[derive(Clone)]
pub struct RunOptions {
    /// At most this many tasks at once (at least 1).
    pub parallel: usize,
    /// The owner label of the leases and the run; `None`:
    /// `PIPELINE@HOST:PID`.
    pub owner: Option<String>,
    /// After a lease is lost: how long the command has between `SIGTERM`
    /// and `SIGKILL`.
    pub grace: Duration,
    /// The command for `notebook:` tasks; `{notebook}` is replaced by the
    /// notebook's path, shell-quoted.
    pub notebook_command: String,
    /// Log lines (timestamped, prefixed by the task).
    pub log: LogSink,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("parallel", &self.parallel)
            .field("owner", &self.owner)
            .field("grace", &self.grace)
            .field("notebook_command", &self.notebook_command)
            .finish_non_exhaustive()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            parallel: 4,
            owner: None,
            grace: Duration::from_secs(10),
            notebook_command: DEFAULT_NOTEBOOK_COMMAND.to_owned(),
            log: Arc::new(|line| eprintln!("{line}")),
        }
    }
}

impl RunOptions {
    /// Checks the options before anything runs.
    ///
    /// # Errors
    /// [`DagError::InvalidInput`] for `parallel` 0, a notebook template
    /// without `{notebook}`, or an invalid owner label.
    pub fn validate(&self) -> Result<()> {
        if self.parallel == 0 {
            return Err(DagError::InvalidInput(
                "--parallel must be at least 1".to_owned(),
            ));
        }
        if !self.notebook_command.contains("{notebook}") {
            return Err(DagError::InvalidInput(format!(
                "the notebook command {:?} has no {{notebook}} placeholder",
                self.notebook_command
            )));
        }
        if let Some(owner) = &self.owner {
            lockkit_core::spi::validate_owner(owner)?;
        }
        Ok(())
    }
}

/// `'text'`, safe as one word of a POSIX shell command.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The run's shared state, read by every task.
struct Context<'a> {
    catalog: &'a Catalog,
    locker: Locker,
    backend: Arc<dyn LockBackend>,
    options: &'a RunOptions,
    pipeline: &'a str,
    run_id: i64,
    cancel: CancellationToken,
}

impl Context<'_> {
    fn log(&self, task: &str, message: &str) {
        let now = humantime::format_rfc3339_millis(SystemTime::now());
        (self.options.log)(&format!(
            "{now} [{} run {}] {task}: {message}",
            self.pipeline, self.run_id
        ));
    }

    /// Stores a task's state; a failure is logged and counted (the run
    /// then fails: its record is incomplete), never fatal for the task.
    async fn record(&self, record: &TaskRunRecord, failures: &mut Vec<String>) {
        if let Err(err) = self.catalog.record_task(self.run_id, record).await {
            self.log(&record.task, &format!("could not record the task: {err}"));
            failures.push(format!("{}: {err}", record.task));
        }
    }
}

/// Runs pipeline `name` from `catalog`, its locks on `backend`; returns
/// the run's record.
///
/// # Errors
/// [`DagError::UnknownPipeline`], invalid options, or a catalog that fails
/// before the run is recorded. Once the run is recorded, task failures are
/// outcomes in the record, not errors.
///
/// # Cancel safety
/// Not cancel safe: dropping the future leaves running commands running
/// and their leases to expire at their TTL, and the run recorded as
/// `running`. Send the process a signal instead (see the module docs).
pub async fn run_pipeline(
    catalog: &Catalog,
    backend: Arc<dyn LockBackend>,
    name: &str,
    options: &RunOptions,
) -> Result<RunRecord> {
    options.validate()?;
    let (pipeline, tasks) = catalog.pipeline(name).await?;
    // Handlers first, so a signal during the run is seen, not fatal.
    let mut signals = Signals::new();
    let records: Vec<TaskRunRecord> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            TaskRunRecord::pending(
                &t.name,
                i64::try_from(i).unwrap_or(i64::MAX),
                t.lock.as_ref().map(|l| l.name.clone()),
            )
        })
        .collect();
    let owner = match &options.owner {
        Some(owner) => owner.clone(),
        None => format!("{name}@{}:{}", host_name(), std::process::id()),
    };
    lockkit_core::spi::validate_owner(&owner)?;
    let locker = Locker::new(Arc::clone(&backend), owner.clone())?;
    let run_id = catalog.start_run(name, &owner, &records).await?;
    let cx = Context {
        catalog,
        locker,
        backend,
        options,
        pipeline: name,
        run_id,
        cancel: CancellationToken::new(),
    };
    cx.log(
        "run",
        &format!(
            "started ({} tasks, at most {} at once, owner {owner})",
            tasks.len(),
            options.parallel
        ),
    );

    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = tasks
        .iter()
        .map(|t| {
            pipeline
                .dependencies(&t.name)
                .filter_map(|d| index.get(d).copied())
                .collect()
        })
        .collect();
    let mut records = records;
    let mut started = vec![false; tasks.len()];
    let mut failures: Vec<String> = Vec::new();
    // Every await of the run is one of these futures, polled together, so
    // that recording one task never holds up watching another.
    let mut pending: FuturesUnordered<Step<'_>> = FuturesUnordered::new();
    let mut active = 0;
    let mut interrupted = None;
    loop {
        if !cx.cancel.is_cancelled() {
            // Settle what can be settled without running: dependants of
            // tasks that did not succeed (in dependency order, so a chain
            // settles in one pass).
            for i in 0..tasks.len() {
                if started[i] {
                    continue;
                }
                let Some((outcome, why)) = settle(&tasks, &deps[i], &records) else {
                    continue;
                };
                started[i] = true;
                records[i].outcome = outcome;
                records[i].detail = Some(why.clone());
                cx.log(&tasks[i].name, &format!("{outcome}: {why}"));
                let record = records[i].clone();
                let cx = &cx;
                pending.push(Box::pin(async move {
                    let mut failures = Vec::new();
                    cx.record(&record, &mut failures).await;
                    (record, failures, false)
                }));
            }
            // Start what is ready, up to the bound.
            for i in 0..tasks.len() {
                if active >= options.parallel {
                    break;
                }
                if started[i]
                    || !deps[i]
                        .iter()
                        .all(|&d| records[d].outcome == Outcome::Succeeded)
                {
                    continue;
                }
                started[i] = true;
                active += 1;
                let record = records[i].clone();
                let (cx, task) = (&cx, &tasks[i]);
                pending.push(Box::pin(async move {
                    let (record, failures) = run_task(cx, task, record).await;
                    (record, failures, true)
                }));
            }
        }
        if pending.is_empty() {
            break;
        }
        tokio::select! {
            done = pending.next() => {
                if let Some((record, step_failures, was_task)) = done {
                    failures.extend(step_failures);
                    if was_task {
                        active -= 1;
                    }
                    if let Some(&i) = index.get(record.task.as_str()) {
                        records[i] = record;
                    }
                }
            }
            signal = signals.next(), if interrupted.is_none() => {
                // The commands get the signal from their own handlers.
                interrupted = Some(signal);
                cx.log("run", &format!("received {signal}: stopping (running commands get it too)"));
                cx.cancel.cancel();
            }
        }
    }
    drop(pending);
    for record in &mut records {
        if matches!(record.outcome, Outcome::Pending | Outcome::Running) {
            record.outcome = Outcome::Cancelled;
            record.detail = Some("the run was interrupted before it started".to_owned());
            cx.record(record, &mut failures).await;
        }
    }
    let run_outcome = if interrupted.is_some() {
        Outcome::Cancelled
    } else if records.iter().any(|r| r.outcome.fails_run()) || !failures.is_empty() {
        Outcome::Failed
    } else {
        Outcome::Succeeded
    };
    let detail = run_detail(&records, interrupted, &failures);
    if let Err(err) = catalog
        .finish_run(run_id, run_outcome, detail.as_deref())
        .await
    {
        cx.log(
            "run",
            &format!("could not record the end of the run: {err}"),
        );
    }
    cx.log(
        "run",
        &match &detail {
            Some(why) => format!("{run_outcome}: {why}"),
            None => run_outcome.to_string(),
        },
    );
    let mut run = catalog
        .runs(&[run_id])
        .await
        .ok()
        .and_then(|mut r| r.pop())
        .unwrap_or_else(|| RunRecord {
            run_id,
            pipeline: name.to_owned(),
            owner: owner.clone(),
            started_at_ms: records
                .iter()
                .filter_map(|r| r.ready_at_ms)
                .min()
                .unwrap_or_else(now_ms),
            ended_at_ms: Some(now_ms()),
            outcome: run_outcome,
            detail: detail.clone(),
            tasks: Vec::new(),
        });
    // What this process saw is the truth even if a record failed.
    run.tasks = records;
    run.outcome = run_outcome;
    run.detail = detail;
    Ok(run)
}

/// This host's name (`localhost` if it has none).
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// One awaited step of a run: a task's whole life, or recording a task
/// that was settled without running; its final record, the records that
/// could not be stored, and whether it was a task's life.
type Step<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (TaskRunRecord, Vec<String>, bool)> + Send + 'a>,
>;

/// Whether a task that has not started is settled by its dependencies: not
/// run after one that did not succeed, skipped after a skipped one.
fn settle(tasks: &[Task], deps: &[usize], records: &[TaskRunRecord]) -> Option<(Outcome, String)> {
    let blocker = deps.iter().find(|&&d| {
        matches!(
            records[d].outcome,
            Outcome::Failed | Outcome::Lost | Outcome::NotRun | Outcome::Cancelled
        )
    });
    if let Some(&d) = blocker {
        return Some((
            Outcome::NotRun,
            format!("{} {}", tasks[d].name, records[d].outcome),
        ));
    }
    deps.iter()
        .find(|&&d| records[d].outcome == Outcome::Skipped)
        .map(|&d| (Outcome::Skipped, format!("{} was skipped", tasks[d].name)))
}

/// The run's failure in one sentence.
fn run_detail(
    records: &[TaskRunRecord],
    interrupted: Option<nix::sys::signal::Signal>,
    failures: &[String],
) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(signal) = interrupted {
        parts.push(format!("interrupted by {signal}"));
    }
    for r in records {
        if matches!(r.outcome, Outcome::Failed | Outcome::Lost) {
            parts.push(format!(
                "{} {}{}",
                r.task,
                r.outcome,
                r.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ));
        }
    }
    if !failures.is_empty() {
        parts.push(format!("the catalog missed {} record(s)", failures.len()));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Runs one task to its end; returns its final record and any failures to
/// record it.
async fn run_task(
    cx: &Context<'_>,
    task: &Task,
    mut record: TaskRunRecord,
) -> (TaskRunRecord, Vec<String>) {
    let mut failures = Vec::new();
    record.ready_at_ms = Some(now_ms());
    record.outcome = Outcome::Running;
    cx.record(&record, &mut failures).await;
    let guard = match &task.lock {
        None => None,
        Some(lock) => match take_lock(cx, task, lock).await {
            Ok(guard) => {
                let lease = guard.lease();
                record.locked_at_ms = Some(now_ms());
                record.token = i64::try_from(lease.token.get()).ok();
                record.lease_id = Some(lease.lease_id.as_str().to_owned());
                cx.log(
                    &task.name,
                    &format!(
                        "lock {} granted (token {}) after {} ms",
                        lock.name,
                        lease.token,
                        record.lock_wait_ms().unwrap_or(0)
                    ),
                );
                Some(guard)
            }
            Err((outcome, why)) => {
                record.outcome = outcome;
                record.detail = Some(why.clone());
                record.locked_at_ms = None;
                cx.log(&task.name, &format!("{outcome}: {why}"));
                cx.record(&record, &mut failures).await;
                return (record, failures);
            }
        },
    };
    if cx.cancel.is_cancelled() {
        if let Some(guard) = guard {
            let _ = guard.release().await;
        }
        record.outcome = Outcome::Cancelled;
        record.detail = Some("the run was interrupted before the command started".to_owned());
        cx.record(&record, &mut failures).await;
        return (record, failures);
    }
    let (outcome, exit_code, detail) =
        execute(cx, task, guard.as_ref(), &mut record, &mut failures).await;
    record.ended_at_ms = Some(now_ms());
    record.exit_code = exit_code;
    let mut outcome = outcome;
    let mut detail = detail;
    if let Some(guard) = guard {
        match guard.release().await {
            Ok(true) => {}
            Ok(false) if outcome != Outcome::Lost => {
                // The command ran to its end, but the lease was not ours
                // any more when it did: report it lost, never succeeded.
                outcome = Outcome::Lost;
                detail = Some("the lease was no longer held when the command ended".to_owned());
            }
            Ok(false) => {}
            Err(err) => cx.log(
                &task.name,
                &format!("releasing the lock failed ({err}); it expires after its TTL"),
            ),
        }
    }
    record.outcome = outcome;
    record.detail = detail;
    cx.log(
        &task.name,
        &match (&record.detail, record.exit_code) {
            (Some(why), _) => format!("{outcome}: {why}"),
            (None, Some(code)) => format!("{outcome} (exit {code})"),
            (None, None) => outcome.to_string(),
        },
    );
    cx.record(&record, &mut failures).await;
    (record, failures)
}

/// Takes the task's lock by its policy; on failure, the outcome and why.
async fn take_lock(
    cx: &Context<'_>,
    task: &Task,
    lock: &crate::spec::TaskLock,
) -> std::result::Result<LockGuard, (Outcome, String)> {
    let name = LockName::new(lock.name.clone()).map_err(|e| (Outcome::Failed, e.to_string()))?;
    let options = LockOptions::new().ttl(lock.ttl).permits(lock.permits);
    let attempt = async {
        match lock.policy {
            LockPolicy::Wait => {
                cx.log(&task.name, &format!("waiting for lock {name}"));
                let options = match lock.wait_timeout {
                    Some(t) => options.wait_timeout(t),
                    None => options.wait_forever(),
                };
                cx.locker.acquire_with(&name, &options).await.map(Some)
            }
            LockPolicy::Skip | LockPolicy::Fail => {
                cx.locker.try_acquire_with(&name, &options).await
            }
        }
    };
    let result = tokio::select! {
        result = attempt => result,
        () = cx.cancel.cancelled() => {
            return Err((Outcome::Cancelled, "the run was interrupted while waiting for the lock".to_owned()));
        }
    };
    match result {
        Ok(Some(guard)) => Ok(guard),
        Ok(None) => {
            let holder = holder(cx, &name).await;
            Err(match lock.policy {
                LockPolicy::Skip => (
                    Outcome::Skipped,
                    format!("lock {name} is held{holder} (policy skip)"),
                ),
                _ => (
                    Outcome::Failed,
                    format!("lock {name} is held{holder} (policy fail)"),
                ),
            })
        }
        Err(err @ Error::Timeout { .. }) => {
            let holder = holder(cx, &name).await;
            Err((Outcome::Failed, format!("{err}{holder}")))
        }
        Err(err) => Err((Outcome::Failed, format!("cannot take lock {name}: {err}"))),
    }
}

/// ` by OWNER (token T)`, or nothing if the holder cannot be read.
async fn holder(cx: &Context<'_>, name: &LockName) -> String {
    match cx.backend.current(name).await {
        Ok(Some(info)) => format!(" by {} (token {})", info.owner, info.token),
        _ => String::new(),
    }
}

/// Starts the task's command and waits for it; the outcome, exit code and
/// why.
async fn execute(
    cx: &Context<'_>,
    task: &Task,
    guard: Option<&LockGuard>,
    record: &mut TaskRunRecord,
    failures: &mut Vec<String>,
) -> (Outcome, Option<i64>, Option<String>) {
    let script = match &task.action {
        Action::Command(command) => command.clone(),
        Action::Notebook(path) => cx
            .options
            .notebook_command
            .replace("{notebook}", &shell_quote(path)),
    };
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&script)
        .env("LOCKKIT_PIPELINE", cx.pipeline)
        .env("LOCKKIT_RUN_ID", cx.run_id.to_string())
        .env("LOCKKIT_TASK", &task.name)
        .stdin(Stdio::null())
        // A group of its own: a lost lease stops everything it started.
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (var, value) in [
        ("LOCKKIT_TASK_INPUT", &task.input),
        ("LOCKKIT_TASK_OUTPUT", &task.output),
    ] {
        if let Some(value) = value {
            command.env(var, value);
        }
    }
    if let Some(guard) = guard {
        process::lease_env(&mut command, &guard.lease());
    }
    // Handlers before the command starts (see `Signals`).
    let mut signals = Signals::new();
    let mut child = match process::spawn(&mut command, OsStr::new("sh")) {
        Ok(child) => child,
        Err((code, why)) => return (Outcome::Failed, Some(i64::from(code)), Some(why)),
    };
    record.started_at_ms = Some(now_ms());
    cx.log(&task.name, &format!("started: {script}"));
    cx.record(record, failures).await;
    let out = child
        .stdout
        .take()
        .map(|s| forward_lines(cx, &task.name, s, false));
    let err = child
        .stderr
        .take()
        .map(|s| forward_lines(cx, &task.name, s, true));
    let supervise = process::supervise(
        &mut child,
        Target::Group,
        guard,
        cx.options.grace,
        &mut signals,
    );
    let (ended, (), ()) = tokio::join!(
        supervise,
        async {
            if let Some(out) = out {
                out.await;
            }
        },
        async {
            if let Some(err) = err {
                err.await;
            }
        }
    );
    match ended {
        Ended::Exited { status, forwarded } => {
            let code = i64::from(process::status_code(status));
            if status.success() {
                (Outcome::Succeeded, Some(code), None)
            } else if let Some(signal) = forwarded.filter(|_| cx.cancel.is_cancelled()) {
                (
                    Outcome::Cancelled,
                    Some(code),
                    Some(format!("stopped by {signal} (exit {code})")),
                )
            } else {
                (Outcome::Failed, Some(code), Some(format!("exit {code}")))
            }
        }
        Ended::Lost(reason) => {
            let name = guard.map(|g| g.name().to_string()).unwrap_or_default();
            (
                Outcome::Lost,
                None,
                Some(format!(
                    "the lease on {name} was lost ({reason}); the command was stopped"
                )),
            )
        }
    }
}

/// Copies a command's output to the log, line by line, prefixed.
async fn forward_lines(cx: &Context<'_>, task: &str, stream: impl AsyncRead + Unpin, stderr: bool) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                cx.log(task, &format!("{}{text}", if stderr { "! " } else { "| " }));
            }
        }
    }
}
