//! Driving taker processes (`tests/src/bin/taker.rs`) from a test: spawn,
//! send commands, await reported events, signal or kill the process.

use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Notify;

use super::event::{Event, Kind, mono_ns};

/// Events of every taker of one test, in the order they were read.
#[derive(Debug, Clone, Default)]
pub struct History {
    events: Arc<Mutex<Vec<Event>>>,
    changed: Arc<Notify>,
}

impl History {
    /// A copy of every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
        self.changed.notify_waiters();
    }

    /// Waits until an event matching `pred` that was not counted in `skip`
    /// (events before index `skip` are ignored) has arrived; returns it.
    ///
    /// # Panics
    /// After `timeout`, with the history so far.
    pub async fn wait_for(
        &self,
        what: &str,
        skip: usize,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        let give_up = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(event) = self.events().into_iter().skip(skip).find(|e| pred(e)) {
                return event;
            }
            if tokio::time::timeout_at(give_up, notified).await.is_err() {
                panic!(
                    "no event {what} within {timeout:?}; history:\n{}",
                    self.dump()
                );
            }
        }
    }

    /// The history, one JSON line per event, for failure messages.
    pub fn dump(&self) -> String {
        self.events()
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The number of events so far (a `skip` for [`wait_for`](Self::wait_for)).
    pub fn len(&self) -> usize {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether there are no events yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One taker process. Killed when dropped.
#[derive(Debug)]
pub struct Taker {
    /// Its owner label (`proc` of its events).
    pub name: String,
    child: Child,
    stdin: ChildStdin,
    history: History,
}

/// How long a taker may take to connect to its backend and say `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Taker {
    /// Starts `bin` (the `taker` binary: `env!("CARGO_BIN_EXE_taker")`)
    /// for `url` as owner `name`, reporting into `history`, and waits until
    /// it is connected.
    ///
    /// # Panics
    /// When it cannot start or does not become ready.
    pub async fn spawn(bin: &str, url: &str, name: &str, history: &History) -> Self {
        Self::spawn_with(bin, url, name, history, None, &[]).await
    }

    /// Like [`spawn`](Self::spawn), run under `wrapper` (e.g.
    /// `["faketime", "-f", "+1h"]`) with extra environment variables.
    ///
    /// # Panics
    /// As [`spawn`](Self::spawn).
    pub async fn spawn_with(
        bin: &str,
        url: &str,
        name: &str,
        history: &History,
        wrapper: Option<&[&str]>,
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = match wrapper {
            Some([program, args @ ..]) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            _ => Command::new(bin),
        };
        command
            .args([url, name])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the taker {bin}: {e}"));
        let stdin = child.stdin.take().expect("the taker's stdin");
        let stdout = child.stdout.take().expect("the taker's stdout");
        let sink = history.clone();
        let owner = name.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Event>(&line) {
                    Ok(event) => sink.push(event),
                    Err(e) => eprintln!("taker {owner}: unreadable event {line:?}: {e}"),
                }
            }
            // Its stdout closed: the process is gone (or going).
            sink.push(Event::now(&owner, Kind::Fail).op("exited"));
        });
        let taker = Self {
            name: name.to_owned(),
            child,
            stdin,
            history: history.clone(),
        };
        let me = taker.name.clone();
        let first = history
            .wait_for(&format!("{me} ready"), 0, READY_TIMEOUT, |e| {
                e.proc == me && (e.ev == Kind::Ready || e.is(Kind::Fail, "exited"))
            })
            .await;
        assert_eq!(
            first.ev,
            Kind::Ready,
            "the taker {me} exited before it was ready (see its stderr above)"
        );
        taker
    }

    /// Sends one command line; returns the history length before it, to
    /// await what the command causes.
    ///
    /// # Panics
    /// When the process's stdin is closed.
    pub async fn send(&mut self, command: &str) -> usize {
        let mark = self.history.len();
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("send {command:?} to {}: {e}", self.name));
        self.stdin.flush().await.ok();
        mark
    }

    /// Sends `command` and waits for this taker's completion (`ok` or
    /// `fail`) of operation `op`.
    ///
    /// # Panics
    /// After `timeout`.
    pub async fn call(&mut self, command: &str, op: &str, timeout: Duration) -> Event {
        let mark = self.send(command).await;
        self.completion(mark, op, timeout).await
    }

    /// Waits for this taker's `ok`/`fail` (or `check`) of `op` after
    /// history index `mark`.
    ///
    /// # Panics
    /// After `timeout`.
    pub async fn completion(&self, mark: usize, op: &str, timeout: Duration) -> Event {
        let me = self.name.clone();
        self.history
            .wait_for(&format!("{me}: {op} done"), mark, timeout, |e| {
                e.proc == me
                    && (e.is(Kind::Ok, op) || e.is(Kind::Fail, op) || e.is(Kind::Check, op))
            })
            .await
    }

    /// Waits for this taker's `lost` event after index `mark`.
    ///
    /// # Panics
    /// After `timeout`.
    pub async fn lost(&self, mark: usize, timeout: Duration) -> Event {
        let me = self.name.clone();
        self.history
            .wait_for(&format!("{me}: lost"), mark, timeout, |e| {
                e.proc == me && e.ev == Kind::Lost
            })
            .await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends `signal` to the process (and returns when it was sent: the
    /// [`mono_ns`] time).
    ///
    /// # Panics
    /// When the signal cannot be sent.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> u64 {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).unwrap_or(0));
        nix::sys::signal::kill(pid, signal)
            .unwrap_or_else(|e| panic!("signal {signal} to {}: {e}", self.name));
        mono_ns()
    }

    /// Kills the process (SIGKILL), reaps it, and returns when it was
    /// killed ([`mono_ns`]).
    pub async fn kill(&mut self) -> u64 {
        let t = self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait().await;
        t
    }
}

/// Milliseconds between two [`mono_ns`] stamps (`later - earlier`, 0 when
/// `later` is earlier).
pub fn ms_between(earlier: u64, later: u64) -> f64 {
    later.saturating_sub(earlier) as f64 / 1e6
}

/// Whether the taker event says the lock was granted.
pub fn granted(event: &Event) -> bool {
    event.ev == Kind::Ok && matches!(event.op.as_deref(), Some("acquire" | "try"))
}
