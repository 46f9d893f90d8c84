//! Redis-specific behaviour: key layout, script reloading, wake-ups by
//! pub/sub, killed connections, restarts with AOF, credentials and TLS.
#![cfg(feature = "redis")]
// Tests may unwrap (the workspace lint is for library code); helpers
// outside #[test] functions are not covered by allow-unwrap-in-tests.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lockkit_core::conformance::unique_name;
use lockkit_core::spi::AcquireRequest;
use lockkit_core::spi::PollPolicy;
use lockkit_core::{Error, LockBackend, LockName, LockOptions, Locker};
use lockkit_redis::RedisOptions;
use lockkit_tests::redis::{RedisConfig, RedisHarness, RedisServer};
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(30);

fn req(name: &LockName, owner: &str, ttl: Duration) -> AcquireRequest {
    AcquireRequest::new(name.clone(), owner, ttl).expect("valid request")
}

/// Percentiles of a sample, for the printed measurements.
fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    format!(
        "n={} p50={:?} p95={:?} max={:?}",
        samples.len(),
        at(0.5),
        at(0.95),
        at(1.0)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_follow_the_documented_layout() {
    let h = RedisHarness::standalone().await;
    let backend = h.backend().await;
    let name = LockName::new(format!("{}/{{brace}} 100%", unique_name("layout"))).unwrap();
    let keys = backend.keys(&name);
    assert!(
        keys.lock
            .starts_with("lockkit:{lockkit-conformance/layout/")
    );
    assert!(
        keys.lock.ends_with("/%7Bbrace%7D 100%25}:lock"),
        "{}",
        keys.lock
    );

    let lease = backend
        .try_acquire(&req(&name, "pipeline_1", Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    let raw = h.inspector();
    let value: String = raw.query(redis::cmd("GET").arg(&keys.lock)).await;
    assert_eq!(
        value.split('\n').collect::<Vec<_>>()[..2],
        [lease.lease_id.as_str(), &lease.token.to_string()]
    );
    assert!(value.ends_with("\npipeline_1"), "{value:?}");
    let pttl: i64 = raw.query(redis::cmd("PTTL").arg(&keys.lock)).await;
    assert!(pttl > 5_000 && pttl <= 10_000, "PX is the TTL: {pttl}");
    let fence: u64 = raw.query(redis::cmd("GET").arg(&keys.fence)).await;
    assert_eq!(fence, lease.token.get());
    let fence_ttl: i64 = raw.query(redis::cmd("PTTL").arg(&keys.fence)).await;
    assert_eq!(fence_ttl, -1, "the fence counter never expires");

    assert!(backend.release(&lease).await.unwrap());
    let exists: i64 = raw
        .query(
            redis::cmd("EXISTS")
                .arg(&keys.lock)
                .arg(&keys.queue)
                .arg(&keys.waiters),
        )
        .await;
    assert_eq!(exists, 0, "only the fence counter stays");
    assert_eq!(backend.cleanup_expired().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scripts_are_reloaded_after_script_flush() {
    let server = RedisServer::start(RedisConfig::default());
    let backend = lockkit_redis::connect(&server.url()).await.unwrap();
    let name = unique_name("noscript");
    let first = backend
        .try_acquire(&req(&name, "a", LONG))
        .await
        .unwrap()
        .unwrap();
    let mut raw = server.raw();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut raw).unwrap();
    assert!(
        backend.release(&first).await.unwrap(),
        "EVALSHA reloads after NOSCRIPT"
    );
    let second = backend
        .try_acquire(&req(&name, "a", LONG))
        .await
        .unwrap()
        .unwrap();
    assert!(second.token > first.token);
    // Batched renewal (one EXTEND_MANY script per chunk) reloads too.
    let other = unique_name("noscript-2");
    let third = backend
        .try_acquire(&req(&other, "a", LONG))
        .await
        .unwrap()
        .unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut raw).unwrap();
    let renewed = backend
        .extend_many(&[(second.clone(), LONG), (third.clone(), LONG)])
        .await;
    assert!(
        renewed.iter().all(Result::is_ok),
        "batched renewal after SCRIPT FLUSH: {renewed:?}"
    );
    assert!(backend.release(&second).await.unwrap());
    assert!(backend.release(&third).await.unwrap());
}

/// A release wakes a parked waiter by pub/sub: the waiters poll only every
/// 2.5–5 s here, yet each is granted well under a second after the
/// release. The same measurement with pub/sub off shows the polling
/// fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_wakes_waiter_by_pubsub() {
    const ROUNDS: usize = 15;
    let h = RedisHarness::standalone().await;
    let slow_poll = PollPolicy::new(Duration::from_secs(5), Duration::from_secs(5));
    let holder = h.backend().await;
    let waiter = Arc::new(
        h.backend_with(RedisOptions::default().poll(slow_poll))
            .await,
    );
    let mut push = Vec::new();
    for _ in 0..ROUNDS {
        push.push(handover(&holder, &waiter).await);
    }
    assert!(
        waiter.listening(),
        "one pattern subscription serves all waits"
    );
    let bound = Duration::from_secs(1);
    assert!(
        push.iter().all(|l| *l < bound),
        "push wake-ups must beat the 2.5 s poll floor by far: {push:?}"
    );
    eprintln!(
        "redis wake-up latency, pub/sub (poll 5 s): {}",
        summary(push)
    );

    let polling = Arc::new(h.backend_with(RedisOptions::default().pubsub(false)).await);
    assert!(!polling.capabilities().push_wakeup);
    let mut poll = Vec::new();
    for _ in 0..5 {
        poll.push(handover(&holder, &polling).await);
    }
    eprintln!(
        "redis wake-up latency, polling only (10 ms..500 ms): {}",
        summary(poll)
    );
}

/// Holder takes the lock, a waiter parks, the holder releases: the time
/// from the release call to the waiter's grant.
async fn handover(
    holder: &lockkit_redis::RedisBackend,
    waiter: &Arc<lockkit_redis::RedisBackend>,
) -> Duration {
    let name = unique_name("pubsub-wake");
    let held = holder
        .try_acquire(&req(&name, "holder", LONG))
        .await
        .unwrap()
        .unwrap();
    let task = {
        let (waiter, name) = (Arc::clone(waiter), name.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            let lease = waiter
                .acquire(&req(&name, "waiter", LONG), Some(deadline))
                .await;
            (lease, Instant::now())
        })
    };
    // Let the waiter try once and park; the bound holds either way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished());
    let released_at = Instant::now();
    assert!(holder.release(&held).await.unwrap());
    let (lease, granted_at) = task.await.unwrap();
    let lease = lease.expect("the waiter gets the lock");
    assert!(lease.token > held.token);
    assert!(waiter.release(&lease).await.unwrap());
    granted_at - released_at
}

/// `CLIENT KILL` of every client connection (commands and pub/sub) while a
/// lock is held and renewed: the holder's connection reconnects, renewal
/// goes on, nobody else gets in meanwhile, and a waiter whose pub/sub
/// connection was killed still gets the lock promptly after the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_kill_does_not_break_exclusion() {
    let server = RedisServer::start(RedisConfig::default());
    let url = server.url();
    let name = unique_name("client-kill");
    let holder = Locker::new(
        Arc::new(lockkit_redis::connect(&url).await.unwrap()),
        "holder",
    )
    .and_then(|l| l.with_options(LockOptions::new().ttl(Duration::from_secs(3))))
    .unwrap();
    let guard = holder.acquire(&name).await.unwrap();
    let token = guard.token();

    // A contender that keeps trying, and a parked waiter.
    let contender = Arc::new(lockkit_redis::connect(&url).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (contender, stop, name) = (Arc::clone(&contender), Arc::clone(&stop), name.clone());
        tokio::spawn(async move {
            let mut tries = 0u32;
            while !stop.load(Ordering::SeqCst) {
                match contender.try_acquire(&req(&name, "contender", LONG)).await {
                    Ok(None) => tries += 1,
                    Ok(Some(lease)) => {
                        panic!("the contender got in while the holder held: {lease:?}")
                    }
                    Err(err) => assert!(err.is_retryable(), "unexpected error {err}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tries
        })
    };
    let waiter = Arc::new(lockkit_redis::connect(&url).await.unwrap());
    let waiting = {
        let (waiter, name) = (Arc::clone(&waiter), name.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let lease = waiter
                .acquire(&req(&name, "waiter", LONG), Some(deadline))
                .await;
            (lease, Instant::now())
        })
    };

    let mut raw = server.raw();
    let mut killed = 0;
    for _ in 0..6 {
        for kind in ["normal", "pubsub"] {
            let n: i64 = redis::cmd("CLIENT")
                .arg(&["KILL", "TYPE", kind, "SKIPME", "yes"])
                .query(&mut raw)
                .unwrap();
            killed += n;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !guard.is_lost(),
            "renewal must survive killed connections: {:?}",
            guard.lost_reason()
        );
    }
    assert!(killed >= 6, "connections were killed ({killed})");
    stop.store(true, Ordering::SeqCst);
    let tries = prober.await.unwrap();
    assert!(tries > 10, "the contender kept trying ({tries})");
    assert!(
        !waiting.is_finished(),
        "the waiter cannot hold the lock yet"
    );

    let info = contender.current(&name).await.unwrap().expect("still held");
    assert_eq!(info.token, token);
    assert_eq!(info.lease_id, guard.lease().lease_id);
    let released_at = Instant::now();
    assert!(guard.release().await.unwrap());
    let (lease, granted_at) = waiting.await.unwrap();
    let lease = lease.expect("the waiter gets the lock");
    assert!(lease.token > token);
    assert!(
        granted_at - released_at < Duration::from_secs(1),
        "woken promptly after its pub/sub connection was killed: {:?}",
        granted_at - released_at
    );
    assert!(waiter.release(&lease).await.unwrap());
}

/// The server kills the holder's connection right before each release:
/// the release reconnects and retries (it is idempotent per lease id)
/// instead of failing with "broken pipe" and leaving the lock held until
/// its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_right_after_a_killed_connection_frees_the_lock() {
    let server = RedisServer::start(RedisConfig::default());
    let backend = Arc::new(lockkit_redis::connect(&server.url()).await.unwrap());
    let locker = Locker::new(backend.clone(), "holder")
        .and_then(|l| l.with_options(LockOptions::new().ttl(Duration::from_secs(60))))
        .unwrap();
    let mut raw = server.raw();
    for round in 0..5 {
        let name = unique_name("kill-before-release");
        let guard = locker.acquire(&name).await.unwrap();
        let killed: i64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
            .query(&mut raw)
            .unwrap();
        assert!(
            killed >= 1,
            "round {round}: the holder's connection was killed"
        );
        assert!(
            guard.release().await.unwrap_or_else(|e| panic!(
                "round {round}: release after a killed connection: {e:?}"
            )),
            "round {round}: the lease was held until the release"
        );
        let left: i64 = redis::cmd("EXISTS")
            .arg(&backend.keys(&name).lock)
            .query(&mut raw)
            .unwrap();
        assert_eq!(
            left, 0,
            "round {round}: the lock is free at once, not after its TTL"
        );
    }
}

/// An acquire cancelled while its script is on its way to a stalled server
/// (SIGSTOP) leaves nothing behind: when the server resumes and grants the
/// lock to the abandoned request, the driver's abandon — sent after it on
/// the same connection — deletes that lease at once, instead of it blocking
/// everyone for its 30 s TTL. The fence counter shows that the request did
/// reach the server and was granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_acquire_on_a_stalled_server_leaves_nothing() {
    let mut server = RedisServer::start(RedisConfig::default());
    let options = RedisOptions::default()
        .pubsub(false)
        .response_timeout(Duration::from_secs(30));
    let backend = lockkit_redis::connect_with(&server.url(), options)
        .await
        .unwrap();
    let name = unique_name("stalled-cancel");
    let keys = backend.keys(&name);
    // Connect and load the script first, so the cancelled request is the
    // script itself, already written to the socket.
    let warm = unique_name("stalled-warm");
    let lease = backend
        .try_acquire(&req(&warm, "warm", LONG))
        .await
        .unwrap()
        .unwrap();
    assert!(backend.release(&lease).await.unwrap());
    server.process().signal("STOP");
    let task = {
        let (backend, name) = (backend.clone(), name.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            backend
                .acquire(&req(&name, "cancelled", LONG), Some(deadline))
                .await
        })
    };
    // Let the script leave; the server cannot answer it. There is no
    // signal for "written to the socket" while the server is stopped, so
    // this waits generously (on a loaded machine 300 ms was not always
    // enough to be sure).
    tokio::time::sleep(Duration::from_secs(2)).await;
    task.abort();
    assert!(task.await.is_err_and(|e| e.is_cancelled()));
    server.process().signal("CONT");
    let mut raw = server.raw();
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let fence: Option<i64> = redis::cmd("GET").arg(&keys.fence).query(&mut raw).unwrap();
        let held: i64 = redis::cmd("EXISTS")
            .arg(&keys.lock)
            .query(&mut raw)
            .unwrap();
        if fence == Some(1) && held == 0 {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "after the cancel: fence {fence:?} (1 = the request was granted), lock key present: {}",
            held == 1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With `appendfsync always`, a SIGKILLed and restarted server keeps the
/// fence counter (tokens keep increasing) and the live lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aof_always_restart_keeps_tokens_increasing() {
    let mut server = RedisServer::start(RedisConfig {
        aof_always: true,
        ..RedisConfig::default()
    });
    let url = server.url();
    let name = unique_name("aof-restart");
    let a = lockkit_redis::connect(&url).await.unwrap();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let lease = a
            .try_acquire(&req(&name, "a", LONG))
            .await
            .unwrap()
            .unwrap();
        tokens.push(lease.token);
        assert!(a.release(&lease).await.unwrap());
    }
    let held = a
        .try_acquire(&req(&name, "a", LONG))
        .await
        .unwrap()
        .unwrap();
    tokens.push(held.token);

    server.kill();
    server.restart();

    let b = lockkit_redis::connect(&url).await.unwrap();
    assert!(
        b.try_acquire(&req(&name, "b", LONG))
            .await
            .unwrap()
            .is_none(),
        "the lease survived the restart"
    );
    let info = b.current(&name).await.unwrap().expect("held");
    assert_eq!(info.lease_id, held.lease_id);
    assert_eq!(info.token, held.token);
    // The old client reconnects by itself (its first call may fail).
    let give_up = Instant::now() + Duration::from_secs(10);
    let released = loop {
        match a.release(&held).await {
            Ok(released) => break released,
            Err(err) if err.is_retryable() && Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("release after restart: {err}"),
        }
    };
    assert!(released);
    let after = b
        .try_acquire(&req(&name, "b", LONG))
        .await
        .unwrap()
        .unwrap();
    tokens.push(after.token);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens must keep increasing across the restart: {tokens:?}"
    );
    assert!(b.release(&after).await.unwrap());
}

