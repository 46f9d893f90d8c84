//! SQLite leases do not depend on any process's wall clock.
//!
//! Holder processes run under `faketime` an hour behind or ahead (their
//! monotonic clock is left alone, as an NTP-stepped or misconfigured host
//! would have it); a normal process contends. Exclusion must hold while the
//! lease is live, and a crashed holder must free the lock after its TTL
//! plus the backend's slack — not an hour early or an hour late.
//!
//! Assertions are on recorded instants: the holder's grant happened after
//! `spawned` and before `granted_by` (when its report was read), so its row
//! expires between `spawned + ttl` and `granted_by + ttl` (+ slack).

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockkit_core::conformance::{Harness, unique_name};
use lockkit_core::spi::AcquireRequest;
use lockkit_core::{LockBackend, LockName};
use lockkit_tests::server::require_binary;
use lockkit_tests::sqlite::SqliteHarness;
use tokio::time::Instant;

/// A holder process under `faketime -f <offset>`, and its report.
struct SkewedHolder {
    child: Child,
    /// Before the process was started.
    spawned: Instant,
    /// When its "token=" line was read (the grant happened before).
    granted_by: Instant,
}

impl Drop for SkewedHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_holder(url: &str, name: &LockName, ttl: Duration, offset: &str) -> SkewedHolder {
    let faketime = require_binary("faketime", &[], "apt-get install -y faketime");
    let spawned = Instant::now();
    let mut child = Command::new(faketime)
        .args(["-f", offset])
        .arg(env!("CARGO_BIN_EXE_skewed_holder"))
        .args([url, name.as_str(), &ttl.as_millis().to_string()])
        // Only the wall clock is skewed, as on a host whose clock is off.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the skewed holder");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let wall_ms = report(&mut lines, "wall_ms=");
    let real_ms = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("epoch")
            .as_millis(),
    )
    .expect("fits");
    let skew_ms = wall_ms - real_ms;
    assert!(
        skew_ms.abs() > 3_000_000
            && skew_ms.signum() == if offset.starts_with('-') { -1 } else { 1 },
        "faketime must move the holder's wall clock by {offset} (it is {skew_ms} ms off)"
    );
    report(&mut lines, "token=");
    SkewedHolder {
        child,
        spawned,
        granted_by: Instant::now(),
    }
}

fn report(lines: &mut Lines<BufReader<ChildStdout>>, key: &str) -> i64 {
    lines
        .next()
        .and_then(|l| l.ok())
        .and_then(|l| l.strip_prefix(key).map(str::to_owned))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the holder reports `{key}…` (did it get the lock?)"))
}

fn request(name: &LockName, owner: &str, ttl: Duration) -> AcquireRequest {
    AcquireRequest::new(name.clone(), owner, ttl).expect("request")
}

/// Tries `name` until shortly before the holder's lease can have expired;
/// every try sent before then must be refused. Returns how many were sent.
async fn must_stay_held(contender: &dyn LockBackend, name: &LockName, held_until: Instant) -> u32 {
    let mut tries = 0;
    loop {
        let sent = Instant::now();
        if sent + Duration::from_millis(100) >= held_until {
            return tries;
        }
        let got = contender
            .try_acquire(&request(name, "contender", Duration::from_secs(30)))
            .await
            .expect("try");
        if let Some(lease) = got {
            panic!(
                "two holders: the contender got {lease:?} {:?} before the skewed holder's lease could expire",
                held_until - sent
            );
        }
        tries += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn holder_with_skew_keeps_exclusion(offset: &str) {
    let harness = SqliteHarness::start().await;
    let timing = harness.timing().await;
    let name = unique_name("skew");
    let ttl = Duration::from_secs(6);
    let holder = start_holder(harness.url(), &name, ttl, offset);
    let contender = harness.client().await;
    let tries = must_stay_held(&*contender, &name, holder.spawned + ttl).await;
    assert!(tries > 0, "the contender tried while the lease was live");
    let lease = contender
        .acquire(
            &request(&name, "contender", Duration::from_secs(30)),
            Some(holder.granted_by + ttl + timing.expiry_slack + timing.wake_latency),
        )
        .await
        .expect("free once the TTL has passed, by the host's clock");
    assert!(
        Instant::now() >= holder.spawned + ttl,
        "freed before its TTL"
    );
    assert!(contender.release(&lease).await.expect("release"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_an_hour_behind_keeps_exclusion() {
    holder_with_skew_keeps_exclusion("-1h").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_an_hour_ahead_keeps_exclusion() {
    holder_with_skew_keeps_exclusion("+1h").await;
}

/// A holder an hour ahead dies without releasing: the lock is free after
/// its TTL plus slack, not an hour later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_holder_an_hour_ahead_frees_after_ttl() {
    let harness = SqliteHarness::start().await;
    let timing = harness.timing().await;
    let name = unique_name("skew-crash");
    let ttl = Duration::from_secs(3);
    let mut holder = start_holder(harness.url(), &name, ttl, "+1h");
    holder.child.kill().expect("SIGKILL the holder");
    holder.child.wait().expect("reap");
    let contender = harness.client().await;
    let bound = holder.granted_by + ttl + timing.expiry_slack + timing.wake_latency;
    let lease = contender
        .acquire(
            &request(&name, "contender", Duration::from_secs(30)),
            Some(bound),
        )
        .await
        .unwrap_or_else(|e| panic!("the crashed holder must not block beyond TTL + slack: {e}"));
    assert!(Instant::now() >= holder.spawned + ttl, "not before its TTL");
    assert!(contender.release(&lease).await.expect("release"));
}
