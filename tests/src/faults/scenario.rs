//! The faults, each a plain `pub async fn` over a [`Target`] that returns
//! the [`Outcome`] it observed. The per-backend suites
//! (`tests/tests/faults_*.rs`) provide the targets and server controls and
//! hand the outcome to [`record`](super::report::record).
//!
//! Every scenario drives separate taker processes, so the faults hit real
//! OS processes: stopped, killed, skewed, cut off. Waits are for reported
//! events, never fixed sleeps, except where the property itself is about
//! time (a probe sent after TTL + slack must find the lock free).

use std::sync::Arc;
use std::time::Duration;

use lockkit_core::{LockBackend, LockName};
use nix::sys::signal::Signal;

use super::event::{Event, Kind, mono_ns};
use super::history::{HistoryCheck, check};
use super::report::Outcome;
use super::store::FencedStore;
use super::taker::{History, Taker, granted, ms_between};
use crate::proxy::FaultProxy;
use crate::server::random_suffix;

/// The lease TTL of every scenario: long enough that renewals (every
/// TTL/3) keep up on a loaded 2-core machine, short enough for CI.
pub const TTL: Duration = Duration::from_secs(3);

/// A generous bound for one step that involves a server round trip.
pub const STEP: Duration = Duration::from_secs(60);

/// Whether the soak variants run (`LOCKKIT_FAULT_SOAK=1`): more rounds and
/// processes.
pub fn soak() -> bool {
    std::env::var("LOCKKIT_FAULT_SOAK").is_ok_and(|v| v == "1")
}

/// What a scenario runs against.
#[derive(Debug, Clone)]
pub struct Target {
    /// The report's backend key.
    pub backend: &'static str,
    /// The lockkit URL the takers use.
    pub url: String,
    /// The backend's `expiry_slack` (its capabilities).
    pub slack: Duration,
    /// The taker binary (`env!("CARGO_BIN_EXE_taker")`).
    pub taker: &'static str,
}

/// A target behind a [`FaultProxy`]: `proxied_url` reaches the server
/// through it.
#[derive(Debug)]
pub struct Proxied {
    /// The direct target (competitors and the inspector use it).
    pub target: Target,
    /// The same server through the proxy.
    pub proxied_url: String,
    /// The proxy.
    pub proxy: FaultProxy,
}

