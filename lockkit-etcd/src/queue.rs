//! Waiting in line: the FIFO queue of keys ordered by create revision.
//!
//! A name admits N holders (N = 1 for a lock, N > 1 for a semaphore): the
//! first N keys by create revision hold it. A key only moves up the line
//! (newer keys go behind it), so once one of the first N, a key holds
//! until it is deleted.
//!
//! 1. **Join.** One transaction puts our key (on the session lease) and
//!    reads the two newest keys of the name with the count of its keys
//!    (and, for N > 1, the first N keys). Fewer than N keys ahead of
//!    ours → granted. Otherwise we wait; the key before ours is our
//!    predecessor. A key ahead with another permit count fails the
//!    request with `PermitsMismatch` (our key is deleted).
//! 2. **Wait.** N = 1: watch only the predecessor's key for its deletion
//!    (nobody else wakes up: no thundering herd). N > 1: any of the keys
//!    ahead may go, so a single predecessor watch could miss the wake-up;
//!    watch the name's whole prefix for deletions (with the deleted key's
//!    previous version, so only keys older than ours count) and count
//!    down the keys ahead until fewer than N remain. Either watch starts
//!    at the server's current revision; the gap since the revision at
//!    which we looked is closed with one read.
//! 3. **Re-check.** One transaction: if our key still exists with our
//!    create revision *and* fewer than N keys of the name are older (for
//!    N = 1: none, as a compare; for N > 1: read in the same transaction,
//!    every key ahead checked for the same permit count), we hold the
//!    lock (the same transaction stamps the grant time into our value);
//!    otherwise it reads our key and what is ahead of it. If our key is
//!    gone — its lease expired or was revoked while we waited, or an admin
//!    removed it — we fail instead of believing we hold the lock (the bug
//!    Jepsen found in etcd's own lock, etcd-io/etcd#11456). If keys remain
//!    ahead (a waiter before us left), we wait again.
//!
//! The core's acquisition driver runs these steps ([`LockQueue`]); a
//! timeout, an error or a dropped future deletes our key through
//! `LockBackend::abandon`, so nobody waits behind a key whose owner left.
//! A key that vanished while we waited is joined again rather than
//! reported as a lost lease (nothing was held yet).

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, TxnResponse, WatchFilterType, WatchOptions, WatchResponse,
};
use lockkit_core::spi::AcquireRequest;
use lockkit_core::spi::{LockQueue, QueuePlace, until};
use lockkit_core::{Error, Lease, Result};
use tokio::time::Instant;

use crate::backend::EtcdBackend;
use crate::error::{bounded, malformed};
use crate::keys;
use crate::session::Session;
use crate::shared::{Shared, check_permits, delete_txn, header_revision, ttl_secs};

/// Where a request stands after one transaction.
enum Step {
    /// Our key is one of the first N: the lock is ours, with this create
    /// revision.
    Granted(i64),
    /// Our key exists with this create revision; look again.
    Known(i64),
    /// Our key waits, with this create revision.
    Queued { revision: i64, wait: Wait },
    /// Our key is gone.
    Vanished,
}

/// What a waiting request waits for.
#[derive(Debug, Clone)]
enum Wait {
    /// N = 1: the deletion of the key just before ours, seen at `seen_at`.
    Predecessor { key: Vec<u8>, seen_at: i64 },
    /// N > 1: `ahead` keys older than ours, counted at `seen_at`, until
    /// fewer than N remain.
    Ahead { ahead: usize, seen_at: i64 },
}

/// How a wait ended.
enum Woken {
    /// What we waited for happened (or may have): step again.
    Deleted,
    Retry,
    Deadline,
    SessionLost,
}

/// A queued request's state between the driver's steps.
struct EtcdPlace {
    /// The session lease our key lives on.
    session: Arc<Session>,
    /// Our key's create revision, once known.
    revision: Option<i64>,
    /// What to wait for before the next step.
    wait: Option<Wait>,
}

/// The permit count as a length.
fn permits_len(req: &AcquireRequest) -> usize {
    usize::try_from(req.permits).unwrap_or(usize::MAX)
}

