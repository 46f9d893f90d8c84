//! What the catalog records of each run: the run, and each task's times,
//! lock, token and outcome.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// How a task of a run ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Not started yet.
    Pending,
    /// Waiting for its lock or running.
    Running,
    /// The command exited 0.
    Succeeded,
    /// The command exited non-zero or could not start, or the lock was
    /// held under the `fail` policy, or the wait timed out.
    Failed,
    /// Not run: the lock was held under the `skip` policy, or an upstream
    /// task was skipped.
    Skipped,
    /// The lease was lost while the command ran; the command was stopped.
    Lost,
    /// Not run because a task it depends on did not succeed.
    NotRun,
    /// The runner was interrupted (a signal) before the task finished.
    Cancelled,
}

impl Outcome {
    /// The name stored in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Lost => "lost",
            Self::NotRun => "not_run",
            Self::Cancelled => "cancelled",
        }
    }

    /// The outcome stored as `text`; unknown text reads as failed.
    pub fn parse(text: &str) -> Self {
        match text {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "skipped" => Self::Skipped,
            "lost" => Self::Lost,
            "not_run" => Self::NotRun,
            "cancelled" => Self::Cancelled,
            _ => Self::Failed,
        }
    }

    /// Whether the task's dependants may run after it.
    pub fn lets_dependants_run(self) -> bool {
        self == Self::Succeeded
    }

    /// Whether this outcome makes the run fail.
    pub fn fails_run(self) -> bool {
        matches!(
            self,
            Self::Failed
                | Self::Lost
                | Self::NotRun
                | Self::Cancelled
                | Self::Pending
                | Self::Running
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded run of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The run's id (rising).
    pub run_id: i64,
    /// The pipeline run.
    pub pipeline: String,
    /// The runner's owner label (`host:pid` unless given).
    pub owner: String,
    /// When the run started (ms since the Unix epoch, the runner's clock).
    pub started_at_ms: i64,
    /// When it ended; `None` while running (or if the runner died).
    pub ended_at_ms: Option<i64>,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub outcome: Outcome,
    /// Why it failed, when it did.
    pub detail: Option<String>,
    /// Its tasks, in dependency order.
    pub tasks: Vec<TaskRunRecord>,
}

/// One task of a recorded run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRunRecord {
    /// The task.
    pub task: String,
    /// Its place in the pipeline's dependency order.
    pub position: i64,
    /// The lock it ran under, if any.
    pub lock_name: Option<String>,
    /// When its dependencies were done and it began to wait for its lock.
    pub ready_at_ms: Option<i64>,
    /// When it got its lock.
    pub locked_at_ms: Option<i64>,
    /// When its command started (after the lock was granted).
    pub started_at_ms: Option<i64>,
    /// When its command ended (before the lock was released).
    pub ended_at_ms: Option<i64>,
    /// The fencing token of its lease.
    pub token: Option<i64>,
    /// The lease id.
    pub lease_id: Option<String>,
    /// The command's exit code (128 + N when killed by signal N).
    pub exit_code: Option<i64>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, in words, when it did not succeed.
    pub detail: Option<String>,
}

impl TaskRunRecord {
    /// A record of a task that has not started.
    pub fn pending(task: &str, position: i64, lock_name: Option<String>) -> Self {
        Self {
            task: task.to_owned(),
            position,
            lock_name,
            ready_at_ms: None,
            locked_at_ms: None,
            started_at_ms: None,
            ended_at_ms: None,
            token: None,
            lease_id: None,
            exit_code: None,
            outcome: Outcome::Pending,
            detail: None,
        }
    }

    /// How long it waited for its lock, in ms.
    pub fn lock_wait_ms(&self) -> Option<i64> {
        Some(self.locked_at_ms? - self.ready_at_ms?)
    }
}

/// Now, in ms since the Unix epoch (the clock the records use).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
