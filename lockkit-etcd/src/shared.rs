//! `Shared`: what the etcd backend and its background tasks (deadlines,
//! the deletion watch, keep-alives, queued requests) share — the client, the key layout, the
//! sessions and the held locks — and the helpers they all use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{
    Client, Compare, CompareOp, GetOptions, GetResponse, KeyValue, SortOrder, SortTarget, Txn,
    TxnOp, TxnResponse,
};
use lockkit_core::spi::round_up_ttl;
use lockkit_core::spi::{PollPolicy, TimerQueue};
use lockkit_core::{Error, FencingToken, Lease, LockInfo, LockName, Result};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::deletions::Deletions;
use crate::error::{KIND, malformed, retrying};
use crate::held::{HeldLock, HeldLocks, HeldState};
use crate::keys::{self, Layout};
use crate::session::Session;

/// What the backend and its background tasks share.
pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) layout: Layout,
    pub(crate) request_timeout: Duration,
    pub(crate) redacted_url: String,
    pub(crate) held: HeldLocks,
    /// The held locks' deadlines.
    pub(crate) deadlines: Arc<TimerQueue<HeldLock>>,
    /// The held locks' watch for deletions by someone else.
    pub(crate) deletions: Deletions,
    pub(crate) sessions: tokio::sync::Mutex<HashMap<u64, Arc<Session>>>,
    pub(crate) shutdown: CancellationToken,
}

/// A TTL in whole seconds, rounded up (etcd leases have one-second
/// granularity).
pub(crate) fn ttl_secs(ttl: Duration) -> u64 {
    round_up_ttl(ttl, Duration::from_secs(1)).as_secs().max(1)
}

/// A create revision as a fencing token.
pub(crate) fn token_of(revision: i64) -> Result<FencingToken> {
    lockkit_core::spi::token_from_i64(revision, KIND)
}

/// The revision in a response header.
pub(crate) fn header_revision(resp: &TxnResponse) -> Result<i64> {
    resp.header()
        .map(|h| h.revision())
        .ok_or_else(|| malformed("transaction without header"))
}

