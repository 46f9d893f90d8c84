//! The events a taker process reports, one JSON object per line, and the
//! clock they are stamped with.

use serde::{Deserialize, Serialize};

/// Nanoseconds on `CLOCK_MONOTONIC`: one clock for every process on the
/// machine (taker processes, the test, the fenced store), unaffected by
/// wall-clock jumps. Under `faketime`, set `FAKETIME_DONT_FAKE_MONOTONIC=1`
/// so only the wall clock is skewed.
pub fn mono_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|ts| {
            let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
            secs * 1_000_000_000 + nanos
        })
        .unwrap_or(0)
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The process is connected to its backend and takes commands.
    Ready,
    /// An operation starts (stamped before its first request is sent).
    Invoke,
    /// An operation completed successfully.
    Ok,
    /// An operation failed (or found the lock busy).
    Fail,
    /// The guard's lost signal fired.
    Lost,
    /// The guard's safe deadline moved (a renewal succeeded).
    Renewed,
    /// The answer to `check`: does the guard believe it holds the lock?
    Check,
}

/// One event of one taker process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The process's owner label.
    pub proc: String,
    /// When, on [`mono_ns`].
    pub t: u64,
    /// What happened.
    pub ev: Kind,
    /// The operation: `acquire`, `try`, `extend`, `release`, `read`,
    /// `write`, `counter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The lock name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// The fencing token of the guard involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// The lease id of the guard involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// The guard's safe deadline, on [`mono_ns`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// Whether the guard believed it held the lock (at a `check`, or when a
    /// store operation was sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<bool>,
    /// A value read from or written to the fenced store; for `ready`, the
    /// process's wall clock in Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    /// The error, for `fail` and `lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Event {
    /// An event of `kind` stamped now, with every optional field empty.
    pub fn now(proc: &str, ev: Kind) -> Self {
        Self {
            proc: proc.to_owned(),
            t: mono_ns(),
            ev,
            op: None,
            lock: None,
            token: None,
            lease: None,
            deadline: None,
            held: None,
            value: None,
            error: None,
        }
    }

    /// Sets the operation.
    pub fn op(mut self, op: &str) -> Self {
        self.op = Some(op.to_owned());
        self
    }

    /// The token as text (`-` when there is none), for messages.
    pub fn token_text(&self) -> String {
        self.token.map_or_else(|| "-".to_owned(), |t| t.to_string())
    }

    /// Whether this is `ev` of operation `op`.
    pub fn is(&self, ev: Kind, op: &str) -> bool {
        self.ev == ev && self.op.as_deref() == Some(op)
    }
}
