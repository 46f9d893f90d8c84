//! Writing a spec into the catalog's tables and reading it back.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::Row;

use super::{Catalog, on_db};
use crate::error::{DagError, Result};
use crate::spec::{Action, LockPolicy, Pipeline, Spec, Task, TaskLock};

/// What [`Catalog::load`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Whether the catalog changed at all (`false`: the same spec was
    /// already loaded, and no row was written).
    pub changed: bool,
    /// Tasks and pipelines that are new.
    pub added: Vec<String>,
    /// Tasks and pipelines whose definition changed.
    pub changed_items: Vec<String>,
    /// Tasks and pipelines that are gone.
    pub removed: Vec<String>,
    /// How many tasks and pipelines the catalog now holds.
    pub tasks: usize,
    /// See `tasks`.
    pub pipelines: usize,
}

const TASK_COLUMNS: &str = "name, kind, action, input, output, lock_enabled, lock_name, lock_ttl_ms, lock_policy, lock_wait_timeout_ms, lock_permits";

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn from_ms(ms: Option<i64>) -> Option<Duration> {
    ms.and_then(|ms| u64::try_from(ms).ok())
        .map(Duration::from_millis)
}

impl Catalog {
    /// Loads `spec`: if it equals the stored spec nothing is written;
    /// otherwise the stored tasks, pipelines, nodes and dependencies are
    /// replaced by `spec`'s in one transaction (a reader sees the old set
    /// or the new one, never a mix). Recorded runs are kept.
    ///
    /// # Errors
    /// [`DagError::Catalog`] when the database fails; then nothing changed.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes rolls the transaction back:
    /// the catalog keeps the old spec.
    pub async fn load(&self, spec: &Spec) -> Result<LoadReport> {
        let current = self.spec().await?;
        let mut report = diff(&current, spec);
        if !report.changed {
            return Ok(report);
        }
        on_db!(self, "loading the spec", |pool| async {
            let mut tx = pool.begin().await?;
            for table in [
                "DELETE FROM lockkit_dependencies",
                "DELETE FROM lockkit_pipeline_nodes",
                "DELETE FROM lockkit_pipelines",
                "DELETE FROM lockkit_tasks",
            ] {
                sqlx::query(table).execute(&mut *tx).await?;
            }
            for task in spec.tasks.values() {
                let (kind, action) = match &task.action {
                    Action::Command(c) => ("command", c.as_str()),
                    Action::Notebook(n) => ("notebook", n.as_str()),
                };
                let lock = task.lock.as_ref();
                sqlx::query(
                    "INSERT INTO lockkit_tasks (name, kind, action, input, output, lock_enabled, lock_name, lock_ttl_ms, lock_policy, lock_wait_timeout_ms, lock_permits) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&task.name)
                .bind(kind)
                .bind(action)
                .bind(task.input.as_deref())
                .bind(task.output.as_deref())
                .bind(lock.is_some())
                .bind(lock.map(|l| l.name.as_str()))
                .bind(lock.map(|l| ms(l.ttl)))
                .bind(lock.map(|l| l.policy.as_str()))
                .bind(lock.and_then(|l| l.wait_timeout).map(ms))
                .bind(lock.map_or(1, |l| i64::from(l.permits)))
                .execute(&mut *tx)
                .await?;
            }
            for pipeline in spec.pipelines.values() {
                sqlx::query("INSERT INTO lockkit_pipelines (name) VALUES ($1)")
                    .bind(&pipeline.name)
                    .execute(&mut *tx)
                    .await?;
                for (position, task) in pipeline.tasks.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO lockkit_pipeline_nodes (pipeline, task, position) VALUES ($1, $2, $3)",
                    )
                    .bind(&pipeline.name)
                    .bind(task)
                    .bind(i64::try_from(position).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?;
                }
                for (from, to) in &pipeline.edges {
                    sqlx::query(
                        "INSERT INTO lockkit_dependencies (pipeline, task, depends_on) VALUES ($1, $2, $3)",
                    )
                    .bind(&pipeline.name)
                    .bind(to)
                    .bind(from)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await
        })?;
        report.tasks = spec.tasks.len();
        report.pipelines = spec.pipelines.len();
        Ok(report)
    }

    /// The spec stored in the catalog (empty if none was loaded).
    ///
    /// # Errors
    /// [`DagError::Catalog`] when the database fails, or when a stored row
    /// is not one this crate writes.
    ///
    /// # Cancel safety
    /// Read-only; dropping it has no effect.
    pub async fn spec(&self) -> Result<Spec> {
        let (tasks, nodes, edges) = on_db!(self, "reading the spec", |pool| async {
            let mut conn = pool.acquire().await?;
            let tasks = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {TASK_COLUMNS} FROM lockkit_tasks"
            )))
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| {
                Ok::<_, sqlx::Error>(StoredTask {
                    name: row.try_get("name")?,
                    kind: row.try_get("kind")?,
                    action: row.try_get("action")?,
                    input: row.try_get("input")?,
                    output: row.try_get("output")?,
                    lock_enabled: row.try_get("lock_enabled")?,
                    lock_name: row.try_get("lock_name")?,
                    lock_ttl_ms: row.try_get("lock_ttl_ms")?,
                    lock_policy: row.try_get("lock_policy")?,
                    lock_wait_timeout_ms: row.try_get("lock_wait_timeout_ms")?,
                    lock_permits: row.try_get("lock_permits")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
            let nodes: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT pipeline, task, position FROM lockkit_pipeline_nodes ORDER BY pipeline, position",
            )
            .fetch_all(&mut *conn)
            .await?;
            let edges: Vec<(String, String, String)> =
                sqlx::query_as("SELECT pipeline, depends_on, task FROM lockkit_dependencies")
                    .fetch_all(&mut *conn)
                    .await?;
            Ok((tasks, nodes, edges))
        })?;
        let mut spec = Spec::default();
        for stored in tasks {
            let task = stored.into_task().map_err(|why| {
                DagError::Catalog(lockkit_core::Error::backend(
                    "catalog",
                    format!(
                        "the catalog {:?} holds a task it cannot read: {why}",
                        self.redacted
                    ),
                    None,
                ))
            })?;
            spec.tasks.insert(task.name.clone(), task);
        }
        for (pipeline, task, _) in nodes {
            spec.pipelines
                .entry(pipeline.clone())
                .or_insert_with(|| Pipeline {
                    name: pipeline,
                    tasks: Vec::new(),
                    edges: Vec::new(),
                })
                .tasks
                .push(task);
        }
        for (pipeline, from, to) in edges {
            if let Some(p) = spec.pipelines.get_mut(&pipeline) {
                p.edges.push((from, to));
            }
        }
        for pipeline in spec.pipelines.values_mut() {
            pipeline.edges.sort();
        }
        Ok(spec)
    }

    /// One pipeline of the stored spec, with its tasks.
    ///
    /// # Errors
    /// [`DagError::UnknownPipeline`] (naming the known ones), or
    /// [`DagError::Catalog`] when the database fails.
    ///
    /// # Cancel safety
    /// Read-only; dropping it has no effect.
    pub async fn pipeline(&self, name: &str) -> Result<(Pipeline, Vec<Task>)> {
        let spec = self.spec().await?;
        let Some(pipeline) = spec.pipelines.get(name) else {
            let known: Vec<&str> = spec.pipelines.keys().map(String::as_str).collect();
            return Err(DagError::UnknownPipeline {
                name: name.to_owned(),
                known: if known.is_empty() {
                    "none; load a spec first".to_owned()
                } else {
                    known.join(", ")
                },
            });
        };
        let tasks = pipeline
            .tasks
            .iter()
            .filter_map(|t| spec.tasks.get(t).cloned())
            .collect();
        Ok((pipeline.clone(), tasks))
    }
}

struct StoredTask {
    name: String,
    kind: String,
    action: String,
    input: Option<String>,
    output: Option<String>,
    lock_enabled: bool,
    lock_name: Option<String>,
    lock_ttl_ms: Option<i64>,
    lock_policy: Option<String>,
    lock_wait_timeout_ms: Option<i64>,
    lock_permits: i64,
}

impl StoredTask {
    fn into_task(self) -> std::result::Result<Task, String> {
        let action = match self.kind.as_str() {
            "command" => Action::Command(self.action),
            "notebook" => Action::Notebook(self.action),
            other => return Err(format!("task {}: unknown kind {other:?}", self.name)),
        };
        let lock = if self.lock_enabled {
            Some(TaskLock {
                name: self.lock_name.unwrap_or_else(|| self.name.clone()),
                ttl: from_ms(self.lock_ttl_ms)
                    .ok_or_else(|| format!("task {}: a lock without a TTL", self.name))?,
                policy: self
                    .lock_policy
                    .as_deref()
                    .map_or(Some(LockPolicy::Wait), LockPolicy::parse)
                    .ok_or_else(|| format!("task {}: unknown lock policy", self.name))?,
                wait_timeout: from_ms(self.lock_wait_timeout_ms),
                permits: u32::try_from(self.lock_permits)
                    .ok()
                    .filter(|n| lockkit_core::validate_permits(*n).is_ok())
                    .ok_or_else(|| {
                        format!(
                            "task {}: invalid lock permits {}",
                            self.name, self.lock_permits
                        )
                    })?,
            })
        } else {
            None
        };
        Ok(Task {
            name: self.name,
            action,
            input: self.input,
            output: self.output,
            lock,
        })
    }
}

/// What loading `new` over `old` changes.
fn diff(old: &Spec, new: &Spec) -> LoadReport {
    let mut report = LoadReport {
        tasks: new.tasks.len(),
        pipelines: new.pipelines.len(),
        ..LoadReport::default()
    };
    let mut compare = |kind: &str,
                       old_names: BTreeSet<&String>,
                       new_names: BTreeSet<&String>,
                       same: &dyn Fn(&str) -> bool| {
        for name in new_names.difference(&old_names) {
            report.added.push(format!("{kind} {name}"));
        }
        for name in old_names.difference(&new_names) {
            report.removed.push(format!("{kind} {name}"));
        }
        for name in new_names.intersection(&old_names) {
            if !same(name) {
                report.changed_items.push(format!("{kind} {name}"));
            }
        }
    };
    compare(
        "task",
        old.tasks.keys().collect(),
        new.tasks.keys().collect(),
        &|n| old.tasks.get(n) == new.tasks.get(n),
    );
    compare(
        "pipeline",
        old.pipelines.keys().collect(),
        new.pipelines.keys().collect(),
        &|n| old.pipelines.get(n) == new.pipelines.get(n),
    );
    report.changed =
        !(report.added.is_empty() && report.removed.is_empty() && report.changed_items.is_empty());
    report
}
