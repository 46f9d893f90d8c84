//! `lockkit run NAME -- CMD ARGS…`: a command under a lock.
//!
//! The lock is taken (waiting, or not with `-n`), renewed while the command
//! runs and released when it exits; the command's status passes through.
//! If the lease is lost meanwhile, the command gets `SIGTERM`, then
//! `SIGKILL` after the grace period, and `lockkit` exits with
//! [`exit::LOST`]. `SIGTERM`, `SIGHUP` and `SIGQUIT` sent to `lockkit` are
//! forwarded to the command; so is `SIGINT`, unless `lockkit`'s standard
//! input is a terminal — a terminal's Ctrl-C already reaches the whole
//! foreground process group, the command included.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use lockkit::{Error, LockBackend, LockGuard, LockName, LockOptions, Locker};
use lockkit_dag::process::{self, Ended, Signals, Target, status_code};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::exit;
use crate::format::human;

/// The arguments of `lockkit run`, validated.
#[derive(Debug)]
pub struct Run {
    pub name: LockName,
    pub options: LockOptions,
    pub no_wait: bool,
    pub owner: String,
    pub conflict_exit_code: u8,
    pub grace: Duration,
    pub command: Vec<OsString>,
}

/// The owner label used when none is given: `host:pid`.
pub fn default_owner() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

/// Runs the command under the lock; returns the exit code.
pub async fn run(backend: Arc<dyn LockBackend>, args: Run) -> Result<u8, Error> {
    let locker = Locker::new(Arc::clone(&backend), args.owner.clone())?;
    let guard = if args.no_wait {
        match locker.try_acquire_with(&args.name, &args.options).await? {
            Some(guard) => guard,
            None => {
                eprintln!(
                    "lockkit: {} is held by someone else",
                    describe_holder(&*backend, &args.name).await
                );
                return Ok(args.conflict_exit_code);
            }
        }
    } else {
        match wait_for(&*backend, &locker, &args).await {
            Ok(guard) => guard,
            Err(err @ Error::Timeout { .. }) => {
                eprintln!("lockkit: {err}");
                return Ok(args.conflict_exit_code);
            }
            Err(err) => return Err(err),
        }
    };
    // Handlers first: a signal that arrives once the command runs must be
    // forwarded, not kill `lockkit` by its default action.
    let mut signals = Signals::new();
    let mut child = match spawn(&args, &guard) {
        Ok(child) => child,
        Err((code, message)) => {
            eprintln!("lockkit: {message}");
            let _ = guard.release().await;
            return Ok(code);
        }
    };
    let outcome = process::supervise(
        &mut child,
        Target::Process,
        Some(&guard),
        args.grace,
        &mut signals,
    )
    .await;
    match outcome {
        Ended::Exited { status, .. } => match guard.release().await {
            Ok(true) => Ok(status_code(status)),
            Ok(false) => {
                eprintln!(
                    "lockkit: the lease on {} was no longer held when the command ended",
                    args.name
                );
                Ok(exit::LOST)
            }
            Err(err) => {
                // The command finished under the lock; the lease runs out
                // at its TTL.
                eprintln!(
                    "lockkit: releasing {} failed ({err}); it expires after its TTL",
                    args.name
                );
                Ok(status_code(status))
            }
        },
        Ended::Lost(reason) => {
            eprintln!(
                "lockkit: the lease on {} was lost ({reason}); the command was stopped",
                args.name
            );
            Ok(exit::LOST)
        }
    }
}

/// Waits for the lock; on a terminal, a spinner says whom it waits for.
async fn wait_for(
    backend: &dyn LockBackend,
    locker: &Locker,
    args: &Run,
) -> Result<LockGuard, Error> {
    let acquire = locker.acquire_with(&args.name, &args.options);
    tokio::pin!(acquire);
    if !std::io::stderr().is_terminal() {
        return acquire.await;
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let result = loop {
        tokio::select! {
            result = &mut acquire => break result,
            _ = tick.tick() => {
                let holder = describe_holder(backend, &args.name).await;
                spinner.set_message(format!(
                    "waiting for {holder} ({} so far)",
                    human(started.elapsed())
                ));
                spinner.tick();
            }
        }
    };
    spinner.finish_and_clear();
    result
}

/// `NAME (held by OWNER, token T, for D)`, or just the name if it cannot be
/// read.
async fn describe_holder(backend: &dyn LockBackend, name: &LockName) -> String {
    match backend.current(name).await {
        Ok(Some(info)) => {
            let held = info.acquired_at.elapsed().unwrap_or_default();
            format!(
                "{name} (held by {}, token {}, for {})",
                info.owner,
                info.token,
                human(held)
            )
        }
        _ => name.to_string(),
    }
}

/// Starts the command with the lease in its environment.
fn spawn(args: &Run, guard: &LockGuard) -> Result<Child, (u8, String)> {
    let Some((program, rest)) = args.command.split_first() else {
        return Err((exit::USAGE, "no command given after `--`".to_owned()));
    };
    let mut command = Command::new(program);
    command.args(rest);
    process::lease_env(&mut command, &guard.lease());
    process::spawn(&mut command, program)
}
