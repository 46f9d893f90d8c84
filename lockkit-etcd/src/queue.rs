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
//! A timeout, an error or a dropped future deletes our key
//! ([`Ticket`]), so nobody waits behind a key whose owner left.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchFilterType, WatchOptions,
};
use lockkit_core::wait::PollPolicy;
use lockkit_core::{AcquireRequest, Error, Lease, LostReason, Result};
use tokio::time::Instant;

use crate::backend::{Shared, header_revision, ttl_secs};
use crate::error::{bounded, malformed};
use crate::keys;
use crate::session::Session;

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

/// Our key while we wait; deletes it unless [`disarm`](Self::disarm)ed.
struct Ticket {
    shared: Arc<Shared>,
    key: String,
    revision: Option<i64>,
    session: Arc<Session>,
    armed: bool,
}

impl Ticket {
    fn disarm(&mut self) {
        self.armed = false;
    }

    /// Deletes the key now (bounded by the request timeout); if that fails,
    /// keeps trying in the background.
    async fn withdraw(mut self) {
        self.armed = false;
        let txn = delete_txn(&self.key, self.revision);
        if self.shared.txn(txn, "leaving the queue").await.is_err() {
            self.spawn_delete();
        }
    }

    fn spawn_delete(&self) {
        let (shared, key, revision, session) = (
            Arc::clone(&self.shared),
            self.key.clone(),
            self.revision,
            Arc::clone(&self.session),
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { shared.delete_eventually(key, revision, session).await });
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.armed {
            self.spawn_delete();
        }
    }
}

fn delete_txn(key: &str, revision: Option<i64>) -> Txn {
    match revision {
        Some(rev) => Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, rev)])
            .and_then([TxnOp::delete(key, None)]),
        None => Txn::new().and_then([TxnOp::delete(key, None)]),
    }
}

/// Waits in line for `req.name` until granted or `deadline`.
pub(crate) async fn acquire(
    shared: &Arc<Shared>,
    req: &AcquireRequest,
    deadline: Option<Instant>,
) -> Result<Lease> {
    let started = Instant::now();
    let timeout = || Error::Timeout {
        name: req.name.clone(),
        waited: started.elapsed(),
    };
    let mut session = match until(deadline, shared.session_for(ttl_secs(req.ttl))).await {
        Some(session) => session?,
        None => return Err(timeout()),
    };
    let key = shared.layout.key(&req.name, &req.lease_id);
    let prefix = shared.layout.name_prefix(&req.name);
    let mut ticket = Ticket {
        shared: Arc::clone(shared),
        key: key.clone(),
        revision: None,
        session: Arc::clone(&session),
        armed: true,
    };
    let mut backoff = PollPolicy::new(Duration::from_millis(20), Duration::from_secs(1)).backoff();
    loop {
        if session.is_lost() && ticket.revision.is_none() {
            // No place in line yet: join on a fresh session instead.
            session = match until(deadline, shared.session_for(ttl_secs(req.ttl))).await {
                Some(fresh) => fresh?,
                None => return Err(timeout()),
            };
            ticket.session = Arc::clone(&session);
        }
        if session.is_lost() {
            return Err(Error::Lost {
                name: req.name.clone(),
                reason: LostReason::SessionLost(format!(
                    "while waiting for the lock: {}",
                    session.lost_reason()
                )),
            });
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            ticket.withdraw().await;
            return Err(timeout());
        }
        let sent_at = Instant::now();
        let step = match ticket.revision {
            None => join(shared, req, &key, &prefix, &session).await,
            Some(revision) => recheck(shared, req, &key, &prefix, &session, revision).await,
        };
        let step = match step {
            Ok(step) => step,
            Err(err) if ticket.revision.is_none() && shared.lease_gone(&err, &session) => {
                continue;
            }
            Err(err) if err.is_retryable() => {
                tracing::debug!(lock = %req.name, error = %err, "transient error while queued; retrying");
                if until(deadline, tokio::time::sleep(backoff.next_delay()))
                    .await
                    .is_none()
                {
                    ticket.withdraw().await;
                    return Err(timeout());
                }
                continue;
            }
            Err(err) => return Err(err),
        };
        match step {
            Step::Granted(revision) => {
                ticket.disarm();
                return shared.grant(req, key, revision, session, sent_at);
            }
            Step::Known(revision) => ticket.revision = Some(revision),
            Step::Queued {
                revision,
                predecessor,
                seen_at,
            } => {
                ticket.revision = Some(revision);
                match wait_for_deletion(shared, &predecessor, seen_at, deadline, &session).await {
                    Woken::Deleted => backoff.reset(),
                    Woken::Retry => {
                        // The watch broke: look again after a short pause.
                        if until(deadline, tokio::time::sleep(backoff.next_delay()))
                            .await
                            .is_none()
                        {
                            ticket.withdraw().await;
                            return Err(timeout());
                        }
                    }
                    Woken::Deadline => {
                        ticket.withdraw().await;
                        return Err(timeout());
                    }
                    Woken::SessionLost => {}
                }
            }
            Step::Vanished => {
                ticket.disarm();
                let reason = if session.is_lost() {
                    LostReason::SessionLost(session.lost_reason())
                } else {
                    LostReason::SessionLost(
                        "the waiting request's key disappeared (its lease expired or was revoked, or an admin deleted it)"
                            .to_owned(),
                    )
                };
                return Err(Error::Lost {
                    name: req.name.clone(),
                    reason,
                });
            }
        }
    }
}

/// Runs `fut` unless `deadline` passes first (`None` then).
async fn until<T>(deadline: Option<Instant>, fut: impl Future<Output = T>) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
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
async fn wait_for_deletion(
    shared: &Shared,
    predecessor: &[u8],
    seen_at: i64,
    deadline: Option<Instant>,
    session: &Session,
) -> Woken {
    let options = WatchOptions::new()
        .with_start_revision(seen_at + 1)
        .with_filters([WatchFilterType::NoPut]);
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