/// Start, pause, kill and restart a server, for the server faults.
pub trait ServerControl: Send {
    /// Sends SIGSTOP.
    fn pause(&mut self);
    /// Sends SIGCONT.
    fn resume(&mut self);
    /// SIGKILL, then a restart on the same data directory and port; returns
    /// when the server serves again.
    fn kill_and_restart(&mut self);
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// A lock name unique to one run of one scenario.
pub fn lock_name(fault: &str) -> String {
    format!("fault/{fault}/{}", &random_suffix()[..8])
}

/// A taker's `acquire` command line.
fn acquire_cmd(lock: &str, wait: Duration) -> String {
    format!("acquire {lock} {} {}", ms(TTL), ms(wait))
}

/// Adds the history check's violations and grant count to `outcome`.
fn judge(outcome: &mut Outcome, history: &History) -> HistoryCheck {
    let result = check(&history.events());
    if !result.overlaps.is_empty() {
        outcome.violated(format!(
            "{} overlapping claims: {}",
            result.overlaps.len(),
            result.describe()
        ));
    }
    if !result.token_regressions.is_empty() {
        outcome.violated(format!(
            "tokens did not rise in grant order: {}",
            result.describe()
        ));
    }
    outcome.figure("grants", result.claims.len());
    result
}

/// Accepted store writes that came from a lease after another lease's
/// write had been accepted in between (an interleaving the fence exists to
/// prevent).
fn interleaved_writes(store: &FencedStore) -> usize {
    let mut seen: Vec<String> = Vec::new();
    let mut interleaved = 0;
    for op in store.ops().into_iter().filter(|op| op.accepted) {
        if seen.last() != Some(&op.lease) {
            if seen.contains(&op.lease) {
                interleaved += 1;
            }
            seen.push(op.lease.clone());
        }
    }
    interleaved
}

fn is_ok(event: &Event) -> bool {
    event.ev == Kind::Ok
}

/// 1. The holder is stopped past its TTL, a competitor is granted and
///    writes, the holder resumes and sends its write: its guard must know
///    the lease is lost before it acts, and the fenced store must refuse
///    the write.
pub async fn holder_paused(t: &Target) -> Outcome {
    let mut outcome = Outcome::new(t.backend, "holder-paused");
    let history = History::default();
    let store = FencedStore::start().await;
    let lock = lock_name("paused");
    let mut a = Taker::spawn(t.taker, &t.url, "a", &history).await;
    let mut b = Taker::spawn(t.taker, &t.url, "b", &history).await;
    let granted_a = a.call(&acquire_cmd(&lock, STEP), "acquire", STEP).await;
    assert!(granted(&granted_a), "a was not granted: {granted_a:?}");
    let w = a
        .call(&format!("write {} 1", store.addr()), "write", STEP)
        .await;
    assert!(is_ok(&w), "a's first write: {w:?}");

    let stopped = a.signal(Signal::SIGSTOP);
    let granted_b = b.call(&acquire_cmd(&lock, STEP), "acquire", STEP * 2).await;
    outcome.require(
        granted(&granted_b),
        format!("b was not granted while a was stopped: {granted_b:?}"),
    );
    let w = b
        .call(&format!("write {} 2", store.addr()), "write", STEP)
        .await;
    outcome.require(is_ok(&w), format!("b's write was refused: {w:?}"));
    let resumed = a.signal(Signal::SIGCONT);

    let mark = history.len();
    let late = a
        .call(&format!("write {} 3", store.addr()), "write", STEP)
        .await;
    let believed = history
        .events()
        .into_iter()
        .skip(mark)
        .find(|e| e.proc == "a" && e.is(Kind::Invoke, "write"))
        .and_then(|e| e.held);
    outcome.require(
        believed == Some(false),
        format!("a's guard still believed it held the lock after resuming (held = {believed:?})"),
    );
    outcome.require(
        late.ev == Kind::Fail,
        format!("the fenced store accepted a's late write: {late:?}"),
    );
    let lost = a.lost(0, STEP).await;
    outcome.require(
        store.value() == 2,
        format!("store value {} after the late write", store.value()),
    );
    outcome.require(
        interleaved_writes(&store) == 0,
        "interleaved writes were accepted",
    );
    judge(&mut outcome, &history);
    outcome
        .ms("stopped_ms", ms_between(stopped, resumed))
        .ms(
            "competitor_granted_after_ms",
            ms_between(stopped, granted_b.t),
        )
        .ms("loss_reported_after_resume_ms", ms_between(resumed, lost.t))
        .figure(
            "late_write",
            late.error.unwrap_or_else(|| "accepted".into()),
        );
    let _ = b.call("release", "release", STEP).await;
    outcome
}

/// 5. The holder is killed (SIGKILL): any `try` sent after TTL + the
///    backend's expiry slack must find the lock free.
pub async fn holder_killed(t: &Target) -> Outcome {
    let mut outcome = Outcome::new(t.backend, "holder-killed");
    let history = History::default();
    let lock = lock_name("killed");
    let mut a = Taker::spawn(t.taker, &t.url, "a", &history).await;
    let mut b = Taker::spawn(t.taker, &t.url, "b", &history).await;
    let g = a.call(&acquire_cmd(&lock, STEP), "acquire", STEP).await;
    assert!(granted(&g), "a was not granted: {g:?}");
    let killed = a.kill().await;
    let free_by = killed + (TTL + t.slack).as_nanos() as u64;
    // Probe from half the TTL on, every 100 ms, until a probe succeeds.
    tokio::time::sleep(TTL / 2).await;
    let give_up = free_by + STEP.as_nanos() as u64;
    let free_at = loop {
        let mark = b.send(&format!("try {lock} {}", ms(TTL))).await;
        let done = b.completion(mark, "try", STEP).await;
        let invoked = history
            .events()
            .into_iter()
            .skip(mark)
            .find(|e| e.proc == "b" && e.is(Kind::Invoke, "try"))
            .map_or(done.t, |e| e.t);
        if granted(&done) {
            break Some(invoked);
        }
        if invoked > free_by {
            outcome.violated(format!(
                "a try sent {:.0} ms after the kill (TTL + slack = {} ms) found the lock busy: {done:?}",
                ms_between(killed, invoked),
                ms(TTL + t.slack)
            ));
            break None;
        }
        if mono_ns() > give_up {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if let Some(at) = free_at {
        outcome.ms("free_after_kill_ms", ms_between(killed, at));
    }
    outcome
        .figure("ttl_ms", ms(TTL))
        .figure("slack_ms", ms(t.slack));
    judge(&mut outcome, &history);
    let _ = b.call("release", "release", STEP).await;
    outcome
}

/// Wall-clock jumps: holders whose clock is an hour behind and an hour
/// ahead (faketime; the monotonic clock is left alone). While such a
/// holder holds, a competitor's `try` must find the lock busy; after the
/// holder is killed, the lock must be free after TTL + slack (not an hour).
pub async fn clock_jump(t: &Target) -> Outcome {
    let mut outcome = Outcome::new(t.backend, "clock-jump");
    let library = faketime_library();
    let history = History::default();
    let mut b = Taker::spawn(t.taker, &t.url, "b", &history).await;
    for skew in ["-1h", "+1h"] {
        let lock = lock_name("clock");
        let name = format!("skewed{skew}");
        // The library itself, not the `faketime` wrapper: the wrapper forks,
        // and killing it would leave the holder running.
        let mut a = Taker::spawn_with(
            t.taker,
            &t.url,
            &name,
            &history,
            None,
            &[
                ("LD_PRELOAD", library.as_str()),
                ("FAKETIME", skew),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ("FAKETIME_NO_CACHE", "1"),
            ],
        )
        .await;
        let wall = history
            .events()
            .into_iter()
            .find(|e| e.proc == name && e.ev == Kind::Ready)
            .and_then(|e| e.value)
            .unwrap_or(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let skew_s = i64::try_from(wall).unwrap_or(0) - i64::try_from(now).unwrap_or(0);
        assert!(
            (3500..3700).contains(&skew_s.abs()),
            "faketime did not move {name}'s wall clock ({skew_s} s off)"
        );
        outcome.figure(&format!("holder_wall_clock_offset_s{skew}"), skew_s);
        let g = a.call(&acquire_cmd(&lock, STEP), "acquire", STEP).await;
        assert!(granted(&g), "{name} was not granted: {g:?}");
        let probe = b
            .call(&format!("try {lock} {}", ms(TTL)), "try", STEP)
            .await;
        if granted(&probe) {
            outcome.violated(format!(
                "with a holder at {skew}, a competitor was granted at once"
            ));
            let _ = b.call("release", "release", STEP).await;
        }
        let killed = a.kill().await;
        tokio::time::sleep(TTL + t.slack).await;
        let probe = b.call(&acquire_cmd(&lock, STEP), "acquire", STEP * 2).await;
        outcome.require(
            granted(&probe),
            format!("after the {skew} holder died the lock stayed busy"),
        );
        outcome.ms(
            &format!("free_after_kill_ms{skew}"),
            ms_between(killed, probe.t),
        );
        let _ = b.call("release", "release", STEP).await;
    }
    judge(&mut outcome, &history);
    outcome
}

/// The multi-threaded libfaketime library of the Debian `faketime`
/// package.
///
/// # Panics
/// When it is not installed (with the package to install).
fn faketime_library() -> String {
    crate::server::require_binary(
        "libfaketimeMT.so.1",
        &[
            "/usr/lib/x86_64-linux-gnu/faketime",
            "/usr/lib/aarch64-linux-gnu/faketime",
            "/usr/lib/faketime",
        ],
        "apt-get install -y faketime",
    )
    .to_string_lossy()
    .into_owned()
}

/// The lost-update counter: three processes (six in the soak variant)
/// increment a fenced counter under the lock, sleeping at random between
/// read and write; one stops itself inside its critical section, a fourth
/// process takes the lock (after the TTL) and increments, and the stopped
/// one is resumed. The final value must equal the number of accepted
/// writes, the paused process's write must be refused, and the history
/// must fit the mutex model.
pub async fn contended_counter(t: &Target) -> Outcome {
    let mut outcome = Outcome::new(t.backend, "contended-counter");
    let history = History::default();
    let store = FencedStore::start().await;
    let lock = lock_name("counter");
    let (procs, rounds) = if soak() { (6, 40) } else { (3, 6) };
    let mut takers = Vec::new();
    for i in 0..procs {
        takers.push(Taker::spawn(t.taker, &t.url, &format!("c{i}"), &history).await);
    }
    let mut d = Taker::spawn(t.taker, &t.url, "d", &history).await;
    let wait = STEP * 4;
    let command = format!(
        "counter {lock} {} {} {rounds} {} 30",
        ms(TTL),
        ms(wait),
        store.addr()
    );
    let mut marks = Vec::new();
    for (i, taker) in takers.iter_mut().enumerate() {
        // c0 stops itself between the read and the write of its second
        // round: inside its critical section.
        let stop = if i == 0 { " 2" } else { "" };
        marks.push(taker.send(&format!("{command}{stop}")).await);
    }
    let stop = history
        .wait_for("c0 stops itself", 0, wait, |e| {
            e.proc == "c0" && e.is(Kind::Invoke, "self-stop")
        })
        .await;
    let stopped = stop.t;
    // The others may have finished their rounds by now (waiters that poll
    // can starve): one more round by a fresh process `d` makes sure the
    // lock is taken, and the store touched, while c0 is stopped.
    let d_mark = d
        .send(&format!(
            "counter {lock} {} {} 1 {} 30",
            ms(TTL),
            ms(wait),
            store.addr()
        ))
        .await;
    let d_done = d.completion(d_mark, "counter", wait).await;
    assert!(is_ok(&d_done), "d did not finish: {d_done:?}");
    let other_grant = history
        .wait_for("d's grant", d_mark, wait, |e| e.proc == "d" && granted(e))
        .await;
    let resumed = takers[0].signal(Signal::SIGCONT);
    for (taker, mark) in takers.iter().zip(marks) {
        let done = taker.completion(mark, "counter", wait * 2).await;
        assert!(is_ok(&done), "{} did not finish: {done:?}", taker.name);
    }
    let refused_after_resume = store
        .ops()
        .iter()
        .filter(|op| op.proc == "c0" && op.t > resumed && op.write && !op.accepted)
        .count();
    outcome.require(
        refused_after_resume >= 1,
        format!(
            "c0's write after the pause (token {}) was not refused",
            stop.token_text()
        ),
    );
    let accepted = store.accepted_writes();
    outcome.require(
        store.value() == accepted as u64,
        format!(
            "lost update: the counter is {} after {accepted} accepted increments",
            store.value()
        ),
    );
    outcome.require(
        interleaved_writes(&store) == 0,
        "interleaved writes were accepted",
    );
    judge(&mut outcome, &history);
    outcome
        .figure("processes", procs + 1)
        .figure("accepted_increments", accepted)
        .figure("final_value", store.value())
        .figure(
            "refused_writes",
            store
                .ops()
                .iter()
                .filter(|op| op.write && !op.accepted)
                .count(),
        )
        .ms(
            "regranted_after_pause_ms",
            ms_between(stopped, other_grant.t),
        );
    outcome
}

/// Polls `check` on `a` every 200 ms until its lost event arrives (or
/// `limit` passes); returns the lost event, if any.
async fn check_until_lost(
    a: &mut Taker,
    history: &History,
    mark: usize,
    limit: Duration,
) -> Option<Event> {
    let give_up = tokio::time::Instant::now() + limit;
    loop {
        if let Some(lost) = history
            .events()
            .into_iter()
            .skip(mark)
            .find(|e| e.proc == a.name && e.ev == Kind::Lost)
        {
            return Some(lost);
        }
        if tokio::time::Instant::now() > give_up {
            return None;
        }
        let _ = a.call("check", "check", STEP).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks after `since` (mono ns) that claim `held` later than `bound`.
fn held_after(history: &History, proc: &str, since: u64, bound: u64) -> Vec<Event> {
    history
        .events()
        .into_iter()
        .filter(|e| e.proc == proc && e.ev == Kind::Check && e.t > since)
        .filter(|e| e.held == Some(true) && e.t >= bound)
        .collect()
}

/// 2. Replies delayed past the TTL: a holder behind the proxy must report
///    the loss and never claim to hold after `delay start + TTL` (its last
///    successful renewal was sent before then); a grant whose reply comes
///    late must carry a deadline counted from before its request.
pub async fn replies_delayed(p: &Proxied) -> Outcome {
    let t = &p.target;
    let mut outcome = Outcome::new(t.backend, "replies-delayed");
    let history = History::default();
    let lock = lock_name("delayed");
    let mut a = Taker::spawn(t.taker, &p.proxied_url, "a", &history).await;
    let mut b = Taker::spawn(t.taker, &t.url, "b", &history).await;
    let g = a.call(&acquire_cmd(&lock, STEP), "acquire", STEP).await;
    assert!(granted(&g), "a was not granted: {g:?}");
    let mark = history.len();
    let delayed = mono_ns();
    p.proxy.set_delay(TTL * 2);
    let lost = check_until_lost(&mut a, &history, mark, TTL * 3 + STEP).await;
    let bound = delayed + TTL.as_nanos() as u64;
    let late_claims = held_after(&history, "a", delayed, bound);
    outcome.require(
        late_claims.is_empty(),
        format!("a claimed to hold after its deadline: {late_claims:?}"),
    );
    match &lost {
        Some(lost) => {
            outcome.ms("loss_reported_after_delay_ms", ms_between(delayed, lost.t));
        }
        None => {
            outcome.violated("a never reported the loss while its replies were delayed");
        }
    }
    let gb = b.call(&acquire_cmd(&lock, STEP), "acquire", STEP * 2).await;
    outcome.require(
        granted(&gb),
        format!("b was not granted after a's loss: {gb:?}"),
    );
    outcome.ms("competitor_granted_after_ms", ms_between(delayed, gb.t));
    let _ = b.call("release", "release", STEP).await;
    // A fresh grant whose reply is delayed past the TTL.
    a.send("drop").await;
    let fresh = lock_name("delayed-grant");
    p.proxy.set_delay(TTL + Duration::from_secs(1));
    let mark = a.send(&format!("try {fresh} {}", ms(TTL))).await;
    let done = a.completion(mark, "try", STEP * 2).await;
    let invoked = history
        .events()
        .into_iter()
        .skip(mark)
        .find(|e| e.proc == "a" && e.is(Kind::Invoke, "try"))
        .map_or(0, |e| e.t);
    if granted(&done) {
        let deadline = done.deadline.unwrap_or(u64::MAX);
        outcome.require(
            deadline <= invoked + TTL.as_nanos() as u64,
            "a late grant's deadline was counted from after its request",
        );
        let c = a.call("check", "check", STEP).await;
        outcome.require(
            !(c.held == Some(true) && c.t >= deadline),
            format!("a late grant was reported held past its deadline: {c:?}"),
        );
        outcome.figure(
            "late_grant",
            if deadline <= done.t {
                "expired on arrival"
            } else {
                "held briefly"
            },
        );
    } else {
        outcome.figure("late_grant", done.error.clone().unwrap_or_default());
    }
    p.proxy.pass();
    judge(&mut outcome, &history);
    outcome
}

/// 3a. The holder's connections are cut: it must either renew over a new
///     connection (and then a competitor's `try` must fail) or report the
///     loss (and then the competitor is granted).
pub async fn cut_mid_hold(p: &Proxied) -> Outcome {
    let t = &p.target;
    let mut outcome = Outcome::new(t.backend, "cut-mid-hold");
    let history = History::default();
    let lock = lock_name("cut-hold");
    let mut a = Taker::spawn(t.taker, &p.proxied_url, "a", &history).await;
    let mut b = Taker::spawn(t.taker, &t.url, "b", &history).await;
    let g = a.call(&acquire_cmd(&lock, STEP), "acquire", STEP).await;
    assert!(granted(&g), "a was not granted: {g:?}");
    let mark = history.len();
    let cut = mono_ns();
    p.proxy.cut();
    let next = history
        .wait_for(
            "a renewed or lost after the cut",
            mark,
            TTL * 2 + STEP,
            |e| e.proc == "a" && matches!(e.ev, Kind::Renewed | Kind::Lost),
        )
        .await;
    if next.ev == Kind::Renewed {
        outcome.figure("holder", "renewed over a new connection");
        outcome.ms("renewed_after_cut_ms", ms_between(cut, next.t));
        let probe = b
            .call(&format!("try {lock} {}", ms(TTL)), "try", STEP)
            .await;
        outcome.require(
            !granted(&probe),
            format!("b was granted while a renewed: {probe:?}"),
        );
        let r = a.call("release", "release", STEP).await;
        outcome.require(
            r.held == Some(true),
            format!("a's release after the cut: {r:?}"),
        );
    } else {
        outcome.figure("holder", "reported the loss");
        outcome.ms("loss_reported_after_cut_ms", ms_between(cut, next.t));
    }
    let gb = b.call(&acquire_cmd(&lock, STEP), "acquire", STEP * 2).await;
    outcome.require(
        granted(&gb),
        format!("b was not granted afterwards: {gb:?}"),
    );
    let _ = b.call("release", "release", STEP).await;
    judge(&mut outcome, &history);
    outcome
}

/// How long the proxy holds each reply in [`cut_mid_acquire`]: the window
/// in which a grant applied on the server has not reached the client.
/// Below every backend's response timeout in the suite's URLs (Redis: 2 s
/// by default) and ZooKeeper's ping deadline (2/3 of a 4 s session).
pub const AMBIGUITY_WINDOW: Duration = Duration::from_millis(1500);

/// 3b. The ambiguous acquire: the request reaches the server and is
///     applied, its reply is lost, the connection is cut. The client's
///     retry must find its own grant: one holder (the taker's own lease),
///     and nothing left once it releases.
pub async fn cut_mid_acquire(p: &Proxied, inspector: Arc<dyn LockBackend>) -> Outcome {
    let t = &p.target;
    let mut outcome = Outcome::new(t.backend, "cut-mid-acquire");
    let history = History::default();
    let lock = lock_name("cut-acquire");
    let name = LockName::new(lock.clone()).expect("a valid lock name");
    let mut a = Taker::spawn(t.taker, &p.proxied_url, "a", &history).await;
    let mut b = Taker::spawn(t.taker, &t.url, "b", &history).await;
    // Every reply is held for a while: once the server has applied the
    // grant (seen directly), its reply is still in the proxy, and cutting
    // the connection then loses it — after whatever round trips (pings,
    // script loads) the client needed before its acquire.
    p.proxy.set_reply_delay(AMBIGUITY_WINDOW);
    let mark = a.send(&acquire_cmd(&lock, STEP * 2)).await;
    let give_up = tokio::time::Instant::now() + STEP;
    let applied = loop {
        match inspector.current(&name).await {
            Ok(Some(info)) if info.owner.starts_with('a') => break Some(info),
            _ if tokio::time::Instant::now() > give_up => break None,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let applied = applied.expect("the server never applied the acquire sent through the proxy");
    let dropped_before = p.proxy.stats().dropped_down;
    let cut = mono_ns();
    // Replies still held in the proxy are dropped as they fall due, then
    // the connections go.
    p.proxy.set_lose_replies(true);
    p.proxy
        .wait_for("a held reply dropped", STEP, |s| {
            s.dropped_down > dropped_before
        })
        .await;
    p.proxy.cut();
    let dropped = p.proxy.stats().dropped_down - dropped_before;
    p.proxy.pass();
    assert!(
        dropped > 0,
        "no reply was in flight at the cut: the acquire was not ambiguous"
    );
    outcome.figure("reply_bytes_lost", dropped);
    let done = a.completion(mark, "acquire", STEP * 2).await;
    assert!(
        done.t > cut,
        "the grant's reply reached the client before the cut: the inspector saw the grant more \
         than {} ms after it was applied, so the acquire was not ambiguous",
        AMBIGUITY_WINDOW.as_millis()
    );
    outcome.require(
        granted(&done),
        format!("the retried acquire failed: {done:?}"),
    );
    if granted(&done) {
        outcome.ms("granted_after_cut_ms", ms_between(cut, done.t));
        let holder = inspector.current(&name).await.ok().flatten();
        let same = holder
            .as_ref()
            .is_some_and(|h| Some(h.lease_id.as_str()) == done.lease.as_deref());
        outcome.require(
            same,
            format!("the holder after the retry is not the taker's own lease: {holder:?}"),
        );
        outcome.require(
            applied.lease_id.as_str() == done.lease.as_deref().unwrap_or_default(),
            "the retry made a second grant instead of finding the first",
        );
        let probe = b
            .call(&format!("try {lock} {}", ms(TTL)), "try", STEP)
            .await;
        outcome.require(
            !granted(&probe),
            format!("b was granted while a held: {probe:?}"),
        );
        let r = a.call("release", "release", STEP).await;
        outcome.require(r.held == Some(true), format!("a's release: {r:?}"));
    }
    let probe = b
        .call(&format!("try {lock} {}", ms(TTL)), "try", STEP)
        .await;
    outcome.require(
        granted(&probe),
        format!("an orphaned entry kept the lock busy: {probe:?}"),
    );
    let _ = b.call("release", "release", STEP).await;
    let left = inspector.current(&name).await.ok().flatten();
    outcome.require(
        left.is_none(),
        format!("an entry was left behind: {left:?}"),
    );
    judge(&mut outcome, &history);
    outcome
}

/// 4a. The server is stopped past the TTL while a lock is held, then
///     resumed: the holder must report the loss and never claim to hold
///     past `stop + TTL`; afterwards a competitor is granted with a larger
///     token.
pub async fn server_paused(t: &Target, server: &mut dyn ServerControl) -> Outcome {
    let mut outcome = Outcome::new(t.backend, "server-paused");
    let history = History::default();
    let lock = lock_name("server-paused");
    let mut a = Taker::spawn(t.taker, &t.url, "a", &history).await;
    let mut b = Taker::spawn(t.taker, &t.url, "b", &history).await;
    let g = a.call(&acquire_cmd(&lock, STEP), "acquire", STEP).await;
    assert!(granted(&g), "a was not granted: {g:?}");
    let mark = history.len();
    let paused = mono_ns();
    server.pause();
    let lost = check_until_lost(&mut a, &history, mark, TTL * 3 + STEP).await;
    let resumed = mono_ns();
    server.resume();
    let late = held_after(&history, "a", paused, paused + TTL.as_nanos() as u64);
    outcome.require(
        late.is_empty(),
        format!("a claimed to hold after its deadline: {late:?}"),
    );
    match &lost {
        Some(lost) => {
            outcome.ms("loss_reported_after_pause_ms", ms_between(paused, lost.t));
        }
        None => {
            outcome.violated("a never reported the loss while the server was stopped");
        }
    }
    let gb = b.call(&acquire_cmd(&lock, STEP), "acquire", STEP * 2).await;
    outcome.require(
        granted(&gb),
        format!("b was not granted after the resume: {gb:?}"),
    );
    outcome.ms("granted_after_resume_ms", ms_between(resumed, gb.t));
    let _ = b.call("release", "release", STEP).await;
    judge(&mut outcome, &history);
    outcome
}

/// 4b. The server is killed and restarted on its data while a lock is
///     held: the holder keeps the lease (renewing after the restart; a
///     competitor's `try` then fails) or reports its loss; the next grant's
///     token must be larger where the backend is durable, and the fenced
///     store must never accept the old holder's write after the new one's.
pub async fn server_restarted(t: &Target, server: &mut dyn ServerControl) -> Outcome {
    let mut outcome = Outcome::new(t.backend, "server-restarted");
    let history = History::default();
    let store = FencedStore::start().await;
    let lock = lock_name("server-restarted");
    let mut a = Taker::spawn(t.taker, &t.url, "a", &history).await;
    let mut b = Taker::spawn(t.taker, &t.url, "b", &history).await;
    let g = a.call(&acquire_cmd(&lock, STEP), "acquire", STEP).await;
    assert!(granted(&g), "a was not granted: {g:?}");
    let w = a
        .call(&format!("write {} 1", store.addr()), "write", STEP)
        .await;
    assert!(is_ok(&w), "a's write: {w:?}");
    let killed = mono_ns();
    tokio::task::block_in_place(|| server.kill_and_restart());
    let restarted = mono_ns();
    outcome.ms("restart_ms", ms_between(killed, restarted));
    // The holder's first renewal (or loss) after the restart.
    let mark = history.len();
    let next = renewed_or_lost(&history, "a", mark, TTL * 2 + STEP).await;
    if next.ev == Kind::Renewed {
        outcome.figure("holder", "kept the lease");
        let probe = b
            .call(&format!("try {lock} {}", ms(TTL)), "try", STEP)
            .await;
        outcome.require(
            !granted(&probe),
            format!("b was granted while a kept the lease: {probe:?}"),
        );
        if granted(&probe) {
            let _ = b.call("release", "release", STEP).await;
        }
        let r = a.call("release", "release", STEP).await;
        outcome.require(
            r.held == Some(true),
            format!("a's release after the restart: {r:?}"),
        );
    } else {
        outcome.figure("holder", "reported the loss");
        outcome.ms(
            "holder_loss_reported_after_restart_ms",
            ms_between(restarted, next.t),
        );
    }
    let gb = b.call(&acquire_cmd(&lock, STEP), "acquire", STEP * 2).await;
    outcome.require(
        granted(&gb),
        format!("b was never granted after the restart: {gb:?}"),
    );
    if granted(&gb) {
        outcome.figure(
            "tokens",
            format!("{} then {}", g.token_text(), gb.token_text()),
        );
        let wb = b
            .call(&format!("write {} 2", store.addr()), "write", STEP)
            .await;
        outcome.figure(
            "new_holder_write",
            wb.error.clone().unwrap_or_else(|| "accepted".into()),
        );
        let wa = a
            .call(&format!("write {} 3", store.addr()), "write", STEP)
            .await;
        outcome.require(
            !(is_ok(&wb) && is_ok(&wa)),
            "the old holder's write was accepted after the new holder's",
        );
        let _ = b.call("release", "release", STEP).await;
    }
    outcome.require(
        interleaved_writes(&store) == 0,
        "interleaved writes were accepted",
    );
    judge(&mut outcome, &history);
    outcome
}

impl Target {
    /// A target for `url`, reading the backend's expiry slack from its
    /// capabilities.
    ///
    /// # Panics
    /// When the backend cannot be reached.
    pub async fn new(backend: &'static str, url: String, taker: &'static str) -> Self {
        let connected = lockkit::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connect to {backend}: {e}"));
        let slack = connected.capabilities().expiry_slack;
        Self {
            backend,
            url,
            slack,
            taker,
        }
    }

    /// A backend of this target for the test's own inspection.
    ///
    /// # Panics
    /// When the backend cannot be reached.
    pub async fn inspector(&self) -> Arc<dyn LockBackend> {
        lockkit::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.backend))
    }

    /// This target behind a fresh [`FaultProxy`] in front of 127.0.0.1:`port`
    /// (the port the URL names).
    pub async fn proxied(self, port: u16) -> Proxied {
        let proxy = FaultProxy::start((std::net::Ipv4Addr::LOCALHOST, port).into()).await;
        let from = format!("127.0.0.1:{port}");
        assert!(
            self.url.contains(&from),
            "{} does not name {from}",
            self.url
        );
        let proxied_url = self
            .url
            .replace(&from, &format!("127.0.0.1:{}", proxy.port()));
        Proxied {
            target: self,
            proxied_url,
            proxy,
        }
    }
}

/// A 3-member cluster (etcd, ZooKeeper) for the leader faults.
#[async_trait::async_trait]
pub trait ClusterControl: Send {
    /// The index of the current leader, waiting for an election.
    async fn leader(&mut self) -> usize;
    /// A lockkit URL that names member `i` only.
    fn member_url(&self, i: usize) -> String;
    /// SIGKILLs member `i`.
    fn kill(&mut self, i: usize);
    /// Restarts member `i` on its data directory.
    fn restart(&mut self, i: usize);
    /// Cuts member `i` off from the other members (clients still reach it).
    fn isolate(&mut self, i: usize);
    /// Ends every partition.
    fn heal(&mut self);
}

/// Waits for `proc`'s first `renewed` or `lost` event after `mark`.
async fn renewed_or_lost(history: &History, proc: &str, mark: usize, timeout: Duration) -> Event {
    let me = proc.to_owned();
    history
        .wait_for(&format!("{me} renewed or lost"), mark, timeout, move |e| {
            e.proc == me && matches!(e.ev, Kind::Renewed | Kind::Lost)
        })
        .await
}

/// 6a. The leader is killed while `a` holds the lock and `b` waits for it:
///     `a` keeps the lease (renewing through another member) or reports the
///     loss; `b` is granted only after `a`'s claim ends, with a larger
///     token.
pub async fn leader_killed(t: &Target, cluster: &mut dyn ClusterControl) -> Outcome {
    let mut outcome = Outcome::new(t.backend, "leader-killed");
    let history = History::default();
    let lock = lock_name("leader-killed");
    let mut a = Taker::spawn(t.taker, &t.url, "a", &history).await;
    let mut b = Taker::spawn(t.taker, &t.url, "b", &history).await;
    let g = a.call(&acquire_cmd(&lock, STEP), "acquire", STEP).await;
    assert!(granted(&g), "a was not granted: {g:?}");
    let b_mark = b.send(&acquire_cmd(&lock, STEP * 3)).await;
    history
        .wait_for("b's acquire sent", b_mark, STEP, |e| {
            e.proc == "b" && e.is(Kind::Invoke, "acquire")
        })
        .await;
    let leader = cluster.leader().await;
    let mark = history.len();
    let killed = mono_ns();
    cluster.kill(leader);
    outcome.figure("killed", format!("member {leader} (the leader)"));
    let next = renewed_or_lost(&history, "a", mark, TTL * 3 + STEP).await;
    if next.ev == Kind::Renewed {
        outcome.ms("holder_renewed_after_kill_ms", ms_between(killed, next.t));
        let r = a.call("release", "release", STEP).await;
        let released = if r.held == Some(true) {
            "released it"
        } else {
            "found it gone at release"
        };
        outcome.figure("holder", format!("kept the lease, {released}"));
    } else {
        outcome.ms(
            "holder_loss_reported_after_kill_ms",
            ms_between(killed, next.t),
        );
        outcome.figure("holder", "reported the loss");
    }
    let gb = b.completion(b_mark, "acquire", STEP * 3).await;
    outcome.require(granted(&gb), format!("b was never granted: {gb:?}"));
    outcome.ms("waiter_granted_after_kill_ms", ms_between(killed, gb.t));
    let _ = b.call("release", "release", STEP).await;
    tokio::task::block_in_place(|| cluster.restart(leader));
    judge(&mut outcome, &history);
    outcome
}

/// 6b. The leader is cut off from the majority while its client `a` (which
///     knows only the leader) holds the lock and `b` (which knows only a
///     majority member) waits: `a` must report the loss, `b` is granted
///     after `a`'s claim ends, with a larger token.
pub async fn leader_partitioned(t: &Target, cluster: &mut dyn ClusterControl) -> Outcome {
    let mut outcome = Outcome::new(t.backend, "leader-partitioned");
    let history = History::default();
    let lock = lock_name("leader-partitioned");
    let leader = cluster.leader().await;
    let other = (leader + 1) % 3;
    let mut a = Taker::spawn(t.taker, &cluster.member_url(leader), "a", &history).await;
    let mut b = Taker::spawn(t.taker, &cluster.member_url(other), "b", &history).await;
    let g = a.call(&acquire_cmd(&lock, STEP), "acquire", STEP).await;
    assert!(granted(&g), "a was not granted: {g:?}");
    let mark = history.len();
    let cut = mono_ns();
    cluster.isolate(leader);
    let b_mark = b.send(&acquire_cmd(&lock, STEP * 3)).await;
    let lost = check_until_lost(&mut a, &history, mark, TTL * 3 + STEP).await;
    match &lost {
        Some(lost) => {
            outcome.ms("minority_holder_loss_reported_ms", ms_between(cut, lost.t));
        }
        None => {
            outcome.violated("the holder on the minority side never reported the loss");
        }
    }
    let late = held_after(&history, "a", cut, cut + TTL.as_nanos() as u64);
    outcome.require(
        late.is_empty(),
        format!("a claimed to hold after its deadline: {late:?}"),
    );
    let gb = b.completion(b_mark, "acquire", STEP * 3).await;
    outcome.require(
        granted(&gb),
        format!("b on the majority side was never granted: {gb:?}"),
    );
    outcome.ms("majority_granted_after_cut_ms", ms_between(cut, gb.t));
    let _ = b.call("release", "release", STEP).await;
    cluster.heal();
    judge(&mut outcome, &history);
    outcome
}
