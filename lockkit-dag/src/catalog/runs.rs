//! Recording runs and reading them back.

use sqlx::Row;

use super::{Catalog, on_db};
use crate::error::{DagError, Result};
use crate::record::{Outcome, RunRecord, TaskRunRecord, now_ms};

const TASK_RUN_COLUMNS: &str = "run_id, task, position, lock_name, ready_at_ms, locked_at_ms, started_at_ms, ended_at_ms, token, lease_id, exit_code, outcome, detail";

impl Catalog {
    /// Records the start of a run of `pipeline` with its tasks pending;
    /// returns the run's id.
    ///
    /// # Errors
    /// [`DagError::Catalog`] when the database fails; then nothing is
    /// recorded.
    ///
    /// # Cancel safety
    /// One transaction: dropped before it commits, nothing is recorded.
    pub async fn start_run(
        &self,
        pipeline: &str,
        owner: &str,
        tasks: &[TaskRunRecord],
    ) -> Result<i64> {
        on_db!(self, "recording a run", |pool| async {
            let mut tx = pool.begin().await?;
            let run_id: i64 = sqlx::query_scalar(
                "INSERT INTO lockkit_runs (pipeline, owner, started_at_ms, outcome) VALUES ($1, $2, $3, 'running') RETURNING run_id",
            )
            .bind(pipeline)
            .bind(owner)
            .bind(now_ms())
            .fetch_one(&mut *tx)
            .await?;
            for task in tasks {
                sqlx::query(
                    "INSERT INTO lockkit_task_runs (run_id, task, position, lock_name, outcome) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(run_id)
                .bind(&task.task)
                .bind(task.position)
                .bind(task.lock_name.as_deref())
                .bind(task.outcome.as_str())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(run_id)
        })
    }

    /// Stores the current state of one task of run `run_id`.
    ///
    /// # Errors
    /// [`DagError::Catalog`] when the database fails.
    ///
    /// # Cancel safety
    /// One statement: it is stored or not.
    pub async fn record_task(&self, run_id: i64, task: &TaskRunRecord) -> Result<()> {
        on_db!(self, "recording a task", |pool| async {
            sqlx::query(
                "UPDATE lockkit_task_runs SET ready_at_ms = $3, locked_at_ms = $4, started_at_ms = $5, ended_at_ms = $6, \
                 token = $7, lease_id = $8, exit_code = $9, outcome = $10, detail = $11 WHERE run_id = $1 AND task = $2",
            )
            .bind(run_id)
            .bind(&task.task)
            .bind(task.ready_at_ms)
            .bind(task.locked_at_ms)
            .bind(task.started_at_ms)
            .bind(task.ended_at_ms)
            .bind(task.token)
            .bind(task.lease_id.as_deref())
            .bind(task.exit_code)
            .bind(task.outcome.as_str())
            .bind(task.detail.as_deref())
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Records the end of run `run_id`.
    ///
    /// # Errors
    /// [`DagError::Catalog`] when the database fails.
    ///
    /// # Cancel safety
    /// One statement: it is stored or not.
    pub async fn finish_run(
        &self,
        run_id: i64,
        outcome: Outcome,
        detail: Option<&str>,
    ) -> Result<()> {
        on_db!(self, "recording the end of a run", |pool| async {
            sqlx::query(
                "UPDATE lockkit_runs SET ended_at_ms = $2, outcome = $3, detail = $4 WHERE run_id = $1",
            )
            .bind(run_id)
            .bind(now_ms())
            .bind(outcome.as_str())
            .bind(detail)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// The ids of the `count` most recent runs, oldest first.
    ///
    /// # Errors
    /// [`DagError::Catalog`] when the database fails.
    ///
    /// # Cancel safety
    /// Read-only; dropping it has no effect.
    pub async fn latest_runs(&self, count: u32) -> Result<Vec<i64>> {
        let mut ids: Vec<i64> = on_db!(self, "listing runs", |pool| {
            sqlx::query_scalar("SELECT run_id FROM lockkit_runs ORDER BY run_id DESC LIMIT $1")
                .bind(i64::from(count))
                .fetch_all(pool)
        })?;
        ids.reverse();
        Ok(ids)
    }

    /// The recorded runs `ids`, with their tasks, in the order asked.
    ///
    /// # Errors
    /// [`DagError::UnknownRun`] for an id that was never recorded;
    /// [`DagError::Catalog`] when the database fails.
    ///
    /// # Cancel safety
    /// Read-only; dropping it has no effect.
    pub async fn runs(&self, ids: &[i64]) -> Result<Vec<RunRecord>> {
        let mut runs = Vec::with_capacity(ids.len());
        for &id in ids {
            let (run, tasks) = on_db!(self, "reading a run", |pool| async {
                let run = sqlx::query(
                    "SELECT run_id, pipeline, owner, started_at_ms, ended_at_ms, outcome, detail FROM lockkit_runs WHERE run_id = $1",
                )
                .bind(id)
                .fetch_optional(pool)
                .await?;
                let tasks = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {TASK_RUN_COLUMNS} FROM lockkit_task_runs WHERE run_id = $1 ORDER BY position"
                )))
                .bind(id)
                .fetch_all(pool)
                .await?;
                let run = match run {
                    None => None,
                    Some(row) => Some(RunRecord {
                        run_id: row.try_get("run_id")?,
                        pipeline: row.try_get("pipeline")?,
                        owner: row.try_get("owner")?,
                        started_at_ms: row.try_get("started_at_ms")?,
                        ended_at_ms: row.try_get("ended_at_ms")?,
                        outcome: Outcome::parse(&row.try_get::<String, _>("outcome")?),
                        detail: row.try_get("detail")?,
                        tasks: Vec::new(),
                    }),
                };
                let tasks = tasks
                    .iter()
                    .map(|row| {
                        Ok::<_, sqlx::Error>(TaskRunRecord {
                            task: row.try_get("task")?,
                            position: row.try_get("position")?,
                            lock_name: row.try_get("lock_name")?,
                            ready_at_ms: row.try_get("ready_at_ms")?,
                            locked_at_ms: row.try_get("locked_at_ms")?,
                            started_at_ms: row.try_get("started_at_ms")?,
                            ended_at_ms: row.try_get("ended_at_ms")?,
                            token: row.try_get("token")?,
                            lease_id: row.try_get("lease_id")?,
                            exit_code: row.try_get("exit_code")?,
                            outcome: Outcome::parse(&row.try_get::<String, _>("outcome")?),
                            detail: row.try_get("detail")?,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((run, tasks))
            })?;
            let mut run = run.ok_or(DagError::UnknownRun(id))?;
            run.tasks = tasks;
            runs.push(run);
        }
        Ok(runs)
    }
}
