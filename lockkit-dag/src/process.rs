//! A command run under a lease: its environment, signal forwarding, and
//! the stop (`SIGTERM`, a grace period, `SIGKILL`) when the lease is lost.
//! Shared by the pipeline runner and `lockkit run`.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use lockkit_core::{Lease, LockGuard, LostReason};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

/// Exit code: the command was not found (the shell's convention).
pub const NOT_FOUND: u8 = 127;
/// Exit code: the command could not be started.
pub const CANNOT_EXECUTE: u8 = 126;

/// Puts the lease into the command's environment: `LOCKKIT_LOCK_NAME`,
/// `LOCKKIT_FENCING_TOKEN`, `LOCKKIT_LEASE_ID` and `LOCKKIT_OWNER`.
pub fn lease_env(command: &mut Command, lease: &Lease) {
    command
        .env("LOCKKIT_LOCK_NAME", lease.name.as_str())
        .env("LOCKKIT_FENCING_TOKEN", lease.token.to_string())
        .env("LOCKKIT_LEASE_ID", lease.lease_id.as_str())
        .env("LOCKKIT_OWNER", &lease.owner);
}

/// Starts `command`.
///
/// # Errors
/// The shell's exit code and a message: [`NOT_FOUND`] for a missing
/// program, [`CANNOT_EXECUTE`] otherwise.
pub fn spawn(command: &mut Command, program: &OsStr) -> Result<Child, (u8, String)> {
    command.spawn().map_err(|err| {
        let shown = program.to_string_lossy();
        match err.kind() {
            std::io::ErrorKind::NotFound => (NOT_FOUND, format!("{shown}: command not found")),
            _ => (CANNOT_EXECUTE, format!("{shown}: cannot run: {err}")),
        }
    })
}

/// How a supervised command ended.
#[derive(Debug)]
pub enum Ended {
    /// It exited (`forwarded`: the last signal passed on to it, if any).
    Exited {
        /// Its status.
        status: ExitStatus,
        /// The last signal forwarded to it.
        forwarded: Option<Signal>,
    },
    /// The lease was lost; the command was stopped.
    Lost(LostReason),
}

/// Who gets the signals: the command alone, or its whole process group
/// (a command started with `process_group(0)`; then the processes it
/// starts are stopped with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The command's process.
    Process,
    /// The command's process group (its pid is the group's id).
    Group,
}

fn target_pid(child: &Child, target: Target) -> Option<Pid> {
    let pid = i32::try_from(child.id()?).ok()?;
    Some(Pid::from_raw(match target {
        Target::Process => pid,
        Target::Group => -pid,
    }))
}

/// Waits for `child`, forwarding the signals `signals` receives to
/// `target`; if `guard`'s lease is lost first, stops the child
/// ([`terminate`]) and returns [`Ended::Lost`].
///
/// # Cancel safety
/// Dropping the future leaves the child running (tokio's `Child` is not
/// killed on drop); call [`terminate`] to stop it.
pub async fn supervise(
    child: &mut Child,
    target: Target,
    guard: Option<&LockGuard>,
    grace: Duration,
    signals: &mut Signals,
) -> Ended {
    let pid = target_pid(child, target);
    let lost = async {
        match guard {
            Some(guard) => guard.lost().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lost);
    let mut forwarded = None;
    loop {
        tokio::select! {
            status = child.wait() => {
                // A child that cannot be waited for counts as failed.
                let status = status.unwrap_or_else(|_| ExitStatus::from_raw(1 << 8));
                return Ended::Exited { status, forwarded };
            }
            reason = &mut lost => {
                terminate(child, target, grace).await;
                return Ended::Lost(reason);
            }
            signal = signals.next() => {
                // A group of its own is not in the terminal's foreground:
                // it gets SIGINT only from us.
                if let Some(pid) = pid
                    && (target == Target::Group || signals.forwards(signal))
                {
                    let _ = kill(pid, signal);
                    forwarded = Some(signal);
                }
            }
        }
    }
}

/// `SIGTERM` to `target`, then `SIGKILL` after `grace`; waits for the
/// child to end. For [`Target::Group`], the rest of the group gets the
/// `SIGKILL` too once the child has ended, so nothing it started outlives
/// the lease.
///
/// # Cancel safety
/// Dropping the future during the grace period leaves the child running.
pub async fn terminate(child: &mut Child, target: Target, grace: Duration) {
    let pid = target_pid(child, target);
    if let Some(pid) = pid {
        let _ = kill(pid, Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    if target == Target::Group
        && let Some(pid) = pid
    {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// The signals passed on to a command: `SIGTERM`, `SIGHUP`, `SIGQUIT`, and
/// `SIGINT` unless standard input is a terminal (a terminal's Ctrl-C
/// already reaches the whole foreground process group). All four are
/// caught, so this process lives on to release the lock after the
/// command ends.
///
/// Create it *before* the command starts, so that a signal that arrives
/// meanwhile is forwarded rather than ending this process by its default
/// action.
pub struct Signals {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
    forward_sigint: bool,
}

impl Signals {
    /// Installs the handlers (needs a tokio runtime with signals enabled;
    /// a signal whose handler cannot be installed is not forwarded).
    pub fn new() -> Self {
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
            forward_sigint: !std::io::stdin().is_terminal(),
        }
    }

    /// Whether `signal` is passed on to the command.
    pub fn forwards(&self, signal: Signal) -> bool {
        signal != Signal::SIGINT || self.forward_sigint
    }

    /// The next signal received (pends forever if none can be).
    ///
    /// # Cancel safety
    /// Cancel safe: a signal not yet returned stays pending.
    pub async fn next(&mut self) -> Signal {
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

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

/// The shell's convention: the exit code, or 128 + the signal that killed
/// the command.
pub fn status_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(1);
    }
    status
        .signal()
        .and_then(|s| u8::try_from(128 + s).ok())
        .unwrap_or(1)
}
