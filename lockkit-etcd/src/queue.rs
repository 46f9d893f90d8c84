//! Waiting in line: the FIFO queue of keys ordered by create revision.
//!
//! 1. **Join.** One transaction puts our key (on the session lease) and
//!    reads the two newest keys of the name. Alone → granted. Otherwise
//!    the key before ours is our predecessor.
//! 2. **Wait.** Watch only the predecessor's key for its deletion, from
//!    the revision at which we saw it (so a deletion in between is not
//!    missed). Nobody else wakes up: no thundering herd.
//! 3. **Re-check.** One transaction: if our key still exists with our
//!    create revision *and* no key of the name is older, we hold the lock
//!    (the same transaction stamps the grant time into our value);
//!    otherwise it reads our key and the next older key. If our key is
//!    gone — its lease expired or was revoked while we waited, or an admin
//!    removed it — we fail instead of believing we hold the lock (the bug
//!    Jepsen found in etcd's own lock, etcd-io/etcd#11456). If an older key
//!    remains (a waiter before us left), we watch that one.
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
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchFilterType, WatchOptions,
};
use lockkit_core::spi::AcquireRequest;
use lockkit_core::spi::{LockQueue, QueuePlace, until};
use lockkit_core::{Error, Lease, Result};
use tokio::time::Instant;

use crate::backend::EtcdBackend;
use crate::error::{bounded, malformed};
use crate::keys;
use crate::session::Session;
use crate::shared::{Shared, header_revision, ttl_secs};

/// Where a request stands after one transaction.
enum Step {
    /// Our key is the oldest: the lock is ours, with this create revision.
    Granted(i64),
    /// Our key exists with this create revision; look again.
    Known(i64),
    /// Our key waits behind `predecessor`, seen at `seen_at`.
    Queued {
        revision: i64,
        predecessor: Vec<u8>,
        seen_at: i64,
    },
    /// Our key is gone.
    Vanished,
}

/// How a wait for the predecessor's deletion ended.
enum Woken {
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
    /// The key to wait for and the revision at which it was seen.
    predecessor: Option<(Vec<u8>, i64)>,
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
                predecessor: None,
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
        p.predecessor = None;
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
            Step::Queued {
                revision,
                predecessor,
                seen_at,
            } => {
                p.revision = Some(revision);
                p.predecessor = Some((predecessor, seen_at));
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
        _req: &AcquireRequest,
        place: &mut QueuePlace,
        until: Option<Instant>,
    ) -> Result<()> {
        let Some(p) = place.get_mut::<EtcdPlace>() else {
            return Ok(());
        };
        let Some((predecessor, seen_at)) = p.predecessor.take() else {
            // Nothing to wait for: step again at once.
            return Ok(());
        };
        match wait_for_deletion(self.shared(), &predecessor, seen_at, until, &p.session).await {
            Woken::Deleted | Woken::Deadline | Woken::SessionLost => Ok(()),
            Woken::Retry => Err(Error::transient(
                crate::error::KIND,
                "the watch on the key before ours broke",
                None,
            )),
        }
    }
}

fn get_responses(resp: &TxnResponse) -> Vec<Vec<etcd_client::KeyValue>> {
    resp.op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(mut get) => Some(get.take_kvs()),
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
    let value = keys::value(&req.owner, SystemTime::now());
    let newest_two = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(2);
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(key, value, Some(PutOptions::new().with_lease(session.id()))),
            TxnOp::get(prefix, Some(newest_two)),
        ])
        .or_else([TxnOp::get(key, None)]);
    let resp = shared.txn(txn, "joining the queue").await?;
    let revision = header_revision(&resp)?;
    let mut gets = get_responses(&resp).into_iter();
    let kvs = gets
        .next()
        .ok_or_else(|| malformed("missing range result"))?;
    if !resp.succeeded() {
        // Our key already existed (a retry after a lost answer).
        return Ok(kvs
            .first()
            .map_or(Step::Vanished, |kv| Step::Known(kv.create_revision())));
    }
    match kvs.as_slice() {
        [mine] if mine.key() == key.as_bytes() => Ok(Step::Granted(revision)),
        [mine, before] if mine.key() == key.as_bytes() => Ok(Step::Queued {
            revision,
            predecessor: before.key().to_vec(),
            seen_at: revision,
        }),
        _ => Ok(Step::Known(revision)),
    }
}

/// Step 3: are we first (and still there)?
async fn recheck(
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
    let value = keys::value(&req.owner, SystemTime::now());
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
    if !mine.iter().any(|kv| kv.create_revision() == revision) {
        return Ok(Step::Vanished);
    }
    let older = gets
        .next()
        .ok_or_else(|| malformed("missing range result"))?;
    Ok(match older.first() {
        Some(before) => Step::Queued {
            revision,
            predecessor: before.key().to_vec(),
            seen_at,
        },
        None => Step::Known(revision),
    })
}

/// Step 2: waits until `predecessor` is deleted (after `seen_at`).
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
            Ok(Some(resp))
                if resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete) =>
            {
                return Woken::Deleted;
            }
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
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
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
