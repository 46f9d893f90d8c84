//! Recorded runs drawn as a Gantt chart — text for the terminal, SVG or
//! HTML for a browser — and the check that a lock's holds never overlapped.
//!
//! Each run is a row (a pipeline with parallel branches gets one lane per
//! branch that overlaps); each task is a bar from its command's start to
//! its end, and the time it waited for its lock is drawn before it,
//! hatched (`░` in text). Bars of locked tasks are coloured by lock, so a
//! shared task's bars line up one after another across the rows.
//!
//! The SVG is written directly rather than through `plotters`: every bar
//! carries `data-*` attributes (run, task, lock, times, token) and a
//! `<title>` tooltip, which a plotting backend cannot emit, so the file can
//! be checked by a program and read by a person hovering over it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::record::{Outcome, RunRecord, TaskRunRecord};
use crate::report::{clock, seconds};

/// One command that ran under a lock, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The run.
    pub run_id: i64,
    /// The task.
    pub task: String,
    /// When its command started (ms since the Unix epoch).
    pub start_ms: i64,
    /// When it ended.
    pub end_ms: i64,
    /// Its fencing token.
    pub token: Option<i64>,
}

/// One lock's recorded holds, and whether any two overlapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusivity {
    /// The lock.
    pub lock_name: String,
    /// Each command that ran under the lock, by start.
    pub holds: Vec<Hold>,
    /// Pairs of holds (indices into `holds`) whose times overlap.
    pub overlaps: Vec<(usize, usize)>,
    /// Whether the tokens rise in the order of the holds.
    pub tokens_rise: bool,
}

impl Exclusivity {
    /// No overlap and rising tokens.
    pub fn ok(&self) -> bool {
        self.overlaps.is_empty() && self.tokens_rise
    }
}

/// For each lock in `runs`: its holds (the recorded start and end of each
/// command that ran under it) and the pairs that overlap. A command runs
/// inside its lease, so on a correct lock no two overlap; the clocks of the
/// runners must agree (one host, or synchronised hosts).
pub fn exclusivity(runs: &[RunRecord]) -> Vec<Exclusivity> {
    let mut by_lock: BTreeMap<String, Vec<Hold>> = BTreeMap::new();
    for run in runs {
        for task in &run.tasks {
            if let (Some(lock), Some(start), Some(end)) =
                (&task.lock_name, task.started_at_ms, task.ended_at_ms)
            {
                by_lock.entry(lock.clone()).or_default().push(Hold {
                    run_id: run.run_id,
                    task: task.task.clone(),
                    start_ms: start,
                    end_ms: end,
                    token: task.token,
                });
            }
        }
    }
    by_lock
        .into_iter()
        .map(|(lock_name, mut holds)| {
            holds.sort_by_key(|h| (h.start_ms, h.end_ms));
            let mut overlaps = Vec::new();
            for i in 0..holds.len() {
                for j in i + 1..holds.len() {
                    // Half-open intervals: one may start the ms the other ends.
                    if holds[j].start_ms < holds[i].end_ms && holds[i].start_ms < holds[j].end_ms {
                        overlaps.push((i, j));
                    }
                }
            }
            let tokens: Vec<i64> = holds.iter().filter_map(|h| h.token).collect();
            let tokens_rise = tokens.windows(2).all(|w| w[0] < w[1]);
            Exclusivity {
                lock_name,
                holds,
                overlaps,
                tokens_rise,
            }
        })
        .collect()
}

/// Pairs of tasks of different runs whose commands overlapped, with the
/// overlap in ms: what the lock does *not* serialise.
pub fn concurrent_tasks(runs: &[RunRecord]) -> Vec<(String, String, i64)> {
    let mut found = Vec::new();
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            for ta in &a.tasks {
                for tb in &b.tasks {
                    if let (Some(s1), Some(e1), Some(s2), Some(e2)) = (
                        ta.started_at_ms,
                        ta.ended_at_ms,
                        tb.started_at_ms,
                        tb.ended_at_ms,
                    ) {
                        let overlap = e1.min(e2) - s1.max(s2);
                        if overlap > 0 {
                            found.push((
                                format!("{}#{}", ta.task, a.run_id),
                                format!("{}#{}", tb.task, b.run_id),
                                overlap,
                            ));
                        }
                    }
                }
            }
        }
    }
    found
}