/// ACL user and password from the URL; a wrong password is a clear
/// configuration error that never shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_from_the_url_and_redacted_errors() {
    let server = RedisServer::start(RedisConfig {
        acl_user: Some(("lockkit_app".into(), "right-Horse-42".into())),
        ..RedisConfig::default()
    });
    let backend = lockkit_redis::connect(&server.url())
        .await
        .expect("right credentials");
    let name = unique_name("acl");
    let lease = backend
        .try_acquire(&req(&name, "a", LONG))
        .await
        .unwrap()
        .unwrap();
    assert!(backend.release(&lease).await.unwrap());

    for (user, password) in [
        ("lockkit_app", "wrong-Battery-7"),
        ("nobody", "wrong-Battery-7"),
    ] {
        let url = server.url_with_auth(user, password);
        let err = lockkit_redis::connect(&url).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Configuration { .. }), "{err:?}");
        assert!(msg.contains("credentials"), "{msg}");
        assert!(msg.contains(":***@"), "the URL is shown redacted: {msg}");
        assert!(!msg.contains("wrong-Battery-7"), "{msg}");
        eprintln!("wrong password: {msg}");
        assert!(!format!("{err:?}").contains("wrong-Battery-7"), "{err:?}");
        // The same through the facade.
        let err = lockkit::connect(&url).await.unwrap_err();
        assert!(matches!(err, Error::Configuration { .. }), "{err:?}");
        assert!(!err.to_string().contains("wrong-Battery-7"));
    }
    let no_auth = format!("redis://127.0.0.1:{}/", server.port());
    let err = lockkit_redis::connect(&no_auth).await.unwrap_err();
    assert!(matches!(err, Error::Configuration { .. }), "{err:?}");
}

