//! [`EtcdBackend`]: the lock recipe on etcd keys, transactions and leases.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse,
};
use lockkit_core::spi::LockQueue;
use lockkit_core::spi::{AcquireRequest, LossSignal, TimerQueue};
use lockkit_core::{
    Capabilities, Error, Lease, LockBackend, LockInfo, LockName, LostReason, Result,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deletions::Deletions;
use crate::error::{KIND, malformed, retrying};
use crate::held::{HeldLocks, HeldState};
use crate::keys::{self, Layout};
use crate::session::Session;
use crate::shared::{Shared, capped, check_permits, header_revision, holding, ttl_secs};

/// The etcd lock backend. Cheap to clone (clones share the connection,
/// the sessions and the held locks). See the [crate docs](crate) for the
/// recipe and its guarantees.
///
/// Dropping the last clone stops the keep-alives without revoking the
/// sessions: keys of locks still held then expire after their TTL, as if
/// the process had died. [`close`](Self::close) revokes them at once.
#[derive(Clone)]
pub struct EtcdBackend {
    inner: Arc<Inner>,
}

/// Owned by the backend handles; its drop stops the background tasks.
struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

impl fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("url", &self.inner.shared.redacted_url)
            .field("prefix", &self.inner.shared.layout.root())
            .field("held", &self.inner.shared.held.len())
            .finish_non_exhaustive()
    }
}

