//! The host's boot clock: what SQLite rows expire by.
//!
//! SQLite runs inside each client process, so "the database's clock" would
//! be every process's own wall clock — one that may be an hour off, or be
//! stepped by NTP while a lease is held. Every process on one host shares
//! the kernel's `CLOCK_BOOTTIME` instead: it starts at boot, never jumps
//! with wall-clock changes, and (unlike `CLOCK_MONOTONIC`) keeps counting
//! while the host is suspended. A reading means something only together
//! with the boot it belongs to, so rows carry the kernel's boot id
//! (`/proc/sys/kernel/random/boot_id`), and a row from another boot counts
//! as expired.
//!
//! Limits (also in the [`sqlite`](crate::sqlite) docs):
//! - one host only — a database file on a network share seen by two hosts
//!   compares two unrelated boot clocks (SQLite over NFS is unsafe anyway);
//! - processes in a Linux time namespace with a `boottime` offset see a
//!   shifted clock; give them the host's namespace;
//! - on systems other than Linux and Android the wall clock is used, with
//!   the weakness above.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockkit_core::{Error, Result};

/// One reading of the host clock, with the wall clock read at the same
/// moment (for showing times to people).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    /// Milliseconds on the boot clock.
    pub(crate) now_ms: i64,
    /// Milliseconds since the Unix epoch by this process's wall clock.
    pub(crate) wall_ms: i64,
}

/// Reads the boot clock and the wall clock.
pub(crate) fn read() -> Reading {
    Reading {
        now_ms: boot_ms(),
        wall_ms: wall_ms(),
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The identity of the clock readings: the kernel's boot id, read once.
///
/// # Errors
/// [`Error::Configuration`] when the boot id cannot be read (no `/proc`).
pub(crate) fn boot_id() -> Result<&'static str> {
    static BOOT_ID: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    BOOT_ID
        .get_or_init(read_boot_id)
        .as_deref()
        .map_err(|why| Error::configuration(why.clone()))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_boot_id() -> std::result::Result<String, String> {
    let id = std::fs::read_to_string(BOOT_ID_FILE).map_err(|e| {
        format!(
            "SQLite leases expire by the host's boot clock, but the boot id in {BOOT_ID_FILE} cannot be read: {e}"
        )
    })?;
    let id = id.trim();
    if id.is_empty() {
        return Err(format!("{BOOT_ID_FILE} is empty"));
    }
    Ok(id.to_owned())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn boot_ms() -> i64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let since_boot = Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    );
    i64::try_from(since_boot.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn read_boot_id() -> std::result::Result<String, String> {
    Ok("wall-clock".to_owned())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn boot_ms() -> i64 {
    let _ = Duration::ZERO;
    wall_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_advances_and_has_an_identity() {
        let id = boot_id().expect("boot id");
        assert!(!id.is_empty());
        let a = read();
        std::thread::sleep(Duration::from_millis(20));
        let b = read();
        assert!(b.now_ms >= a.now_ms + 15, "{a:?} → {b:?}");
        assert!(a.now_ms > 0);
    }
}