#[async_trait]
impl LockQueue for EtcdBackend {
    async fn step(
        &self,
        req: &AcquireRequest,
        place: &mut Option<QueuePlace>,
    ) -> Result<Option<Lease>> {
        let shared = self.shared();
        let secs = ttl_secs(req.ttl);
        if place.is_none() {
            *place = Some(QueuePlace::new(EtcdPlace {
                session: shared.session_for(secs).await?,
                revision: None,
                wait: None,
            }));
        }
        let Some(p) = place.as_mut().and_then(|p| p.get_mut::<EtcdPlace>()) else {
            return Err(malformed("queue place of another backend"));
        };
        if p.session.is_lost() {
            // Our key (if any) died with its session: join again on a
            // fresh one.
            p.session = shared.session_for(secs).await?;
            p.revision = None;
        }
        p.wait = None;
        let key = shared.layout.key(&req.name, &req.lease_id);
        let prefix = shared.layout.name_prefix(&req.name);
        let sent_at = Instant::now();
        let step = match p.revision {
            None => join(shared, req, &key, &prefix, &p.session).await,
            Some(revision) => recheck(shared, req, &key, &prefix, &p.session, revision).await,
        };
        let step = match step {
            // The session lease vanished under a join: the next step uses a
            // fresh one (`session_for` replaces a lost session).
            Err(err) if p.revision.is_none() && shared.lease_gone(&err, &p.session) => {
                return Ok(None);
            }
            Err(err @ Error::PermitsMismatch { .. }) => {
                // Our key must not stay in line under a count the others
                // do not share (the driver abandons the request too).
                shared.held.remove(&key);
                if let Err(delete) = shared
                    .txn(delete_txn(&key), "leaving a mismatched queue")
                    .await
                {
                    tracing::debug!(lock = %req.name, error = %delete, "deleting a mismatched key failed; the driver abandons it");
                }
                return Err(err);
            }
            other => other?,
        };
        match step {
            Step::Granted(revision) => {
                let session = Arc::clone(&p.session);
                crate::held::grant(shared, req, key, revision, session, sent_at).map(Some)
            }
            Step::Known(revision) => {
                p.revision = Some(revision);
                Ok(None)
            }
            Step::Queued { revision, wait } => {
                p.revision = Some(revision);
                p.wait = Some(wait);
                Ok(None)
            }
            // Our key is gone while we waited (its lease expired or was
            // revoked, an admin deleted it): never believe we hold the lock
            // (etcd-io/etcd#11456) — queue again.
            Step::Vanished => {
                tracing::debug!(lock = %req.name, "our queued key vanished; joining again");
                p.revision = None;
                Ok(None)
            }
        }
    }

    async fn wait_turn(
        &self,
        req: &AcquireRequest,
        place: &mut QueuePlace,
        until: Option<Instant>,
    ) -> Result<()> {
        let Some(p) = place.get_mut::<EtcdPlace>() else {
            return Ok(());
        };
        let Some(wait) = p.wait.take() else {
            // Nothing to wait for: step again at once.
            return Ok(());
        };
        let shared = self.shared();
        let woken = match (wait, p.revision) {
            (Wait::Predecessor { key, seen_at }, _) => {
                wait_for_deletion(shared, &key, seen_at, until, &p.session).await
            }
            (Wait::Ahead { ahead, seen_at }, Some(revision)) => {
                let line = Line {
                    prefix: shared.layout.name_prefix(&req.name),
                    own_key: shared.layout.key(&req.name, &req.lease_id),
                    revision,
                    permits: permits_len(req),
                };
                wait_for_fewer_ahead(shared, &line, ahead, seen_at, until, &p.session).await
            }
            (Wait::Ahead { .. }, None) => Woken::Deleted,
        };
        match woken {
            Woken::Deleted | Woken::Deadline | Woken::SessionLost => Ok(()),
            Woken::Retry => Err(Error::transient(
                crate::error::KIND,
                "the watch on the keys ahead of ours broke",
                None,
            )),
        }
    }
}

fn get_responses(resp: &TxnResponse) -> Vec<etcd_client::GetResponse> {
    resp.op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get),
            _ => None,
        })
        .collect()
}

