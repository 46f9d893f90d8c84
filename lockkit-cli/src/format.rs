//! How the commands print locks: a table for people, JSON for programs.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use lockkit::LockInfo;
use serde::Serialize;

/// A duration for people: `1h 2m`, `3m 4s`, `5.2s`, `80ms`.
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h {}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m {}s", secs / 60, secs % 60)
    } else if secs >= 1 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// One lock as `status --json` and `inspect --json` print it.
#[derive(Debug, Serialize)]
pub struct LockView {
    pub name: String,
    pub owner: String,
    pub lease_id: String,
    pub token: u64,
    /// The permit count the holder asked with (1 for a lock).
    pub permits: u32,
    /// How many of the name's permits are held (1 for a held lock).
    pub permits_used: usize,
    /// RFC 3339, by the backend's clock.
    pub acquired_at: String,
    pub held_for_seconds: f64,
    /// RFC 3339; `null` for session-bound leases (etcd, ZooKeeper).
    pub expires_at: Option<String>,
    pub expires_in_seconds: Option<f64>,
}

impl LockView {
    /// The view of `info`, one of `permits_used` live holders of its name.
    pub fn new(info: &LockInfo, permits_used: usize, now: SystemTime) -> Self {
        Self {
            permits: info.permits,
            permits_used,
            name: info.name.to_string(),
            owner: info.owner.clone(),
            lease_id: info.lease_id.as_str().to_owned(),
            token: info.token.get(),
            acquired_at: humantime::format_rfc3339_millis(info.acquired_at).to_string(),
            held_for_seconds: now
                .duration_since(info.acquired_at)
                .unwrap_or_default()
                .as_secs_f64(),
            expires_at: info
                .expires_at
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            expires_in_seconds: info
                .expires_at
                .map(|t| t.duration_since(now).unwrap_or_default().as_secs_f64()),
        }
    }

    /// Whether it expires within `soon` unless renewed.
    pub fn expires_within(&self, soon: Duration) -> bool {
        self.expires_in_seconds
            .is_some_and(|s| s <= soon.as_secs_f64())
    }
}

/// The views of `held` (records from `list()`), each with how many
/// permits of its name are held, sorted by name, then token.
pub fn views<'a>(held: impl IntoIterator<Item = &'a LockInfo>, now: SystemTime) -> Vec<LockView> {
    let held: Vec<&LockInfo> = held.into_iter().collect();
    let used = |info: &LockInfo| held.iter().filter(|i| i.name == info.name).count();
    let mut views: Vec<LockView> = held
        .iter()
        .map(|info| LockView::new(info, used(info), now))
        .collect();
    views.sort_by(|a, b| a.name.cmp(&b.name).then(a.token.cmp(&b.token)));
    views
}

/// The `status` table; rows expiring within `soon` are marked (in colour
/// on a terminal, with a `!` otherwise).
pub fn table(locks: &[LockView], soon: Duration, colour: bool) -> String {
    let headers = [
        "NAME",
        "PERMITS",
        "OWNER",
        "TOKEN",
        "HELD FOR",
        "EXPIRES IN",
    ];
    let rows: Vec<[String; 6]> = locks
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                format!("{}/{}", l.permits_used, l.permits),
                l.owner.clone(),
                l.token.to_string(),
                human(Duration::from_secs_f64(l.held_for_seconds)),
                l.expires_in_seconds.map_or_else(
                    || "with its session".to_owned(),
                    |s| human(Duration::from_secs_f64(s)),
                ),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String], mark: &str| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{cell:<w$}");
        }
        let _ = writeln!(out, "{}{mark}", text.trim_end());
    };
    line(&mut out, &headers.map(str::to_owned), "");
    for (view, row) in locks.iter().zip(&rows) {
        if view.expires_within(soon) {
            if colour {
                out.push_str("\x1b[1;31m");
                line(&mut out, row, "\x1b[0m");
            } else {
                line(&mut out, row, "  ! expires soon");
            }
        } else {
            line(&mut out, row, "");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_millis(80)), "80ms");
        assert_eq!(human(Duration::from_millis(5200)), "5.2s");
        assert_eq!(human(Duration::from_secs(184)), "3m 4s");
        assert_eq!(human(Duration::from_secs(3720)), "1h 2m");
    }
}
