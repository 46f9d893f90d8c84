//! The etcd queue: FIFO with many waiters, waiters leaving the line, and
//! the re-check after waiting (etcd-io/etcd#11456).
#![cfg(feature = "etcd")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockkit_core::conformance::unique_name;
use lockkit_core::spi::AcquireRequest;
use lockkit_core::{Error, LockBackend, LockName};
use lockkit_tests::etcd::fixture::metric;
use lockkit_tests::etcd::{EtcdCluster, EtcdHarness};
use tokio::task::JoinSet;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(30);

fn req(name: &LockName, owner: &str) -> AcquireRequest {
    AcquireRequest::new(name.clone(), owner, TTL).expect("valid request")
}

/// Eight waiters that queue one after another (each waits until the one
/// before it has its key in etcd) are granted strictly in arrival order,
/// one at a time, with rising tokens; nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_waiters_are_granted_in_arrival_order() {
    const WAITERS: usize = 8;
    let h = EtcdHarness::start().await;
    let name = unique_name("etcd-fifo-8");
    let holder = h.backend().await;
    let held = holder
        .try_acquire(&req(&name, "holder"))
        .await
        .expect("try")
        .expect("free");
    let grants = Arc::new(Mutex::new(Vec::new()));
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..WAITERS {
        let client = h.backend().await;
        let (lock, grants, inside, overlaps) = (
            name.clone(),
            Arc::clone(&grants),
            Arc::clone(&inside),
            Arc::clone(&overlaps),
        );
        tasks.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let lease = client
                .acquire(&req(&lock, &format!("waiter-{i}")), Some(deadline))
                .await
                .expect("acquire");
            if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                overlaps.fetch_add(1, Ordering::SeqCst);
            }
            grants.lock().expect("grants").push((i, lease.token.get()));
            tokio::time::sleep(Duration::from_millis(5)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            assert!(client.release(&lease).await.expect("release"));
        });
        // The arrival order under test: waiter i is in line before i+1 asks.
        h.wait_for_keys(&name, i + 2).await;
    }
    let keys = h.raw_keys(&name).await;
    let revisions: Vec<i64> = keys.iter().map(|k| k.1).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "queue keys are ordered by create revision: {keys:?}"
    );
    assert!(holder.release(&held).await.expect("release"));
    while let Some(joined) = tasks.join_next().await {
        joined.expect("waiter panicked");
    }
    let grants = grants.lock().expect("grants").clone();
    let order: Vec<usize> = grants.iter().map(|g| g.0).collect();
    assert_eq!(order, (0..WAITERS).collect::<Vec<_>>(), "FIFO order");
    let tokens: Vec<u64> = grants.iter().map(|g| g.1).collect();
    assert!(tokens[0] > held.token.get());
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens rise: {tokens:?}"
    );
    // The token is the create revision of the waiter's key.
    let expected: Vec<u64> = revisions[1..]
        .iter()
        .map(|r| u64::try_from(*r).expect("positive"))
        .collect();
    assert_eq!(tokens, expected, "token = create revision of the key");
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    assert!(h.raw_keys(&name).await.is_empty(), "no keys left");
}

/// A waiter whose session lease is revoked while it waits never takes
/// the lock on the strength of its vanished key (the scenario of
/// etcd-io/etcd#11456): it queues again with a new key on a new session,
/// and is granted with that key's (higher) create revision once the
/// holder releases. Nothing was held yet, so nothing is reported lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiter_with_revoked_lease_queues_again_with_a_new_key() {
    let h = EtcdHarness::start().await;
    let name = unique_name("etcd-revoked-waiter");
    let holder = h.backend().await;
    let held = holder
        .try_acquire(&req(&name, "holder"))
        .await
        .expect("try")
        .expect("free");
    let waiter = h.backend().await;
    let task = {
        let (name, waiter) = (name.clone(), waiter.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            waiter.acquire(&req(&name, "waiter"), Some(deadline)).await
        })
    };
    let keys = h.wait_for_keys(&name, 2).await;
    let (holder_lease, waiter_lease) = (keys[0].2, keys[1].2);
    let vanished_revision = keys[1].1;
    assert_ne!(holder_lease, waiter_lease, "separate sessions");
    h.revoke(waiter_lease).await;
    h.wait_for_keys(&name, 1).await;
    assert!(!task.is_finished(), "the holder still holds");
    assert!(holder.release(&held).await.expect("release"));
    let lease = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the waiter must finish")
        .expect("waiter task")
        .expect("granted with a new key");
    assert!(
        i64::try_from(lease.token.get()).expect("fits") > vanished_revision,
        "not the vanished key's revision: {lease:?}"
    );
    let keys = h.raw_keys(&name).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_ne!(keys[0].2, waiter_lease, "on a new session lease");
    assert!(waiter.release(&lease).await.expect("release"));
    assert!(h.raw_keys(&name).await.is_empty());
}

