//! The cross-process taker of the fault suite: one OS process that takes
//! locks through the `lockkit` facade (backend from a URL) on command and
//! reports every event as a JSON line on stdout
//! (`lockkit_tests::faults::event::Event`, stamped on `CLOCK_MONOTONIC`).
//!
//! Usage: `taker <lock-backend-url> <owner>`; then commands on stdin, one
//! per line:
//!
//! - `acquire LOCK TTL_MS WAIT_MS` / `try LOCK TTL_MS`: take the lock
//!   (waiting, or once); `invoke` then `ok` (token, lease, deadline) or
//!   `fail`. While held, `renewed` reports each move of the safe deadline
//!   and `lost` the guard's lost signal.
//! - `check`: does the guard believe it holds the lock (`check`, `held`)?
//! - `extend TTL_MS`, `release`, `drop` (forget the guard: best-effort
//!   release in the background).
//! - `read ADDR`, `write ADDR VALUE`: a fenced-store request with the
//!   guard's token, sent even when the guard knows it is lost (as a buggy
//!   client would); `held` says what the guard believed.
//! - `incr ADDR MAX_SLEEP_MS`: read, sleep up to `MAX_SLEEP_MS`, write the
//!   value + 1.
//! - `counter LOCK TTL_MS WAIT_MS ROUNDS ADDR MAX_SLEEP_MS [STOP_ROUND]`:
//!   `ROUNDS` times acquire, `incr`, release (failed rounds are reported
//!   and skipped). In round `STOP_ROUND` (1-based) the process stops itself
//!   (SIGSTOP, after an `invoke` of `self-stop`) between its read and its
//!   write, so a test can pause it inside the critical section without
//!   racing it.
//! - `exit`.

use std::process::ExitCode;
use std::time::Duration;

use lockkit::{LockGuard, LockOptions, Locker};
use lockkit_tests::faults::event::{Event, Kind, mono_ns};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

fn emit(event: &Event) {
    match serde_json::to_string(event) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("taker: cannot encode {event:?}: {e}"),
    }
}

struct Taker {
    proc: String,
    locker: Locker,
    guard: Option<(LockGuard, JoinHandle<()>)>,
}

fn parse_ms(word: Option<&&str>) -> Result<Duration, String> {
    word.ok_or("missing milliseconds")?
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| e.to_string())
}

impl Taker {
    fn event(&self, ev: Kind, op: &str) -> Event {
        let mut event = Event::now(&self.proc, ev).op(op);
        if let Some((guard, _)) = &self.guard {
            let lease = guard.handle().lease();
            event.lock = Some(lease.name.as_str().to_owned());
            event.token = Some(lease.token.get());
            event.lease = Some(lease.lease_id.as_str().to_owned());
        }
        event
    }

    /// Watches a new guard: `renewed` when its deadline moves, `lost` once.
    fn watch(&self, guard: &LockGuard) -> JoinHandle<()> {
        let handle = guard.handle();
        let proc = self.proc.clone();
        let lease = handle.lease();
        tokio::spawn(async move {
            let lost = handle.lost();
            tokio::pin!(lost);
            let mut last = mono_ns() + handle.remaining().as_nanos() as u64;
            loop {
                tokio::select! {
                    reason = &mut lost => {
                        let mut event = Event::now(&proc, Kind::Lost);
                        event.lock = Some(lease.name.as_str().to_owned());
                        event.token = Some(lease.token.get());
                        event.lease = Some(lease.lease_id.as_str().to_owned());
                        event.error = Some(reason.to_string());
                        emit(&event);
                        return;
                    }
                    () = tokio::time::sleep(Duration::from_millis(10)) => {
                        let remaining = handle.remaining();
                        let deadline = mono_ns() + remaining.as_nanos() as u64;
                        if !remaining.is_zero() && deadline > last + 2_000_000 {
                            last = deadline;
                            let mut event = Event::now(&proc, Kind::Renewed);
                            event.token = Some(lease.token.get());
                            event.lease = Some(lease.lease_id.as_str().to_owned());
                            event.deadline = Some(deadline);
                            emit(&event);
                        }
                    }
                }
            }
        })
    }