/// `rediss://` with a private CA: commands and pub/sub wake-ups over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_with_a_private_ca() {
    let server = RedisServer::start(RedisConfig {
        tls: true,
        password: Some("tls-Secret-9".into()),
        ..RedisConfig::default()
    });
    let url = server.url();
    assert!(url.starts_with("rediss://"));
    let holder = lockkit_redis::connect(&url).await.expect("TLS connect");
    let waiter = Arc::new(lockkit_redis::connect(&url).await.expect("TLS connect"));
    let slow = Arc::new(
        lockkit_redis::connect_with(
            &url,
            RedisOptions::default().poll(PollPolicy::new(
                Duration::from_secs(5),
                Duration::from_secs(5),
            )),
        )
        .await
        .unwrap(),
    );
    let latency = handover(&holder, &slow).await;
    assert!(
        latency < Duration::from_secs(1),
        "pub/sub over TLS: {latency:?}"
    );
    let name = unique_name("tls");
    let lease = waiter
        .try_acquire(&req(&name, "w", LONG))
        .await
        .unwrap()
        .unwrap();
    assert!(waiter.release(&lease).await.unwrap());

    // Without the CA the server's certificate is not trusted.
    let untrusted = format!("rediss://:tls-Secret-9@127.0.0.1:{}/", server.port());
    let err = lockkit_redis::connect(&untrusted).await.unwrap_err();
    assert!(!err.to_string().contains("tls-Secret-9"), "{err}");
}