/// Step 1: put our key (if it is not there yet) and find our place.
async fn join(
    shared: &Shared,
    req: &AcquireRequest,
    key: &str,
    prefix: &str,
    session: &Session,
) -> Result<Step> {
    let permits = permits_len(req);
    let value = keys::value(&req.owner, SystemTime::now(), req.permits);
    let newest_two = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(2);
    let mut then = vec![
        TxnOp::put(key, value, Some(PutOptions::new().with_lease(session.id()))),
        TxnOp::get(prefix, Some(newest_two)),
    ];
    if permits > 1 {
        // The first N keys: every key ahead of ours if we are admitted.
        let first_n = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(i64::from(req.permits));
        then.push(TxnOp::get(prefix, Some(first_n)));
    }
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then(then)
        .or_else([TxnOp::get(key, None)]);
    let resp = shared.txn(txn, "joining the queue").await?;
    let revision = header_revision(&resp)?;
    let mut gets = get_responses(&resp).into_iter();
    let mut newest = gets
        .next()
        .ok_or_else(|| malformed("missing range result"))?;
    if !resp.succeeded() {
        // Our key already existed (a retry after a lost answer).
        return Ok(newest
            .kvs()
            .first()
            .map_or(Step::Vanished, |kv| Step::Known(kv.create_revision())));
    }
    // Every key of the name was created before ours, in this transaction.
    let ahead = usize::try_from(newest.count().saturating_sub(1)).unwrap_or(usize::MAX);
    let kvs = newest.take_kvs();
    let (Some(mine), before) = (kvs.first(), kvs.get(1)) else {
        return Ok(Step::Known(revision));
    };
    if mine.key() != key.as_bytes() {
        return Ok(Step::Known(revision));
    }
    // The predecessor must agree on the count, and so must every key
    // ahead when we are admitted (the first N hold all of them).
    check_permits(req, before)?;
    if let Some(first) = gets.next() {
        check_permits(
            req,
            first.kvs().iter().filter(|kv| kv.key() != key.as_bytes()),
        )?;
    }
    if ahead < permits {
        return Ok(Step::Granted(revision));
    }
    let wait = match before {
        Some(before) if permits == 1 => Wait::Predecessor {
            key: before.key().to_vec(),
            seen_at: revision,
        },
        _ => Wait::Ahead {
            ahead,
            seen_at: revision,
        },
    };
    Ok(Step::Queued { revision, wait })
}

/// Step 3: are we one of the first N (and still there)?
async fn recheck(
    shared: &Shared,
    req: &AcquireRequest,
    key: &str,
    prefix: &str,
    session: &Session,
    revision: i64,
) -> Result<Step> {
    if req.permits == 1 {
        recheck_lock(shared, req, key, prefix, session, revision).await
    } else {
        recheck_semaphore(shared, req, key, prefix, session, revision).await
    }
}

/// Step 3 for N = 1: no key older than ours, as a compare.
async fn recheck_lock(
    shared: &Shared,
    req: &AcquireRequest,
    key: &str,
    prefix: &str,
    session: &Session,
    revision: i64,
) -> Result<Step> {
    let older = GetOptions::new()
        .with_prefix()
        .with_max_create_revision(revision - 1)
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(1);
    let value = keys::value(&req.owner, SystemTime::now(), req.permits);
    let txn = Txn::new()
        .when([
            Compare::create_revision(key, CompareOp::Equal, revision),
            // Every key of the name is at least as new as ours.
            Compare::create_revision(prefix, CompareOp::Greater, revision - 1).with_prefix(),
        ])
        .and_then([TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(session.id())),
        )])
        .or_else([TxnOp::get(key, None), TxnOp::get(prefix, Some(older))]);
    let resp = shared.txn(txn, "checking the queue").await?;
    if resp.succeeded() {
        return Ok(Step::Granted(revision));
    }
    let seen_at = header_revision(&resp)?;
    let mut gets = get_responses(&resp).into_iter();
    let mine = gets
        .next()
        .ok_or_else(|| malformed("missing own key result"))?;
    if !mine.kvs().iter().any(|kv| kv.create_revision() == revision) {
        return Ok(Step::Vanished);
    }
    let older = gets
        .next()
        .ok_or_else(|| malformed("missing range result"))?;
    Ok(match older.kvs().first() {
        Some(before) => Step::Queued {
            revision,
            wait: Wait::Predecessor {
                key: before.key().to_vec(),
                seen_at,
            },
        },
        None => Step::Known(revision),
    })
}