/// The time span of `runs`: earliest recorded time, latest.
fn span(runs: &[RunRecord]) -> (i64, i64) {
    let times = runs.iter().flat_map(|r| {
        r.tasks
            .iter()
            .flat_map(|t| {
                [
                    t.ready_at_ms,
                    t.locked_at_ms,
                    t.started_at_ms,
                    t.ended_at_ms,
                ]
            })
            .flatten()
            .chain([r.started_at_ms])
            .chain(r.ended_at_ms)
    });
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for t in times {
        lo = lo.min(t);
        hi = hi.max(t);
    }
    if lo > hi {
        return (0, 1);
    }
    (lo, hi.max(lo + 1))
}

/// The bar of a task: `(wait start, wait end, run start, run end)`, if it
/// ran; the wait is from ready to locked (empty for an unlocked task).
fn bar(task: &TaskRunRecord) -> Option<(i64, i64, i64, i64)> {
    let start = task.started_at_ms?;
    let end = task.ended_at_ms?;
    let locked = task.locked_at_ms.unwrap_or(start).min(start);
    let wait = task.ready_at_ms.unwrap_or(locked).min(locked);
    Some((wait, locked, start, end))
}

/// Lanes for a run's bars so that none overlap in a lane: `(task index,
/// lane)`.
fn lanes(run: &RunRecord) -> (Vec<(usize, usize)>, usize) {
    let mut ends: Vec<i64> = Vec::new();
    let mut placed = Vec::new();
    let mut order: Vec<(usize, (i64, i64, i64, i64))> = run
        .tasks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| bar(t).map(|b| (i, b)))
        .collect();
    order.sort_by_key(|(_, b)| b.0);
    for (i, (from, _, _, to)) in order {
        let lane = match ends.iter().position(|&end| end <= from) {
            Some(lane) => lane,
            None => {
                ends.push(i64::MIN);
                ends.len() - 1
            }
        };
        ends[lane] = to;
        placed.push((i, lane));
    }
    let count = ends.len().max(1);
    (placed, count)
}

/// The chart as text, `width` columns for the time axis: one line per
/// task, grouped by run; `░` is the lock wait, `█` the command.
pub fn text(runs: &[RunRecord], width: usize) -> String {
    let width = width.max(10);
    let (t0, t1) = span(runs);
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let col = |t: i64| ((t - t0) as f64 / (t1 - t0) as f64 * width as f64).round() as usize;
    let label = runs
        .iter()
        .flat_map(|r| r.tasks.iter().map(|t| t.task.chars().count()))
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:label$}  |{}| {} → {} ({})",
        "",
        "-".repeat(width),
        clock(t0),
        clock(t1),
        seconds(t1 - t0)
    );
    for run in runs {
        let _ = writeln!(
            out,
            "run {} {} [{}] owner {}",
            run.run_id, run.pipeline, run.outcome, run.owner
        );
        for task in &run.tasks {
            let mut cells = vec![' '; width];
            let mut note = task.outcome.to_string();
            if let Some((wait, locked, start, end)) = bar(task) {
                let (w, l, s) = (col(wait), col(locked), col(start));
                let e = col(end).max(s + 1).min(width);
                for c in cells.iter_mut().take(l.min(width)).skip(w) {
                    *c = '░';
                }
                for c in cells.iter_mut().take(e).skip(s.min(width - 1)) {
                    *c = '█';
                }
                note = format!("{} {}", seconds(end - start), task.outcome);
                if let Some(wait_ms) = task.lock_wait_ms().filter(|&w| w > 0) {
                    let _ = write!(note, ", waited {}", seconds(wait_ms));
                }
                if let Some(token) = task.token {
                    let _ = write!(note, ", token {token}");
                }
            }
            let lock = task
                .lock_name
                .as_deref()
                .map(|l| format!(" 🔒{l}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:label$}  |{}| {note}{lock}",
                task.task,
                cells.into_iter().collect::<String>()
            );
        }
    }
    out
}