impl EtcdBackend {
    pub(crate) fn new(
        client: Client,
        layout: Layout,
        request_timeout: Duration,
        redacted_url: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared {
                    client,
                    layout,
                    request_timeout,
                    redacted_url,
                    held: HeldLocks::default(),
                    deadlines: TimerQueue::new(),
                    deletions: Deletions::new(),
                    sessions: tokio::sync::Mutex::new(HashMap::new()),
                    shutdown: CancellationToken::new(),
                }),
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The etcd client, for inspection and advanced use (it shares this
    /// backend's connection).
    pub fn client(&self) -> Client {
        self.inner.shared.client.clone()
    }

    /// The key prefix of every lock, with its trailing `/`.
    pub fn prefix(&self) -> &str {
        self.inner.shared.layout.root()
    }

    /// The etcd key prefix of every request (holder and waiters) for `name`.
    pub fn name_prefix(&self, name: &LockName) -> String {
        self.inner.shared.layout.name_prefix(name)
    }

    /// The ids of this instance's live session leases (one per distinct
    /// granted TTL in use), for operators and fault tests.
    pub async fn session_lease_ids(&self) -> Vec<i64> {
        let sessions = self.inner.shared.sessions.lock().await;
        let mut ids: Vec<i64> = sessions
            .values()
            .filter(|s| !s.is_lost())
            .map(|s| s.id())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Revokes this instance's sessions: every lock it holds or waits for
    /// is freed at once and reported lost. Later calls start new sessions.
    ///
    /// # Errors
    /// Backend errors revoking a lease (the others are still revoked; a
    /// lease that could not be revoked expires after its TTL).
    pub async fn close(&self) -> Result<()> {
        let sessions: Vec<Arc<Session>> = {
            let mut map = self.inner.shared.sessions.lock().await;
            let mut unique: Vec<Arc<Session>> = Vec::new();
            for (_, session) in map.drain() {
                if !unique.iter().any(|s| s.id() == session.id()) {
                    unique.push(session);
                }
            }
            unique
        };
        let mut first_error = None;
        for session in sessions {
            session.lose("the backend was closed");
            let client = &self.inner.shared.client;
            let id = session.id();
            let revoked = retrying(
                self.inner.shared.request_timeout,
                "revoking a session lease",
                || {
                    let mut lease = client.lease_client();
                    async move { lease.revoke(id).await }
                },
            )
            .await;
            // A lease that is already gone is as good as revoked.
            if let Err(err) = revoked
                && !err.to_string().contains("requested lease not found")
                && first_error.is_none()
            {
                first_error = Some(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl LockBackend for EtcdBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fifo: true,
            push_wakeup: true,
            durable_tokens: true,
            ttl_granularity: Duration::from_secs(1),
            // etcd checks for expired leases every 500 ms, then revokes
            // them through Raft.
            expiry_slack: Duration::from_secs(1),
            max_permits: lockkit_core::MAX_PERMITS,
        }
    }

    async fn try_acquire(&self, req: &AcquireRequest) -> Result<Option<Lease>> {
        let shared = self.shared();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let session = shared.session_for(ttl_secs(req.ttl)).await?;
            match try_once(shared, req, &session).await {
                // The session lease vanished before its keep-alive noticed:
                // nothing was written; once more on a fresh session.
                Err(err) if attempts < 2 && shared.lease_gone(&err, &session) => {}
                outcome => return outcome,
            }
        }
    }

    fn queue(&self) -> Option<&dyn LockQueue> {
        Some(self)
    }

    /// Deletes this request's key, whatever it is (queued, or granted by a
    /// transaction whose reply was lost), and forgets it if it was
    /// registered as held.
    async fn abandon(&self, req: &AcquireRequest) -> Result<()> {
        let shared = self.shared();
        let key = shared.layout.key(&req.name, &req.lease_id);
        shared.held.remove(&key);
        shared
            .txn(crate::shared::delete_txn(&key), "abandoning a request")
            .await
            .map(|_| ())
    }

    fn abandon_in_background(&self, req: AcquireRequest) {
        lockkit_core::spi::spawn_abandon(self, req);
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let shared = self.shared();
        let key = shared.key_of(lease);
        let Some(lock) = shared.held.get(&key) else {
            return Err(Error::lost(&lease.name, LostReason::NotHeld));
        };
        let current = lock.state();
        if current.session.is_lost() {
            shared.held.forget(&lock);
            let reason = LostReason::SessionLost(current.session.lost_reason());
            lock.lost.fire(reason.clone());
            return Err(Error::lost(&lease.name, reason));
        }
        if let Some(reason) = lock.lost.reason() {
            return Err(Error::lost(&lease.name, reason));
        }
        let secs = ttl_secs(ttl);
        let same_ttl =
            secs == current.ttl_secs || Duration::from_secs(secs) == current.session.ttl();
        let session = if same_ttl {
            Arc::clone(&current.session)
        } else {
            shared.session_for(secs).await?
        };
        let moved = !Arc::ptr_eq(&session, &current.session);
        let sent_at = Instant::now();
        let mut txn = Txn::new().when([Compare::create_revision(
            key.as_str(),
            CompareOp::Equal,
            lock.token,
        )]);
        if moved {
            // Re-attach the key to the session of the new TTL; the create
            // revision (the token) does not change.
            txn = txn.and_then([TxnOp::put(
                key.as_str(),
                Vec::new(),
                Some(
                    PutOptions::new()
                        .with_lease(session.id())
                        .with_ignore_value(),
                ),
            )]);
        }
        let resp = match shared.txn(txn, "extending the lease").await {
            Ok(resp) => resp,
            Err(err) if shared.lease_gone(&err, &session) => {
                // The new TTL's session vanished; the next extend starts a
                // fresh one. Nothing was written.
                return Err(Error::transient(
                    KIND,
                    err.to_string(),
                    Some(Box::new(err) as _),
                ));
            }
            Err(err) => return Err(err),
        };
        if !resp.succeeded() {
            shared.held.forget(&lock);
            lock.lost.fire(LostReason::NotHeld);
            return Err(Error::lost(&lease.name, LostReason::NotHeld));
        }
        let effective = session.ttl();
        lock.update(HeldState {
            session: Arc::clone(&session),
            ttl_secs: if same_ttl { current.ttl_secs } else { secs },
            deadline: sent_at + effective,
        });
        Ok(capped(lease.renewed(effective, sent_at), &session))
    }

    /// Renewals due at once, without a request per lock: a lock keeping its
    /// TTL lives on a session lease whose one keep-alive stream already
    /// proves it to etcd, and the deletion watch sees a deletion of its key, so
    /// its local deadline just moves (capped by what the keep-alive
    /// proves). Locks changing TTL, or whose state is in doubt, take the
    /// full `extend` round trip.
    async fn extend_many(&self, batch: &[(Lease, Duration)]) -> Vec<Result<Lease>> {
        let mut results = Vec::with_capacity(batch.len());
        for (lease, ttl) in batch {
            results.push(match self.shared().extend_locally(lease, *ttl) {
                Some(renewed) => Ok(renewed),
                None => self.extend(lease, *ttl).await,
            });
        }
        results
    }

    async fn release(&self, lease: &Lease) -> Result<bool> {
        let shared = self.shared();
        let key = shared.key_of(lease);
        let lock = shared.held.remove(&key);
        let revision = i64::try_from(lease.token.get()).map_err(|_| malformed("token"))?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.as_str(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::delete(key.as_str(), None)]);
        match shared.txn(txn, "releasing the lock").await {
            Ok(resp) => Ok(resp.succeeded()),
            Err(err) => {
                if let Some(lock) = lock {
                    let session = lock.state().session;
                    let shared = Arc::clone(shared);
                    tokio::spawn(async move {
                        shared.delete_eventually(key, Some(revision), session).await;
                    });
                }
                Err(err)
            }
        }
    }

    async fn holders(&self, name: &LockName) -> Result<Vec<LockInfo>> {
        let shared = self.shared();
        let kvs = shared.holder_kvs(name).await?;
        infos(shared, kvs.iter()).await
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let shared = self.shared();
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        let resp = shared
            .get(shared.layout.root(), options, "listing locks")
            .await?;
        // Sorted by create revision: the first N keys seen for a name hold
        // it, in token order.
        let mut names: BTreeMap<LockName, Vec<KeyValue>> = BTreeMap::new();
        for kv in resp.kvs() {
            if let Some((name, _)) = shared.layout.parse(kv.key()) {
                names.entry(name).or_default().push(kv.clone());
            }
        }
        let holders = names.into_values().flat_map(|mut kvs| {
            kvs.truncate(holding(&kvs));
            kvs
        });
        let holders: Vec<KeyValue> = holders.collect();
        infos(shared, holders.iter()).await
    }

    /// Deletes every holder's key (the first N), each only if it still
    /// carries the create revision read, in one transaction; the waiters
    /// next in line are woken by their watches.
    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let shared = self.shared();
        let holders = shared.holder_kvs(name).await?;
        if holders.is_empty() {
            return Ok(false);
        }
        let mut removed = false;
        // etcd caps the operations of one transaction (128 by default).
        for chunk in holders.chunks(TXN_OPS) {
            let deletes: Vec<TxnOp> = chunk
                .iter()
                .map(|holder| {
                    TxnOp::txn(
                        Txn::new()
                            .when([Compare::create_revision(
                                holder.key(),
                                CompareOp::Equal,
                                holder.create_revision(),
                            )])
                            .and_then([TxnOp::delete(holder.key(), None)]),
                    )
                })
                .collect();
            let resp = shared
                .txn(Txn::new().and_then(deletes), "force-releasing the lock")
                .await?;
            removed |= resp.op_responses().into_iter().any(|op| match op {
                TxnOpResponse::Txn(nested) => nested.succeeded(),
                _ => false,
            });
        }
        for holder in &holders {
            if let Ok(key) = std::str::from_utf8(holder.key())
                && let Some(lock) = shared.held.remove(key)
            {
                lock.lost.fire(LostReason::NotHeld);
            }
        }
        Ok(removed)
    }

    async fn cleanup_expired(&self) -> Result<u64> {
        // Keys live on session leases that etcd expires by itself.
        Ok(0)
    }

    fn loss_signal(&self, lease: &Lease) -> Option<LossSignal> {
        let shared = self.shared();
        shared
            .held
            .get(&shared.key_of(lease))
            .map(|lock| lock.lost.clone())
    }
}

/// The records of `kvs` (holders' keys), with one TTL query per session
/// lease however many keys it carries.
async fn infos<'a>(
    shared: &Shared,
    kvs: impl Iterator<Item = &'a KeyValue>,
) -> Result<Vec<LockInfo>> {
    let mut expiry: HashMap<i64, Option<SystemTime>> = HashMap::new();
    let mut infos = Vec::new();
    for kv in kvs {
        let expires_at = match expiry.get(&kv.lease()) {
            Some(known) => *known,
            None => {
                let read = shared.lease_expiry(kv.lease()).await?;
                expiry.insert(kv.lease(), read);
                read
            }
        };
        infos.extend(shared.info(kv, expires_at));
    }
    Ok(infos)
}