impl Shared {
    /// The live session for locks of `ttl_secs` seconds, granted on first
    /// use and replaced once lost.
    pub(crate) async fn session_for(self: &Arc<Self>, ttl_secs: u64) -> Result<Arc<Session>> {
        let mut sessions = self.sessions.lock().await;
        if let Some(session) = sessions.get(&ttl_secs)
            && !session.is_lost()
        {
            return Ok(Arc::clone(session));
        }
        // etcd may have granted a session more than was asked (its minimum
        // TTL): a lease asking for that TTL shares it.
        let wanted = Duration::from_secs(ttl_secs);
        if let Some(session) = sessions
            .values()
            .find(|s| !s.is_lost() && s.ttl() == wanted)
            .cloned()
        {
            sessions.insert(ttl_secs, Arc::clone(&session));
            return Ok(session);
        }
        let secs = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
        let session =
            Session::grant(&self.client, secs, self.request_timeout, &self.shutdown).await?;
        sessions.insert(ttl_secs, Arc::clone(&session));
        // Its loss ends every lock it carries, at once.
        let (shared, lost, shutdown) = (
            Arc::downgrade(self),
            Arc::clone(&session),
            self.shutdown.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                () = lost.lost().cancelled() => {}
                () = shutdown.cancelled() => return,
            }
            if let Some(shared) = shared.upgrade() {
                shared.held.lose_session(&lost);
            }
        });
        Ok(session)
    }

    /// Runs an idempotent transaction within the request time limit,
    /// retrying transient failures.
    pub(crate) async fn txn(&self, txn: Txn, doing: &str) -> Result<TxnResponse> {
        retrying(self.request_timeout, doing, || {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// Reads keys within the request time limit, retrying transient
    /// failures.
    pub(crate) async fn get(
        &self,
        key: &str,
        options: GetOptions,
        doing: &str,
    ) -> Result<GetResponse> {
        retrying(self.request_timeout, doing, || {
            let mut kv = self.client.kv_client();
            let (key, options) = (key.to_owned(), options.clone());
            async move { kv.get(key, Some(options)).await }
        })
        .await
    }

    /// Moves a held lock's local deadline when its TTL stays the same and
    /// its session is alive: `None` when that cannot be decided locally.
    pub(crate) fn extend_locally(&self, lease: &Lease, ttl: Duration) -> Option<Lease> {
        let lock = self.held.get(&self.key_of(lease))?;
        let current = lock.state();
        if current.session.is_lost() || lock.lost.is_fired() {
            return None;
        }
        let secs = ttl_secs(ttl);
        if secs != current.ttl_secs && Duration::from_secs(secs) != current.session.ttl() {
            return None;
        }
        let sent_at = Instant::now();
        let effective = current.session.ttl();
        lock.update(HeldState {
            session: Arc::clone(&current.session),
            ttl_secs: current.ttl_secs,
            deadline: sent_at + effective,
        });
        Some(capped(lease.renewed(effective, sent_at), &current.session))
    }

    /// Deletes `key` (only if its create revision is `revision`, when
    /// given), retrying until it works, the session that carries the key is
    /// lost (the key is gone with it) or the backend is dropped (the key
    /// expires with the session).
    pub(crate) async fn delete_eventually(
        &self,
        key: String,
        revision: Option<i64>,
        session: Arc<Session>,
    ) {
        let mut backoff =
            PollPolicy::new(Duration::from_millis(50), Duration::from_secs(2)).backoff();
        loop {
            let txn = match revision {
                Some(rev) => Txn::new()
                    .when([Compare::create_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        rev,
                    )])
                    .and_then([TxnOp::delete(key.as_str(), None)]),
                None => Txn::new().and_then([TxnOp::delete(key.as_str(), None)]),
            };
            match self.txn(txn, "deleting an abandoned lock key").await {
                Ok(_) => return,
                Err(err) => {
                    tracing::debug!(%key, error = %err, "deleting a lock key failed; retrying");
                }
            }
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                () = session.lost().cancelled() => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// The holders of `name`: the first N keys by create revision, where N
    /// is the permit count stored with the oldest key (every live key of a
    /// name carries the same count; see [`holding`]).
    pub(crate) async fn holder_kvs(&self, name: &LockName) -> Result<Vec<KeyValue>> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(i64::from(lockkit_core::MAX_PERMITS));
        let mut resp = self
            .get(
                &self.layout.name_prefix(name),
                options,
                "reading the holders",
            )
            .await?;
        let mut kvs = resp.take_kvs();
        kvs.truncate(holding(&kvs));
        Ok(kvs)
    }

    /// Whether `err` says that `session`'s lease no longer exists on the
    /// server (revoked or expired before the keep-alive noticed); if so the
    /// session is marked lost, so the next request starts a new one.
    pub(crate) fn lease_gone(&self, err: &Error, session: &Session) -> bool {
        let gone = err.to_string().contains("requested lease not found");
        if gone {
            session.lose("etcd says the session lease no longer exists");
        }
        gone
    }

    pub(crate) fn info(&self, kv: &KeyValue, expires_at: Option<SystemTime>) -> Option<LockInfo> {
        let (name, lease_id) = self.layout.parse(kv.key())?;
        let stored = keys::parse_value(kv.value())?;
        let token = token_of(kv.create_revision()).ok()?;
        Some(
            LockInfo::new(name, stored.owner, lease_id, token, stored.at, expires_at)
                .with_permits(stored.permits),
        )
    }

    /// When the etcd lease carrying a key expires unless kept alive: now
    /// plus its remaining TTL plus one second (etcd reports whole seconds,
    /// rounded down). `None` for a key without a lease or a lease already
    /// gone.
    pub(crate) async fn lease_expiry(&self, lease: i64) -> Result<Option<SystemTime>> {
        if lease == 0 {
            return Ok(None);
        }
        let resp = retrying(self.request_timeout, "reading a lease's TTL", || {
            let mut leases = self.client.lease_client();
            async move { leases.time_to_live(lease, None).await }
        })
        .await?;
        Ok(u64::try_from(resp.ttl())
            .ok()
            .map(|secs| SystemTime::now() + Duration::from_secs(secs + 1)))
    }

    pub(crate) fn key_of(&self, lease: &Lease) -> String {
        match &lease.handle {
            Some(handle) => handle.to_string(),
            None => self.layout.key(&lease.name, &lease.lease_id),
        }
    }
}

/// How many of a name's keys, sorted by create revision, hold it: the
/// first N, where N is the permit count stored with the oldest (1 for a
/// value that is not ours).
pub(crate) fn holding(kvs: &[KeyValue]) -> usize {
    let permits = kvs
        .first()
        .and_then(|kv| keys::permits_of(kv.value()))
        .unwrap_or(1);
    kvs.len()
        .min(usize::try_from(permits).unwrap_or(usize::MAX))
}

/// Fails with [`Error::PermitsMismatch`] when one of `ahead` (keys of
/// `req`'s name other than its own) stores another permit count than
/// `req` asks with. Values that are not ours are skipped.
pub(crate) fn check_permits<'a>(
    req: &lockkit_core::spi::AcquireRequest,
    ahead: impl IntoIterator<Item = &'a KeyValue>,
) -> Result<()> {
    for kv in ahead {
        if let Some(held) = keys::permits_of(kv.value())
            && held != req.permits
        {
            return Err(Error::permits_mismatch(&req.name, held, req.permits));
        }
    }
    Ok(())
}

/// Deletes `key` (every request's key is unique to its lease id, so
/// deleting it unconditionally touches nobody else).
pub(crate) fn delete_txn(key: &str) -> Txn {
    Txn::new().and_then([TxnOp::delete(key, None)])
}

/// Caps a lease's local deadline by its session's: a lock is never
/// believed held longer than its lease is certainly alive on the server.
pub(crate) fn capped(mut lease: Lease, session: &Session) -> Lease {
    lease.deadline = lease.deadline.min(session.safe_until());
    lease
}