const PALETTE: &[&str] = &[
    "#d62728", "#9467bd", "#ff7f0e", "#2ca02c", "#8c564b", "#e377c2",
];
const UNLOCKED: &str = "#7f9fbf";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart as a standalone SVG document.
pub fn svg(runs: &[RunRecord]) -> String {
    let (t0, t1) = span(runs);
    let (left, top, plot_w, lane_h, gap) = (170.0_f64, 40.0_f64, 900.0_f64, 26.0_f64, 14.0_f64);
    #[allow(clippy::cast_precision_loss)]
    let x = |t: i64| left + (t - t0) as f64 / (t1 - t0) as f64 * plot_w;
    let mut colours: BTreeMap<&str, &str> = BTreeMap::new();
    for run in runs {
        for task in &run.tasks {
            if let Some(lock) = task.lock_name.as_deref() {
                let next = PALETTE[colours.len() % PALETTE.len()];
                colours.entry(lock).or_insert(next);
            }
        }
    }
    let layout: Vec<(Vec<(usize, usize)>, usize)> = runs.iter().map(lanes).collect();
    #[allow(clippy::cast_precision_loss)]
    let height = top
        + layout
            .iter()
            .map(|(_, n)| *n as f64 * lane_h + gap)
            .sum::<f64>()
        + 60.0;
    let width = left + plot_w + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    out.push_str(
        r##"<defs><pattern id="wait" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#eeeeee"/><line x1="0" y1="0" x2="0" y2="6" stroke="#999999" stroke-width="3"/></pattern></defs>
<rect width="100%" height="100%" fill="white"/>
"##,
    );
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="20" font-size="14">lockkit runs {} → {} ({})</text>"#,
        clock(t0),
        clock(t1),
        seconds(t1 - t0)
    );
    let mut y = top;
    for (run, (placed, lane_count)) in runs.iter().zip(&layout) {
        #[allow(clippy::cast_precision_loss)]
        let row_h = *lane_count as f64 * lane_h;
        let _ = writeln!(
            out,
            r#"<g class="run" data-run="{}" data-pipeline="{}"><text x="8" y="{:.1}">{} · run {} ({})</text>"#,
            run.run_id,
            escape(&run.pipeline),
            y + row_h / 2.0 + 4.0,
            escape(&run.pipeline),
            run.run_id,
            run.outcome
        );
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#dddddd"/>"##,
            y + row_h + gap / 2.0,
            left + plot_w,
            y + row_h + gap / 2.0
        );
        for &(i, lane) in placed {
            let task = &run.tasks[i];
            let Some((wait, locked, start, end)) = bar(task) else {
                continue;
            };
            #[allow(clippy::cast_precision_loss)]
            let by = y + lane as f64 * lane_h + 3.0;
            let bh = lane_h - 6.0;
            let lock = task.lock_name.as_deref().unwrap_or("");
            let fill = colours.get(lock).copied().unwrap_or(UNLOCKED);
            let stroke = if task.outcome == Outcome::Succeeded {
                "none"
            } else {
                "black"
            };
            if locked > wait {
                let _ = writeln!(
                    out,
                    r#"<rect class="wait" data-run="{}" data-task="{}" data-lock="{}" data-start-ms="{wait}" data-end-ms="{locked}" x="{:.2}" y="{by:.1}" width="{:.2}" height="{bh:.1}" fill="url(#wait)"><title>{} waited {} for lock {}</title></rect>"#,
                    run.run_id,
                    escape(&task.task),
                    escape(lock),
                    x(wait),
                    (x(locked) - x(wait)).max(0.5),
                    escape(&task.task),
                    seconds(locked - wait),
                    escape(lock)
                );
            }
            let token = task.token.map(|t| t.to_string()).unwrap_or_default();
            let _ = writeln!(
                out,
                r#"<rect class="task" data-run="{}" data-task="{}" data-lock="{}" data-start-ms="{start}" data-end-ms="{end}" data-token="{token}" data-outcome="{}" x="{:.2}" y="{by:.1}" width="{:.2}" height="{bh:.1}" fill="{fill}" stroke="{stroke}"><title>{} ({}) {} → {} ({}){}{}</title></rect>"#,
                run.run_id,
                escape(&task.task),
                escape(lock),
                task.outcome,
                x(start),
                (x(end) - x(start)).max(1.0),
                escape(&task.task),
                task.outcome,
                clock(start),
                clock(end),
                seconds(end - start),
                if lock.is_empty() {
                    String::new()
                } else {
                    format!(", lock {}", escape(lock))
                },
                if token.is_empty() {
                    String::new()
                } else {
                    format!(", token {token}")
                },
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.2}" y="{:.1}" fill="white" font-size="11" pointer-events="none">{}</text>"#,
                x(start) + 3.0,
                by + bh / 2.0 + 4.0,
                escape(&task.task)
            );
        }
        out.push_str("</g>\n");
        y += row_h + gap;
    }
    // The time axis, in seconds from the first recorded time.
    let _ = writeln!(
        out,
        r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#333333"/>"##,
        left + plot_w
    );
    let total = t1 - t0;
    let step = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 3_600_000,
    ]
    .into_iter()
    .find(|s| total / s <= 12)
    .unwrap_or(3_600_000);
    let mut t = 0;
    while t <= total {
        let _ = writeln!(
            out,
            r##"<line x1="{:.2}" y1="{y:.1}" x2="{:.2}" y2="{:.1}" stroke="#333333"/><text x="{:.2}" y="{:.1}" text-anchor="middle">{}</text>"##,
            x(t0 + t),
            x(t0 + t),
            y + 5.0,
            x(t0 + t),
            y + 18.0,
            axis_label(t)
        );
        t += step;
    }
    // The legend.
    let mut lx = left;
    let ly = y + 36.0;
    for (lock, colour) in &colours {
        let _ = writeln!(
            out,
            r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="10" fill="{colour}"/><text x="{:.1}" y="{ly:.1}">lock {}</text>"#,
            ly - 9.0,
            lx + 18.0,
            escape(lock)
        );
        #[allow(clippy::cast_precision_loss)]
        let label = (5 + lock.chars().count()) as f64;
        lx += 30.0 + 7.5 * label;
    }
    let _ = writeln!(
        out,
        r#"<rect x="{lx:.1}" y="{:.1}" width="14" height="10" fill="{UNLOCKED}"/><text x="{:.1}" y="{ly:.1}">no lock</text><rect x="{:.1}" y="{:.1}" width="14" height="10" fill="url(#wait)"/><text x="{:.1}" y="{ly:.1}">waiting for the lock</text>"#,
        ly - 9.0,
        lx + 18.0,
        lx + 80.0,
        ly - 9.0,
        lx + 98.0
    );
    out.push_str("</svg>\n");
    out
}