/// The re-check alone: the waiter's key is deleted behind its back while
/// its session stays alive (nothing tells the waiter); when its
/// predecessor goes, the waiter re-reads its own key, finds it gone and —
/// instead of taking the lock on a key it no longer has — queues again
/// and is granted with a new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiter_rechecks_its_own_key_after_waking() {
    let h = EtcdHarness::start().await;
    let name = unique_name("etcd-recheck");
    let holder = h.backend().await;
    let held = holder
        .try_acquire(&req(&name, "holder"))
        .await
        .expect("try")
        .expect("free");
    let waiter = Arc::new(h.backend().await);
    let task = {
        let (name, waiter) = (name.clone(), Arc::clone(&waiter));
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            waiter.acquire(&req(&name, "waiter"), Some(deadline)).await
        })
    };
    let keys = h.wait_for_keys(&name, 2).await;
    let deleted_revision = keys[1].1;
    h.inspector()
        .client()
        .delete(keys[1].0.as_bytes(), None)
        .await
        .expect("delete the waiter's key");
    assert!(!task.is_finished(), "nothing has woken the waiter yet");
    assert!(holder.release(&held).await.expect("release"));
    let lease = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the waiter must finish")
        .expect("waiter task")
        .expect("granted with a new key");
    assert!(
        i64::try_from(lease.token.get()).expect("fits") > deleted_revision,
        "not the deleted key's revision: {lease:?}"
    );
    let info = holder.current(&name).await.expect("current").expect("held");
    assert_eq!(info.token, lease.token);
    assert!(waiter.release(&lease).await.expect("release"));
    assert!(h.raw_keys(&name).await.is_empty());
}

/// A waiter between the holder and another waiter times out: its key is
/// deleted, the waiter behind it moves up to watch the holder (it does not
/// take the lock while the holder holds) and gets the lock at the release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiter_leaving_the_middle_of_the_line_keeps_order() {
    let h = EtcdHarness::start().await;
    let name = unique_name("etcd-middle-leaves");
    let holder = h.backend().await;
    let held = holder
        .try_acquire(&req(&name, "holder"))
        .await
        .expect("try")
        .expect("free");
    let impatient = h.backend().await;
    let impatient_task = {
        let name = name.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_millis(1500);
            impatient
                .acquire(&req(&name, "impatient"), Some(deadline))
                .await
        })
    };
    h.wait_for_keys(&name, 2).await;
    let patient = h.backend().await;
    let patient_task = {
        let name = name.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            let lease = patient
                .acquire(&req(&name, "patient"), Some(deadline))
                .await
                .expect("acquire");
            (patient, lease)
        })
    };
    let keys = h.wait_for_keys(&name, 3).await;
    let result = impatient_task.await.expect("impatient task");
    assert!(
        matches!(result, Err(Error::Timeout { .. })),
        "expected a timeout: {result:?}"
    );
    let left = h.raw_keys(&name).await;
    assert_eq!(left.len(), 2, "the impatient key is gone: {left:?}");
    assert_eq!(left[0].0, keys[0].0);
    assert_eq!(left[1].0, keys[2].0);
    let info = h
        .inspector()
        .current(&name)
        .await
        .expect("current")
        .expect("held");
    assert_eq!(info.lease_id, held.lease_id, "the holder still holds");
    assert!(
        !patient_task.is_finished(),
        "the patient waiter still waits"
    );
    assert!(holder.release(&held).await.expect("release"));
    let (patient, lease) = tokio::time::timeout(Duration::from_secs(20), patient_task)
        .await
        .expect("granted after the release")
        .expect("patient task");
    assert!(lease.token > held.token);
    assert!(patient.release(&lease).await.expect("release"));
    assert!(h.raw_keys(&name).await.is_empty());
}