/// Operations per transaction when deleting many keys (etcd refuses more
/// than `--max-txn-ops`, 128 by default).
const TXN_OPS: usize = 64;

/// How many conditional puts one `try_acquire` makes while other keys
/// of the name keep appearing between its read and its put (each failed
/// round means someone else joined); then it answers "held".
const TRY_ROUNDS: usize = 16;

/// One `try_acquire` on `session`.
///
/// Admission is by create order: the first N keys of a name hold it.
/// A try puts its key only where it lands among the first N, so it never
/// waits in line: the put is conditional on every key of the name being
/// created at or before revision `seen` (`seen` = 0: the name is empty),
/// at which revision fewer than N keys were read. Keys can only vanish
/// since then, so the new key is one of the first N. A refused put reads
/// the first N keys instead, in the same transaction: our own key among
/// them is a retried grant; N or more keys mean the name is full (or
/// others wait); fewer, and the put is tried again at the new revision.
/// A free name — and every lock (N = 1) — takes one round trip.
async fn try_once(
    shared: &Arc<Shared>,
    req: &AcquireRequest,
    session: &Arc<Session>,
) -> Result<Option<Lease>> {
    let key = shared.layout.key(&req.name, &req.lease_id);
    let sent_at = Instant::now();
    let prefix = shared.layout.name_prefix(&req.name);
    let first_n = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(i64::from(req.permits));
    let mut seen: i64 = 0;
    for _ in 0..TRY_ROUNDS {
        let value = keys::value(&req.owner, SystemTime::now(), req.permits);
        let txn = Txn::new()
            .when([
                Compare::create_revision(prefix.as_str(), CompareOp::Less, seen + 1).with_prefix(),
            ])
            .and_then([TxnOp::put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(session.id())),
            )])
            .or_else([TxnOp::get(prefix.as_str(), Some(first_n.clone()))]);
        let resp = match shared.txn(txn, "trying to take the lock").await {
            Ok(resp) => resp,
            Err(err) => {
                // The put may have been applied without our hearing of it.
                let (shared, session) = (Arc::clone(shared), Arc::clone(session));
                tokio::spawn(async move { shared.delete_eventually(key, None, session).await });
                return Err(err);
            }
        };
        let session = Arc::clone(session);
        if resp.succeeded() {
            let revision = header_revision(&resp)?;
            return crate::held::grant(shared, req, key, revision, session, sent_at).map(Some);
        }
        seen = header_revision(&resp)?;
        let first: Vec<KeyValue> = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(mut get) => Some(get.take_kvs()),
                _ => None,
            })
            .unwrap_or_default();
        // A retried attempt of this very request got through: it is one
        // of the first N (a key only moves up the line).
        if let Some(mine) = first.iter().find(|kv| kv.key() == key.as_bytes()) {
            let revision = mine.create_revision();
            return crate::held::grant(shared, req, key, revision, session, sent_at).map(Some);
        }
        check_permits(req, &first)?;
        if first.len() >= usize::try_from(req.permits).unwrap_or(usize::MAX) {
            return Ok(None);
        }
    }
    Ok(None)
}