/// Step 3 for N > 1: if our key still exists, stamp it and read every key
/// ahead of it in the same transaction; fewer than N (all with our permit
/// count) → granted. A key only moves up the line, so what this read
/// shows stays true while our key lives.
async fn recheck_semaphore(
    shared: &Shared,
    req: &AcquireRequest,
    key: &str,
    prefix: &str,
    session: &Session,
    revision: i64,
) -> Result<Step> {
    let value = keys::value(&req.owner, SystemTime::now(), req.permits);
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, revision)])
        .and_then([
            TxnOp::put(key, value, Some(PutOptions::new().with_lease(session.id()))),
            TxnOp::get(prefix, Some(ahead_of(revision))),
        ]);
    let resp = shared.txn(txn, "checking the queue").await?;
    if !resp.succeeded() {
        return Ok(Step::Vanished);
    }
    let seen_at = header_revision(&resp)?;
    let ahead = get_responses(&resp)
        .into_iter()
        .next()
        .ok_or_else(|| malformed("missing range result"))?;
    let ahead: &[KeyValue] = ahead.kvs();
    if ahead.len() < permits_len(req) {
        check_permits(req, ahead)?;
        return Ok(Step::Granted(revision));
    }
    Ok(Step::Queued {
        revision,
        wait: Wait::Ahead {
            ahead: ahead.len(),
            seen_at,
        },
    })
}

/// Every key of a name created before `revision` (ours), oldest first.
fn ahead_of(revision: i64) -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_max_create_revision(revision - 1)
        .with_sort(SortTarget::Create, SortOrder::Ascend)
}

/// Whether a watch message reports a deletion.
fn has_deletion(resp: &WatchResponse) -> bool {
    resp.events()
        .iter()
        .any(|e| e.event_type() == EventType::Delete)
}

/// Step 2 for N = 1: waits until `predecessor` is deleted (after
/// `seen_at`).
///
/// The watch starts at the server's current revision, not at
/// `seen_at + 1`: etcd puts a watch whose start revision is already in the
/// past into its *unsynced* group, which it catches up only every 100 ms —
/// under contention (other keys written since `seen_at`) every wake-up
/// would come up to 100 ms late. A deletion between `seen_at` and the
/// watch's creation is caught instead by one read of the predecessor,
/// made only when the revision moved in that gap (ARCHITECTURE.md §6).
async fn wait_for_deletion(
    shared: &Shared,
    predecessor: &[u8],
    seen_at: i64,
    deadline: Option<Instant>,
    session: &Session,
) -> Woken {
    let options = WatchOptions::new().with_filters([WatchFilterType::NoPut]);
    let mut watch_client = shared.client.watch_client();
    let wait = async {
        let mut stream = match bounded(
            shared.request_timeout,
            "watching the predecessor",
            watch_client.watch(predecessor.to_vec(), Some(options)),
        )
        .await
        {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(error = %err, "opening a watch failed");
                return Woken::Retry;
            }
        };
        // The first message confirms the watch and carries its revision.
        let created_at = match stream.message().await {
            Ok(Some(resp)) if resp.created() && !resp.canceled() => {
                resp.header().map_or(i64::MAX, |h| h.revision())
            }
            Ok(Some(resp)) if has_deletion(&resp) => return Woken::Deleted,
            Ok(_) => return Woken::Retry,
            Err(err) => {
                tracing::debug!(error = %err, "watch failed");
                return Woken::Retry;
            }
        };
        if created_at > seen_at {
            let Ok(key) = std::str::from_utf8(predecessor) else {
                return Woken::Retry;
            };
            match shared
                .get(
                    key,
                    GetOptions::new().with_count_only(),
                    "reading the predecessor",
                )
                .await
            {
                Ok(resp) if resp.count() == 0 => return Woken::Deleted,
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(error = %err, "reading the predecessor failed");
                    return Woken::Retry;
                }
            }
        }
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if has_deletion(&resp) {
                        return Woken::Deleted;
                    }
                    if resp.canceled() {
                        return Woken::Retry;
                    }
                }
                Ok(None) => return Woken::Retry,
                Err(err) => {
                    tracing::debug!(error = %err, "watch failed");
                    return Woken::Retry;
                }
            }
        }
    };
    tokio::select! {
        biased;
        () = session.lost().cancelled() => Woken::SessionLost,
        woken = until(deadline, wait) => woken.unwrap_or(Woken::Deadline),
    }
}

