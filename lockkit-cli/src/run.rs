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
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use lockkit::{Error, LockBackend, LockGuard, LockName, LockOptions, Locker};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
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
    let signals = Signals::new();
    let mut child = match spawn(&args, &guard) {
        Ok(child) => child,
        Err((code, message)) => {
            eprintln!("lockkit: {message}");
            let _ = guard.release().await;
            return Ok(code);
        }
    };
    let outcome = supervise(&mut child, &guard, args.grace, signals).await;
    match outcome {
        Outcome::Exited(status) => match guard.release().await {
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
        Outcome::Lost => Ok(exit::LOST),
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
    let lease = guard.lease();
    Command::new(program)
        .args(rest)
        .env("LOCKKIT_LOCK_NAME", lease.name.as_str())
        .env("LOCKKIT_FENCING_TOKEN", lease.token.to_string())
        .env("LOCKKIT_LEASE_ID", lease.lease_id.as_str())
        .env("LOCKKIT_OWNER", &lease.owner)
        .spawn()
        .map_err(|err| {
            let shown = program.to_string_lossy();
            match err.kind() {
                std::io::ErrorKind::NotFound => {
                    (exit::NOT_FOUND, format!("{shown}: command not found"))
                }
                _ => (exit::CANNOT_EXECUTE, format!("{shown}: cannot run: {err}")),
            }
        })
}

enum Outcome {
    Exited(ExitStatus),
    Lost,
}

/// Waits for the child, forwarding signals; ends it if the lease is lost.
async fn supervise(
    child: &mut Child,
    guard: &LockGuard,
    grace: Duration,
    mut streams: Signals,
) -> Outcome {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let forward_sigint = !std::io::stdin().is_terminal();
    let lost = guard.lost();
    tokio::pin!(lost);
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) => Outcome::Exited(status),
                    // The child cannot be waited for: treat it as gone.
                    Err(_) => Outcome::Exited(ExitStatus::from_raw(1 << 8)),
                };
            }
            reason = &mut lost => {
                eprintln!(
                    "lockkit: the lease on {} was lost ({reason}); stopping the command",
                    guard.name()
                );
                terminate(child, pid, grace).await;
                return Outcome::Lost;
            }
            signal = streams.next() => {
                if let Some(pid) = pid
                    && (signal != Signal::SIGINT || forward_sigint)
                {
                    let _ = kill(pid, signal);
                }
            }
        }
    }
}

/// `SIGTERM`, then `SIGKILL` after `grace`.
async fn terminate(child: &mut Child, pid: Option<Pid>, grace: Duration) {
    if let Some(pid) = pid {
        let _ = kill(pid, Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// The signals `lockkit` forwards.
struct Signals {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        let kinds = [
            (Signal::SIGTERM, SignalKind::terminate()),
            (Signal::SIGINT, SignalKind::interrupt()),
            (Signal::SIGHUP, SignalKind::hangup()),
            (Signal::SIGQUIT, SignalKind::quit()),
        ];
        Self {
            streams: kinds
                .into_iter()
                .filter_map(|(sig, kind)| signal(kind).ok().map(|s| (sig, s)))
                .collect(),
        }
    }

    /// The next signal received (pends forever if none can be).
    async fn next(&mut self) -> Signal {
        if self.streams.is_empty() {
            return std::future::pending().await;
        }
        let futures = self
            .streams
            .iter_mut()
            .map(|(sig, stream)| Box::pin(async move { stream.recv().await.map(|_| *sig) }));
        match futures::future::select_all(futures).await {
            (Some(sig), _, _) => sig,
            (None, _, _) => std::future::pending().await,
        }
    }
}

/// The shell's convention: the exit code, or 128 + the signal that killed
/// the child.
fn status_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(1);
    }
    status
        .signal()
        .and_then(|s| u8::try_from(128 + s).ok())
        .unwrap_or(1)
}
