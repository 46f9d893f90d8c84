//! The run summary table printed at the end of `lockkit dag run`.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use crate::record::RunRecord;

/// `HH:MM:SS.mmm` (UTC) of a recorded time.
pub fn clock(ms: i64) -> String {
    let Ok(ms) = u64::try_from(ms) else {
        return "-".to_owned();
    };
    let text = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string();
    text.get(11..23).map_or(text.clone(), str::to_owned)
}

/// A duration in ms as `1.234s`.
pub fn seconds(ms: i64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let secs = ms as f64 / 1000.0;
    format!("{secs:.3}s")
}

/// The summary table: task, start, end, duration, lock wait, token,
/// outcome (times UTC).
///
/// # Example
/// ```
/// # use lockkit_dag::{Outcome, RunRecord, TaskRunRecord};
/// let mut task = TaskRunRecord::pending("NodeB", 0, Some("NodeB".into()));
/// task.ready_at_ms = Some(1_000);
/// task.locked_at_ms = Some(1_250);
/// task.started_at_ms = Some(1_260);
/// task.ended_at_ms = Some(3_260);
/// task.token = Some(7);
/// task.outcome = Outcome::Succeeded;
/// let run = RunRecord {
///     run_id: 1, pipeline: "DAG1".into(), owner: "DAG1:run-1".into(),
///     started_at_ms: 1_000, ended_at_ms: Some(3_300),
///     outcome: Outcome::Succeeded, detail: None, tasks: vec![task],
/// };
/// let table = lockkit_dag::report::summary(&run);
/// assert!(table.contains("NodeB"));
/// assert!(table.contains("2.000s")); // its duration
/// assert!(table.contains("0.250s")); // its lock wait
/// ```
pub fn summary(run: &RunRecord) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "TASK".into(),
        "START".into(),
        "END".into(),
        "DURATION".into(),
        "LOCK WAIT".into(),
        "TOKEN".into(),
        "OUTCOME".into(),
    ]];
    for task in &run.tasks {
        let dash = || "-".to_owned();
        rows.push([
            task.task.clone(),
            task.started_at_ms.map_or_else(dash, clock),
            task.ended_at_ms.map_or_else(dash, clock),
            match (task.started_at_ms, task.ended_at_ms) {
                (Some(s), Some(e)) => seconds(e - s),
                _ => dash(),
            },
            task.lock_wait_ms().map_or_else(dash, seconds),
            task.token.map_or_else(dash, |t| t.to_string()),
            match &task.detail {
                Some(why) => format!("{} ({why})", task.outcome),
                None => task.outcome.to_string(),
            },
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!(
        "run {} of {}: {}{}\n",
        run.run_id,
        run.pipeline,
        run.outcome,
        run.detail
            .as_deref()
            .map(|d| format!(" — {d}"))
            .unwrap_or_default()
    );
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