/// Waiters that time out or are cancelled leave no key and no watch on
/// the server (counted with etcd's own watcher gauge on a private member).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timed_out_and_cancelled_waiters_leave_no_watches() {
    const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";
    let server = EtcdCluster::start(1, 500);
    let port = server.members()[0].client_port;
    let h = EtcdHarness::with_url(server.url()).await;
    let name = unique_name("etcd-no-watch-leftovers");
    let before = metric(port, WATCHERS);
    let holder = h.backend().await;
    let held = holder
        .try_acquire(&req(&name, "holder"))
        .await
        .expect("try")
        .expect("free");
    // The holder's backend watches its own key.
    let baseline = before + 1.0;
    wait_for_watchers(port, |w| w == baseline, "the holder watches its key").await;
    let mut timed_out = Vec::new();
    let mut cancelled = Vec::new();
    for i in 0..6 {
        let client = h.backend().await;
        let lock = name.clone();
        let task = tokio::spawn(async move {
            let patience = if i % 2 == 0 { 1500 } else { 60_000 };
            let deadline = Instant::now() + Duration::from_millis(patience);
            client.acquire(&req(&lock, "waiter"), Some(deadline)).await
        });
        if i % 2 == 0 {
            timed_out.push(task);
        } else {
            cancelled.push(task);
        }
        h.wait_for_keys(&name, i + 2).await;
    }
    wait_for_watchers(port, |w| w == baseline + 6.0, "each waiter watches one key").await;
    for task in &cancelled {
        task.abort();
    }
    for task in timed_out {
        let result = task.await.expect("waiter task");
        assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    }
    for task in cancelled {
        assert!(task.await.is_err_and(|e| e.is_cancelled()));
    }
    h.wait_for_keys(&name, 1).await;
    wait_for_watchers(port, |w| w == baseline, "waiters' watches are gone").await;
    assert!(holder.release(&held).await.expect("release"));
    wait_for_watchers(port, |w| w == before, "the holder's watch is gone").await;
    assert!(h.raw_keys(&name).await.is_empty());
}