    async fn acquire(&mut self, op: &str, words: &[&str]) -> Result<(), String> {
        let name = *words.get(1).ok_or("missing lock name")?;
        let ttl = parse_ms(words.get(2))?;
        let mut invoke = self.event(Kind::Invoke, op);
        invoke.lock = Some(name.to_owned());
        emit(&invoke);
        let result = if op == "try" {
            let options = LockOptions::new().ttl(ttl);
            self.locker.try_acquire_with(name, &options).await
        } else {
            let wait = parse_ms(words.get(3))?;
            let options = LockOptions::new().ttl(ttl).wait_timeout(wait);
            self.locker.acquire_with(name, &options).await.map(Some)
        };
        let (ev, error) = match result {
            Ok(Some(guard)) => {
                let deadline = mono_ns() + guard.handle().remaining().as_nanos() as u64;
                let watcher = self.watch(&guard);
                self.guard = Some((guard, watcher));
                let mut ok = self.event(Kind::Ok, op);
                ok.deadline = Some(deadline);
                emit(&ok);
                return Ok(());
            }
            Ok(None) => (Kind::Fail, "busy".to_owned()),
            Err(e) => (Kind::Fail, e.to_string()),
        };
        let mut event = self.event(ev, op);
        event.lock = Some(name.to_owned());
        event.error = Some(error);
        emit(&event);
        Ok(())
    }

    async fn release(&mut self) {
        let invoke = self.event(Kind::Invoke, "release");
        emit(&invoke);
        let Some((guard, watcher)) = self.guard.take() else {
            let mut fail = invoke;
            fail.ev = Kind::Fail;
            fail.error = Some("no guard".to_owned());
            emit(&fail);
            return;
        };
        watcher.abort();
        let mut done = invoke.clone();
        done.t = 0;
        match guard.release().await {
            Ok(held) => {
                done.ev = Kind::Ok;
                done.held = Some(held);
            }
            Err(e) => {
                done.ev = Kind::Fail;
                done.error = Some(e.to_string());
            }
        }
        done.t = mono_ns();
        emit(&done);
    }

    /// One fenced-store request; returns the value read or written.
    async fn store(&self, addr: &str, value: Option<u64>) -> Option<u64> {
        let op = if value.is_some() { "write" } else { "read" };
        let mut invoke = self.event(Kind::Invoke, op);
        let Some((guard, _)) = &self.guard else {
            invoke.ev = Kind::Fail;
            invoke.error = Some("no guard".to_owned());
            emit(&invoke);
            return None;
        };
        invoke.held = Some(guard.handle().ensure_held().is_ok());
        invoke.value = value;
        emit(&invoke);
        let (token, lease) = (
            invoke.token.unwrap_or(0),
            invoke.lease.clone().unwrap_or_default(),
        );
        let request = match value {
            Some(v) => format!("WRITE {} {token} {lease} {v}\n", self.proc),
            None => format!("READ {} {token} {lease}\n", self.proc),
        };
        let reply = async {
            let stream = TcpStream::connect(addr).await?;
            let (read, mut write) = stream.into_split();
            write.write_all(request.as_bytes()).await?;
            let mut line = String::new();
            BufReader::new(read).read_line(&mut line).await?;
            Ok::<_, std::io::Error>(line)
        }
        .await;
        let mut done = invoke;
        done.t = mono_ns();
        match reply {
            Ok(line) => match line.trim().strip_prefix("OK ").map(str::parse::<u64>) {
                Some(Ok(v)) => {
                    done.ev = Kind::Ok;
                    done.value = Some(v);
                    emit(&done);
                    return Some(v);
                }
                _ => {
                    done.ev = Kind::Fail;
                    done.error = Some(line.trim().to_owned());
                }
            },
            Err(e) => {
                done.ev = Kind::Fail;
                done.error = Some(e.to_string());
            }
        }
        emit(&done);
        None
    }