/// Retrying an acquire whose reply was lost (same request, same lease id)
/// returns the same grant with its TTL reset, instead of blocking on our
/// own unknown lease until it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retried_acquire_is_idempotent() {
    let h = RedisHarness::standalone().await;
    let backend = h.backend().await;
    let name = unique_name("idempotent-acquire");
    // Long enough that the shortened key cannot expire before the retry,
    // however loaded the machine.
    let request = req(&name, "a", Duration::from_secs(60));
    let first = backend.try_acquire(&request).await.unwrap().unwrap();
    let keys = backend.keys(&name);
    let _: () = h
        .inspector()
        .query(redis::cmd("PEXPIRE").arg(&keys.lock).arg(20_000))
        .await;
    let again = backend
        .try_acquire(&request)
        .await
        .unwrap()
        .expect("same lease id");
    assert_eq!(again.token, first.token);
    let pttl: i64 = h
        .inspector()
        .query(redis::cmd("PTTL").arg(&keys.lock))
        .await;
    assert!(pttl > 30_000, "the TTL restarts from the retry: {pttl}");
    let other = req(&name, "b", Duration::from_secs(2));
    assert!(backend.try_acquire(&other).await.unwrap().is_none());
    assert!(backend.release(&again).await.unwrap());
}

/// Script calls (`EVAL`, `EVALSHA`) the server has run so far.
fn script_calls(raw: &mut redis::Connection) -> u64 {
    let stats: String = redis::cmd("INFO").arg("commandstats").query(raw).unwrap();
    stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// `list()` on a standalone server reads its locks in chunks of 500, one
/// script call each (counted at a private server), not one per lock; it
/// reports every lease with its token and skips keys of the lock layout
/// that are not lockkit leases (a foreign string, a hash).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_reads_many_locks_per_script_call() {
    const LOCKS: usize = 1_100;
    let server = RedisServer::start(RedisConfig::default());
    let backend = lockkit_redis::connect(&server.url()).await.unwrap();
    let mut leases = Vec::new();
    for i in 0..LOCKS {
        let name = LockName::new(format!("list-many/{i:04}")).unwrap();
        leases.push(
            backend
                .try_acquire(&req(&name, "o", LONG))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let mut raw = server.raw();
    let foreign = backend
        .keys(&LockName::new("list-many/foreign").unwrap())
        .lock;
    let _: () = redis::cmd("SET")
        .arg(&foreign)
        .arg("not a lease")
        .query(&mut raw)
        .unwrap();
    let hash = backend.keys(&LockName::new("list-many/hash").unwrap()).lock;
    let _: () = redis::cmd("HSET")
        .arg(&hash)
        .arg("f")
        .arg("v")
        .query(&mut raw)
        .unwrap();

    let before = script_calls(&mut raw);
    let listed = backend.list().await.unwrap();
    let calls = script_calls(&mut raw) - before;
    assert_eq!(listed.len(), LOCKS, "every lease, no foreign key");
    for (info, lease) in listed.iter().zip(&leases) {
        assert_eq!(info.name, lease.name);
        assert_eq!(info.lease_id, lease.lease_id);
        assert_eq!(info.token, lease.token);
        assert!(info.expires_at.is_some());
    }
    assert!(
        calls <= 2 * LOCKS.div_ceil(500) as u64,
        "{calls} script calls for {LOCKS} locks"
    );
    for lease in &leases {
        assert!(backend.release(lease).await.unwrap());
    }
}

/// The server's clock in ms (`TIME`).
async fn server_ms(raw: &lockkit_tests::redis::Inspector) -> i64 {
    let (secs, micros): (i64, i64) = raw.query(&redis::cmd("TIME")).await;
    secs * 1000 + micros / 1000
}

/// A semaphore's permits are members of `:permits` scored by their expiry
/// on the server's clock, with their details in `:holders`; both keys
/// expire with the latest permit. A retry by lease id gets its grant back;
/// a member whose score has passed no longer counts (and is purged by the
/// next admission); requests with another count are refused both ways;
/// batched renewal mixes locks and permits; releases leave only the fence
/// counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn semaphore_permits_follow_the_documented_layout() {
    const TTL: Duration = Duration::from_secs(60);
    let h = RedisHarness::standalone().await;
    let backend = h.backend().await;
    let raw = h.inspector();
    let name = unique_name("semaphore-layout");
    let keys = backend.keys(&name);
    let permit = |owner: &str| req(&name, owner, TTL).with_permits(3).unwrap();
    let before = server_ms(raw).await;
    let mut leases = Vec::new();
    for i in 0..3 {
        let lease = backend
            .try_acquire(&permit(&format!("holder-{i}")))
            .await
            .unwrap()
            .expect("a free permit");
        assert_eq!(lease.permits, 3);
        leases.push(lease);
    }
    let after = server_ms(raw).await;
    assert!(
        backend
            .try_acquire(&permit("fourth"))
            .await
            .unwrap()
            .is_none(),
        "all three permits are held"
    );
    let members: Vec<(String, i64)> = raw
        .query(
            redis::cmd("ZRANGE")
                .arg(&keys.permits)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"),
        )
        .await;
    assert_eq!(members.len(), 3, "{members:?}");
    let ttl_ms = i64::try_from(TTL.as_millis()).unwrap();
    // Scores are whole server milliseconds: grants within the same one
    // tie and sort by member, so pair members with leases by lease id.
    let mut ids: Vec<&str> = members.iter().map(|(m, _)| m.as_str()).collect();
    let mut expected: Vec<&str> = leases.iter().map(|l| l.lease_id.as_str()).collect();
    ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ids, expected, "one member per granted lease");
    for (member, score) in &members {
        let lease = leases
            .iter()
            .find(|l| l.lease_id.as_str() == member)
            .expect("a granted lease");
        assert!(
            (before + ttl_ms..=after + ttl_ms).contains(score),
            "scored by its expiry on the server's clock: {score}"
        );
        let details: String = raw
            .query(redis::cmd("HGET").arg(&keys.holders).arg(member))
            .await;
        let fields: Vec<&str> = details.split('\n').collect();
        assert_eq!(fields[0], lease.token.to_string());
        assert_eq!(fields[2..], ["3", lease.owner.as_str()]);
    }
    let latest = members.iter().map(|(_, s)| *s).max().unwrap();
    for key in [&keys.permits, &keys.holders] {
        let at: i64 = raw.query(redis::cmd("PEXPIRETIME").arg(key)).await;
        assert_eq!(at, latest, "{key} expires with the latest permit");
    }
    let fence: u64 = raw.query(redis::cmd("GET").arg(&keys.fence)).await;
    assert_eq!(fence, leases[2].token.get());
    let lock: i64 = raw.query(redis::cmd("EXISTS").arg(&keys.lock)).await;
    assert_eq!(lock, 0, "a semaphore has no lock string");

    // A retry by lease id: the same grant, its expiry restarted.
    let _: () = raw
        .query(
            redis::cmd("ZADD")
                .arg(&keys.permits)
                .arg("XX")
                .arg(before + 20_000)
                .arg(leases[0].lease_id.as_str()),
        )
        .await;
    let mut retry = permit("holder-0");
    retry.lease_id = leases[0].lease_id.clone();
    let again = backend.try_acquire(&retry).await.unwrap().expect("regrant");
    assert_eq!(again.token, leases[0].token);
    let score: i64 = raw
        .query(
            redis::cmd("ZSCORE")
                .arg(&keys.permits)
                .arg(leases[0].lease_id.as_str()),
        )
        .await;
    assert!(score > before + 30_000, "the TTL restarts: {score}");

    for asked in [1, 2] {
        let err = backend
            .try_acquire(&req(&name, "other", TTL).with_permits(asked).unwrap())
            .await
            .expect_err("another count");
        assert!(
            matches!(err, Error::PermitsMismatch { held: 3, asked: a, .. } if a == asked),
            "{err:?}"
        );
    }

    // A permit whose score has passed is not held, and the next admission
    // removes it with its details.
    let now = server_ms(raw).await;
    let _: () = raw
        .query(
            redis::cmd("ZADD")
                .arg(&keys.permits)
                .arg("XX")
                .arg(now - 1)
                .arg(leases[1].lease_id.as_str()),
        )
        .await;
    let holders = backend.holders(&name).await.unwrap();
    assert_eq!(holders.len(), 2);
    assert!(holders.iter().all(|i| i.permits == 3));
    assert!(holders.windows(2).all(|w| w[0].token < w[1].token));
    let fourth = backend
        .try_acquire(&permit("fourth"))
        .await
        .unwrap()
        .expect("the expired permit is free");
    assert!(fourth.token > leases[2].token);
    let gone: i64 = raw
        .query(
            redis::cmd("HEXISTS")
                .arg(&keys.holders)
                .arg(leases[1].lease_id.as_str()),
        )
        .await;
    assert_eq!(gone, 0, "the expired permit's details went with it");
    assert!(
        backend.extend(&leases[1], TTL).await.is_err(),
        "an expired permit cannot be extended"
    );
    assert!(!backend.release(&leases[1]).await.unwrap());

    // Batched renewal of a lock's lease and two permits together.
    let other = unique_name("semaphore-layout-lock");
    let lock_lease = backend
        .try_acquire(&req(&other, "o", TTL))
        .await
        .unwrap()
        .unwrap();
    let batch = vec![
        (again.clone(), TTL),
        (lock_lease.clone(), TTL),
        (fourth.clone(), TTL),
    ];
    let renewed = backend.extend_many(&batch).await;
    assert_eq!(renewed.len(), 3);
    for (result, (lease, _)) in renewed.iter().zip(&batch) {
        assert_eq!(result.as_ref().expect("renewed").lease_id, lease.lease_id);
    }
    let err = backend
        .try_acquire(&req(&other, "p", TTL).with_permits(3).unwrap())
        .await
        .expect_err("a lock is held");
    assert!(
        matches!(
            err,
            Error::PermitsMismatch {
                held: 1,
                asked: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(backend.release(&lock_lease).await.unwrap());

    for lease in [&again, &leases[2], &fourth] {
        assert!(backend.release(lease).await.unwrap());
    }
    let exists: i64 = raw
        .query(
            redis::cmd("EXISTS")
                .arg(&keys.permits)
                .arg(&keys.holders)
                .arg(&keys.queue)
                .arg(&keys.waiters),
        )
        .await;
    assert_eq!(exists, 0, "only the fence counter stays");
}