/// Waits (up to 10 s) until etcd's watcher gauge satisfies `ok`.
async fn wait_for_watchers(port: u16, ok: impl Fn(f64) -> bool, what: &str) {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let watchers = metric(port, "etcd_debugging_mvcc_watcher_total");
        if ok(watchers) {
            return;
        }
        assert!(Instant::now() < give_up, "{what}: {watchers} watchers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A semaphore in etcd's key space: N holders have one key each (the
/// value carries the permit count), the (N+1)-th request waits with its
/// key present behind them, and it is admitted when the *oldest* holder
/// releases — not its predecessor in the line, which is the wake-up a
/// single predecessor watch would miss. Tokens are the keys' create
/// revisions, distinct and increasing; nothing is left after the releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn semaphore_waiter_is_admitted_when_a_holder_before_its_predecessor_leaves() {
    const N: u32 = 3;
    let h = EtcdHarness::start().await;
    let name = unique_name("etcd-semaphore-keys");
    let permit = |owner: &str| req(&name, owner).with_permits(N).expect("valid count");
    let mut holders = Vec::new();
    for i in 0..N {
        let client = h.backend().await;
        let lease = client
            .try_acquire(&permit(&format!("holder-{i}")))
            .await
            .expect("try")
            .expect("a permit is free");
        holders.push((client, lease));
    }
    let keys = h.raw_entries(&name).await;
    assert_eq!(keys.len(), N as usize, "one key per permit: {keys:?}");
    for (key, (_, lease)) in keys.iter().zip(&holders) {
        assert_eq!(
            u64::try_from(key.create_revision).expect("positive"),
            lease.token.get(),
            "token = create revision of the holder's key"
        );
        assert_eq!(key.permits(), N as usize, "the value carries N: {key:?}");
        assert!(key.value.ends_with(&lease.owner), "{key:?}");
    }
    let tokens: Vec<u64> = holders.iter().map(|(_, l)| l.token.get()).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");

    let waiter = h.backend().await;
    let task = {
        let (waiter, req) = (waiter.clone(), permit("waiter"));
        tokio::spawn(async move {
            waiter
                .acquire(&req, Some(Instant::now() + Duration::from_secs(60)))
                .await
        })
    };
    let keys = h.wait_for_keys(&name, N as usize + 1).await;
    let waiting = keys[N as usize].clone();
    assert!(
        waiting.1 > keys[N as usize - 1].1,
        "the waiter's key is behind every holder: {keys:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !task.is_finished(),
        "no permit for the waiter while all {N} are held"
    );
    assert_eq!(h.raw_keys(&name).await.len(), N as usize + 1);

    // The oldest holder leaves; the waiter's predecessor (the newest
    // holder) stays.
    let (client, oldest) = holders.remove(0);
    assert!(client.release(&oldest).await.expect("release"));
    let lease = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the waiter is admitted when any holder ahead leaves")
        .expect("waiter task")
        .expect("granted");
    assert_eq!(
        i64::try_from(lease.token.get()).expect("fits"),
        waiting.1,
        "granted on the key it waited with"
    );
    assert!(lease.token.get() > *tokens.last().expect("tokens"));
    let keys = h.raw_keys(&name).await;
    assert_eq!(keys.len(), N as usize, "{keys:?}");
    let mut expected: Vec<String> = holders
        .iter()
        .map(|(_, l)| l.lease_id.to_string())
        .chain([lease.lease_id.to_string()])
        .collect();
    let mut reported: Vec<String> = h
        .inspector()
        .holders(&name)
        .await
        .expect("holders")
        .into_iter()
        .map(|info| {
            assert_eq!(info.permits, N);
            info.lease_id.to_string()
        })
        .collect();
    expected.sort();
    reported.sort();
    assert_eq!(reported, expected, "the other holders keep their permits");
    for (client, lease) in &holders {
        assert!(client.release(lease).await.expect("release"));
    }
    assert!(waiter.release(&lease).await.expect("release"));
    assert!(h.raw_keys(&name).await.is_empty(), "no keys left");
}

/// Round trips of uncontended grants, counted with etcd's own gRPC
/// counters on a private member: a lock (N = 1) takes one transaction to
/// acquire and one to release, as before semaphores; a semaphore's first
/// permit the same; a later permit of a partly held semaphore one more
/// (the conditional put after the read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncontended_grants_take_the_minimum_round_trips() {
    let server = EtcdCluster::start(1, 500);
    let port = server.members()[0].client_port;
    let h = EtcdHarness::with_url(server.url()).await;
    let client = h.backend().await;
    let calls = |method: &str| {
        metric(
            port,
            &format!(
                "grpc_server_handled_total{{grpc_code=\"OK\",grpc_method=\"{method}\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}}"
            ),
        )
    };
    // Warm up: the session lease is granted once per TTL.
    let name = unique_name("etcd-round-trips");
    let warm = client
        .try_acquire(&req(&name, "warm"))
        .await
        .expect("try")
        .expect("free");
    assert!(client.release(&warm).await.expect("release"));
    let mut cases = Vec::new();
    for (permits, held_before, expected) in [(1, 0, 1.0), (3, 0, 1.0), (3, 1, 2.0)] {
        let name = unique_name("etcd-round-trips");
        let mut held = Vec::new();
        for i in 0..held_before {
            let r = req(&name, &format!("h{i}"))
                .with_permits(permits)
                .expect("n");
            held.push(client.try_acquire(&r).await.expect("try").expect("free"));
        }
        let (txn, range) = (calls("Txn"), calls("Range"));
        let r = req(&name, "measured").with_permits(permits).expect("n");
        let lease = client.try_acquire(&r).await.expect("try").expect("free");
        let acquire = (calls("Txn") - txn, calls("Range") - range);
        let txn = calls("Txn");
        assert!(client.release(&lease).await.expect("release"));
        let release = calls("Txn") - txn;
        cases.push((permits, held_before, acquire, release));
        assert_eq!(
            acquire,
            (expected, 0.0),
            "N = {permits}, {held_before} held"
        );
        assert!(
            (release - 1.0).abs() < f64::EPSILON,
            "one release round trip"
        );
        for lease in &held {
            assert!(client.release(lease).await.expect("release"));
        }
    }
    eprintln!("(N, held before, (txns, ranges) to acquire, txns to release): {cases:?}");
}