/// `1.5s`, `2s`, `1m`: a tick of the time axis.
fn axis_label(ms: i64) -> String {
    if ms >= 60_000 && ms % 60_000 == 0 {
        return format!("{}m", ms / 60_000);
    }
    #[allow(clippy::cast_precision_loss)]
    let secs = ms as f64 / 1000.0;
    format!("{secs}s")
}

/// The chart in an HTML page, with a table of the runs' tasks.
pub fn html(runs: &[RunRecord]) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>lockkit timeline</title>\n<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}</style></head><body>\n<h1>lockkit timeline</h1>\n",
    );
    out.push_str(&svg(runs));
    out.push_str("<table><tr><th>run</th><th>pipeline</th><th>task</th><th>lock</th><th>start</th><th>end</th><th>lock wait</th><th>token</th><th>outcome</th></tr>\n");
    for run in runs {
        for task in &run.tasks {
            let dash = || "-".to_owned();
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                run.run_id,
                escape(&run.pipeline),
                escape(&task.task),
                escape(task.lock_name.as_deref().unwrap_or("-")),
                task.started_at_ms.map_or_else(dash, clock),
                task.ended_at_ms.map_or_else(dash, clock),
                task.lock_wait_ms().map_or_else(dash, seconds),
                task.token.map_or_else(dash, |t| t.to_string()),
                escape(&match &task.detail {
                    Some(d) => format!("{} ({d})", task.outcome),
                    None => task.outcome.to_string(),
                }),
            );
        }
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn task(
        name: &str,
        lock: Option<&str>,
        times: (i64, i64, i64),
        token: Option<i64>,
    ) -> TaskRunRecord {
        let mut t = TaskRunRecord::pending(name, 0, lock.map(str::to_owned));
        t.ready_at_ms = Some(times.0);
        t.locked_at_ms = lock.map(|_| times.1);
        t.started_at_ms = Some(times.1);
        t.ended_at_ms = Some(times.2);
        t.token = token;
        t.outcome = Outcome::Succeeded;
        t
    }

    fn run(id: i64, pipeline: &str, tasks: Vec<TaskRunRecord>) -> RunRecord {
        RunRecord {
            run_id: id,
            pipeline: pipeline.into(),
            owner: format!("{pipeline}:run-{id}"),
            started_at_ms: 0,
            ended_at_ms: Some(10_000),
            outcome: Outcome::Succeeded,
            detail: None,
            tasks,
        }
    }

    fn demo(b2: (i64, i64, i64)) -> Vec<RunRecord> {
        vec![
            run(
                1,
                "DAG1",
                vec![
                    task("A", None, (0, 0, 1_000), None),
                    task("B", Some("B"), (1_000, 1_000, 3_000), Some(1)),
                    task("C", None, (3_000, 3_000, 4_000), None),
                ],
            ),
            run(
                2,
                "DAG2",
                vec![
                    task("D", None, (0, 0, 1_500), None),
                    task("B", Some("B"), b2, Some(2)),
                    task("E", None, (b2.2, b2.2, b2.2 + 1_000), None),
                ],
            ),
        ]
    }

    #[test]
    fn holds_that_follow_each_other_are_exclusive() {
        let runs = demo((1_500, 3_000, 5_000));
        let found = exclusivity(&runs);
        assert_eq!(found.len(), 1);
        assert!(found[0].ok(), "{found:?}");
        assert_eq!(found[0].holds.len(), 2);
        let concurrent = concurrent_tasks(&runs);
        assert!(
            concurrent.contains(&("A#1".into(), "D#2".into(), 1_000)),
            "{concurrent:?}"
        );
    }

    #[test]
    fn an_overlap_or_a_falling_token_is_found() {
        let runs = demo((1_500, 2_500, 4_500));
        let found = exclusivity(&runs);
        assert_eq!(found[0].overlaps, [(0, 1)]);
        assert!(!found[0].ok());
        let mut runs = demo((1_500, 3_000, 5_000));
        runs[1].tasks[1].token = Some(0);
        assert!(!exclusivity(&runs)[0].tokens_rise);
    }

    #[test]
    fn the_svg_has_a_bar_per_task_and_the_wait_apart() {
        let svg = svg(&demo((1_500, 3_000, 5_000)));
        assert_eq!(svg.matches(r#"<rect class="task""#).count(), 6);
        assert_eq!(svg.matches(r#"<rect class="wait""#).count(), 1);
        assert!(
            svg.contains(r#"data-task="B" data-lock="B" data-start-ms="1500" data-end-ms="3000""#)
        );
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        let text = text(&demo((1_500, 3_000, 5_000)), 60);
        assert!(text.contains('░') && text.contains('█'), "{text}");
        assert!(text.contains("waited 1.500s, token 2"), "{text}");
    }
}
