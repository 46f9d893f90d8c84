//! The catalog's queries: shared tasks, and the lint's findings. Each is a
//! public constant, valid on SQLite and Postgres alike, so it can be read
//! here and run by hand (`psql`, `sqlite3`, a Grafana panel).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::{Catalog, on_db};
use crate::error::Result;

/// Tasks used by more than one pipeline: one row per (task, pipeline),
/// with the task's lock settings.
pub const SHARED_TASKS: &str = "\
SELECT n.task, n.pipeline, t.lock_enabled, t.lock_name, t.lock_ttl_ms
FROM lockkit_pipeline_nodes n
JOIN lockkit_tasks t ON t.name = n.task
WHERE n.task IN (SELECT task FROM lockkit_pipeline_nodes GROUP BY task HAVING COUNT(*) > 1)
ORDER BY n.task, n.pipeline";

/// Locked tasks that share a lock name but not a lock duration: one row
/// per such task.
pub const LOCK_DURATION_CONFLICTS: &str = "\
SELECT lock_name, name, lock_ttl_ms
FROM lockkit_tasks
WHERE lock_enabled AND lock_name IN (
    SELECT lock_name FROM lockkit_tasks WHERE lock_enabled
    GROUP BY lock_name HAVING COUNT(DISTINCT lock_ttl_ms) > 1)
ORDER BY lock_name, name";

/// Different tasks that declare the same output without being under one
/// lock: the same table written by two sub-tasks that can run at once.
pub const SHARED_OUTPUTS: &str = "\
SELECT a.output, a.name, b.name
FROM lockkit_tasks a
JOIN lockkit_tasks b ON b.output = a.output AND a.name < b.name
WHERE NOT (a.lock_enabled AND b.lock_enabled AND a.lock_name = b.lock_name)
ORDER BY a.output, a.name, b.name";

/// A task used by more than one pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedTask {
    /// The task.
    pub task: String,
    /// The pipelines that use it, sorted.
    pub pipelines: Vec<String>,
    /// Its lock's name and TTL, when it is locked.
    pub lock: Option<(String, Duration)>,
}

/// A finding of `lockkit dag lint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LintProblem {
    /// A task used by several pipelines has no lock: they can run it at
    /// the same time.
    UnlockedSharedTask {
        /// The task.
        task: String,
        /// The pipelines that use it.
        pipelines: Vec<String>,
    },
    /// Locked tasks share a lock name with different durations (TTLs).
    LockDurationConflict {
        /// The lock.
        lock_name: String,
        /// The tasks and their durations.
        tasks: Vec<(String, Duration)>,
    },
    /// Two tasks declare the same output and are not under one lock.
    SharedOutputWithoutLock {
        /// The output.
        output: String,
        /// The two tasks.
        tasks: (String, String),
    },
}

impl fmt::Display for LintProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnlockedSharedTask { task, pipelines } => write!(
                f,
                "task {task} is shared by pipelines {} but has no lock (add `lock: {{lock_status: enable, lock_duration: …}}`)",
                pipelines.join(", ")
            ),
            Self::LockDurationConflict { lock_name, tasks } => {
                let each: Vec<String> = tasks
                    .iter()
                    .map(|(t, d)| format!("{t} {}", humantime::format_duration(*d)))
                    .collect();
                write!(
                    f,
                    "lock {lock_name} has different durations: {} (give them one lock_duration)",
                    each.join(", ")
                )
            }
            Self::SharedOutputWithoutLock { output, tasks } => write!(
                f,
                "tasks {} and {} both write {output} but are not under one lock (give both the same lock_name)",
                tasks.0, tasks.1
            ),
        }
    }
}

fn duration(ms: Option<i64>) -> Duration {
    Duration::from_millis(ms.and_then(|ms| u64::try_from(ms).ok()).unwrap_or(0))
}

impl Catalog {
    /// Tasks used by more than one pipeline ([`SHARED_TASKS`]), by name.
    ///
    /// # Errors
    /// [`crate::DagError::Catalog`] when the database fails.
    ///
    /// # Cancel safety
    /// Read-only; dropping it has no effect.
    pub async fn shared_tasks(&self) -> Result<Vec<SharedTask>> {
        type Row = (String, String, bool, Option<String>, Option<i64>);
        let rows: Vec<Row> = on_db!(self, "finding shared tasks", |pool| {
            sqlx::query_as(SHARED_TASKS).fetch_all(pool)
        })?;
        let mut shared: BTreeMap<String, SharedTask> = BTreeMap::new();
        for (task, pipeline, locked, lock_name, ttl) in rows {
            let entry = shared.entry(task.clone()).or_insert_with(|| SharedTask {
                task: task.clone(),
                pipelines: Vec::new(),
                lock: locked.then(|| (lock_name.unwrap_or(task), duration(ttl))),
            });
            entry.pipelines.push(pipeline);
        }
        let mut shared: Vec<SharedTask> = shared.into_values().collect();
        for task in &mut shared {
            task.pipelines.sort();
        }
        Ok(shared)
    }

    /// Everything `lockkit dag lint` reports: shared tasks without a lock,
    /// lock names with different durations ([`LOCK_DURATION_CONFLICTS`]),
    /// and outputs written by tasks not under one lock ([`SHARED_OUTPUTS`]).
    ///
    /// # Errors
    /// [`crate::DagError::Catalog`] when the database fails.
    ///
    /// # Cancel safety
    /// Read-only; dropping it has no effect.
    pub async fn lint(&self) -> Result<Vec<LintProblem>> {
        let mut problems: Vec<LintProblem> = self
            .shared_tasks()
            .await?
            .into_iter()
            .filter(|t| t.lock.is_none())
            .map(|t| LintProblem::UnlockedSharedTask {
                task: t.task,
                pipelines: t.pipelines,
            })
            .collect();
        let conflicts: Vec<(String, String, Option<i64>)> =
            on_db!(self, "checking lock durations", |pool| {
                sqlx::query_as(LOCK_DURATION_CONFLICTS).fetch_all(pool)
            })?;
        let mut by_lock: BTreeMap<String, Vec<(String, Duration)>> = BTreeMap::new();
        for (lock, task, ttl) in conflicts {
            by_lock.entry(lock).or_default().push((task, duration(ttl)));
        }
        for (lock_name, mut tasks) in by_lock {
            tasks.sort();
            problems.push(LintProblem::LockDurationConflict { lock_name, tasks });
        }
        let outputs: Vec<(String, String, String)> =
            on_db!(self, "checking shared outputs", |pool| {
                sqlx::query_as(SHARED_OUTPUTS).fetch_all(pool)
            })?;
        for (output, a, b) in outputs {
            problems.push(LintProblem::SharedOutputWithoutLock {
                output,
                tasks: (a, b),
            });
        }
        Ok(problems)
    }
}