    async fn incr(&self, addr: &str, max_sleep: Duration, stop: bool) {
        if let Some(value) = self.store(addr, None).await {
            if stop {
                emit(&self.event(Kind::Invoke, "self-stop"));
                if let Err(e) = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP) {
                    eprintln!("taker {}: cannot stop itself: {e}", self.proc);
                }
            }
            let nanos = max_sleep.as_nanos() as u64;
            tokio::time::sleep(Duration::from_nanos(fastrand::u64(0..=nanos))).await;
            self.store(addr, Some(value + 1)).await;
        }
    }

    async fn command(&mut self, line: &str) -> Result<bool, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some(op @ ("acquire" | "try")) => self.acquire(op, &words).await?,
            Some("check") => {
                let mut event = self.event(Kind::Check, "check");
                let held = self
                    .guard
                    .as_ref()
                    .is_some_and(|(g, _)| g.handle().ensure_held().is_ok());
                event.held = Some(held);
                if let Some((guard, _)) = &self.guard {
                    event.deadline = Some(mono_ns() + guard.handle().remaining().as_nanos() as u64);
                }
                emit(&event);
            }
            Some("extend") => {
                let ttl = parse_ms(words.get(1))?;
                emit(&self.event(Kind::Invoke, "extend"));
                let result = match &self.guard {
                    Some((guard, _)) => guard.handle().extend(ttl).await.map_err(|e| e.to_string()),
                    None => Err("no guard".to_owned()),
                };
                let mut done = self.event(Kind::Ok, "extend");
                if let Err(e) = result {
                    done.ev = Kind::Fail;
                    done.error = Some(e);
                }
                emit(&done);
            }
            Some("release") => self.release().await,
            Some("drop") => {
                if let Some((guard, watcher)) = self.guard.take() {
                    watcher.abort();
                    drop(guard);
                }
            }
            Some("read") => {
                self.store(words.get(1).ok_or("missing address")?, None)
                    .await;
            }
            Some("write") => {
                let value = words
                    .get(2)
                    .ok_or("missing value")?
                    .parse::<u64>()
                    .map_err(|e| e.to_string())?;
                self.store(words.get(1).ok_or("missing address")?, Some(value))
                    .await;
            }
            Some("incr") => {
                let addr = *words.get(1).ok_or("missing address")?;
                self.incr(addr, parse_ms(words.get(2))?, false).await;
            }
            Some("counter") => {
                let (args, stop_round) = match words.as_slice() {
                    [args @ .., stop] if args.len() == 7 => {
                        (args, stop.parse::<u32>().map_err(|_| "bad stop round")?)
                    }
                    args => (args, 0),
                };
                let [_, lock, ttl, wait, rounds, addr, sleep] = args else {
                    return Err(
                        "counter LOCK TTL_MS WAIT_MS ROUNDS ADDR MAX_SLEEP_MS [STOP_ROUND]".into(),
                    );
                };
                let rounds: u32 = rounds.parse().map_err(|_| "bad rounds")?;
                let max_sleep = parse_ms(Some(sleep))?;
                for round in 1..=rounds {
                    self.acquire("acquire", &["acquire", lock, ttl, wait])
                        .await?;
                    if self.guard.is_some() {
                        self.incr(addr, max_sleep, round == stop_round).await;
                        self.release().await;
                    }
                }
                emit(&Event::now(&self.proc, Kind::Ok).op("counter"));
            }
            Some("exit") => return Ok(false),
            Some(other) => return Err(format!("unknown command {other:?}")),
            None => {}
        }
        Ok(true)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, owner] = args.as_slice() else {
        eprintln!("usage: taker <lock-backend-url> <owner>");
        return ExitCode::from(2);
    };
    let locker = match lockkit::connect(url)
        .await
        .map_err(|e| e.to_string())
        .and_then(|backend| Locker::new(backend, owner.as_str()).map_err(|e| e.to_string()))
    {
        Ok(locker) => locker,
        Err(e) => {
            eprintln!("taker {owner}: cannot connect: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut taker = Taker {
        proc: owner.clone(),
        locker,
        guard: None,
    };
    // `ready` carries the wall clock (Unix seconds), to show a faketime skew.
    let mut ready = Event::now(owner, Kind::Ready);
    ready.value = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs());
    emit(&ready);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match taker.command(&line).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let mut event = Event::now(owner, Kind::Fail).op("command");
                event.error = Some(format!("{line:?}: {e}"));
                emit(&event);
            }
        }
    }
    if taker.guard.is_some() {
        taker.release().await;
    }
    ExitCode::SUCCESS
}