/// A waiting semaphore request's place in its line.
struct Line {
    /// The name's key prefix.
    prefix: String,
    /// Our key.
    own_key: String,
    /// Our key's create revision.
    revision: i64,
    /// The permit count N.
    permits: usize,
}

impl Line {
    /// Counts down `ahead` for the deletions in `resp` of keys older than
    /// ours; `true` when we may be admitted (fewer than N ahead) or our own
    /// key went (the re-check finds out).
    fn count_down(&self, resp: &WatchResponse, ahead: &mut usize) -> bool {
        for event in resp.events() {
            if event.event_type() != EventType::Delete {
                continue;
            }
            if event
                .kv()
                .is_some_and(|kv| kv.key() == self.own_key.as_bytes())
            {
                return true;
            }
            // Without the deleted key's previous version we cannot tell
            // where it stood: count it (an early re-check is harmless).
            let older = event
                .prev_kv()
                .is_none_or(|kv| kv.create_revision() < self.revision);
            if older {
                *ahead = ahead.saturating_sub(1);
            }
        }
        *ahead < self.permits
    }
}

/// Step 2 for N > 1: waits until fewer than N keys are ahead of ours
/// (`ahead` of them at `seen_at`). One watch on the name's whole prefix,
/// deletions only, with each deleted key's previous version, so every
/// deletion ahead of us is seen whichever key it is (a predecessor watch
/// would miss a holder further ahead leaving). It starts at the current
/// revision (see [`wait_for_deletion`]); when the revision moved since
/// `seen_at`, one read counts the keys ahead again. Deletions in both that
/// read and the watch are counted twice, which only wakes us early.
async fn wait_for_fewer_ahead(
    shared: &Shared,
    line: &Line,
    mut ahead: usize,
    seen_at: i64,
    deadline: Option<Instant>,
    session: &Session,
) -> Woken {
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_filters([WatchFilterType::NoPut]);
    let mut watch_client = shared.client.watch_client();
    let wait = async {
        let mut stream = match bounded(
            shared.request_timeout,
            "watching the keys ahead",
            watch_client.watch(line.prefix.as_str(), Some(options)),
        )
        .await
        {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(error = %err, "opening a watch failed");
                return Woken::Retry;
            }
        };
        let created_at = match stream.message().await {
            Ok(Some(resp)) if resp.created() && !resp.canceled() => {
                if line.count_down(&resp, &mut ahead) {
                    return Woken::Deleted;
                }
                resp.header().map_or(i64::MAX, |h| h.revision())
            }
            Ok(Some(resp)) if has_deletion(&resp) => return Woken::Deleted,
            Ok(_) => return Woken::Retry,
            Err(err) => {
                tracing::debug!(error = %err, "watch failed");
                return Woken::Retry;
            }
        };
        if created_at > seen_at {
            let options = ahead_of(line.revision).with_keys_only();
            match shared
                .get(&line.prefix, options, "counting the keys ahead")
                .await
            {
                Ok(resp) => {
                    ahead = resp.kvs().len();
                    if ahead < line.permits {
                        return Woken::Deleted;
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "counting the keys ahead failed");
                    return Woken::Retry;
                }
            }
        }
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if line.count_down(&resp, &mut ahead) {
                        return Woken::Deleted;
                    }
                    if resp.canceled() {
                        return Woken::Retry;
                    }
                }
                Ok(None) => return Woken::Retry,
                Err(err) => {
                    tracing::debug!(error = %err, "watch failed");
                    return Woken::Retry;
                }
            }
        }
    };
    tokio::select! {
        biased;
        () = session.lost().cancelled() => Woken::SessionLost,
        woken = until(deadline, wait) => woken.unwrap_or(Woken::Deadline),
    }
}
