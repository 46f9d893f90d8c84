//! [`ZkBackend`]: the lock recipe on top of the node operations.
//!
//! The queue steps the core's acquisition driver runs live in `queue.rs`;
//! inspection and administration in `inspect.rs`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockkit_core::spi::LockQueue;
use lockkit_core::spi::{AcquireRequest, LossSignal};
use lockkit_core::{
    Capabilities, Error, FencingToken, Lease, LeaseId, LockBackend, LockInfo, LockName, LostReason,
    Result,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zookeeper_client::{Acl, AuthId, Client, Error as ZkError, Permission, Stat};

use crate::admission::{Admission, admit};
use crate::config::{ZkOptions, ZkUrl};
use crate::error::{KIND, classify};
use crate::held::{Held, Registry};
use crate::layout::Layout;
use crate::monitor::monitor;
use crate::nodes::{Deleted, Nodes, parent_of};
use crate::record::{Record, State};
use crate::session::{ConnectSpec, Generation, Sessions};

/// How long the clean-up after a refused try may take before it is left
/// to the background.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The ZooKeeper lock backend (see the [crate docs](crate)).
///
/// Cheap to clone: clones share the session. Dropping the last clone ends
/// the session (unless [`ZkOptions::detached`]), which frees its nodes.
#[derive(Debug, Clone)]
pub struct ZkBackend {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) nodes: Nodes,
    pub(crate) root: String,
    pub(crate) shutdown: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Connects to ZooKeeper at `url` with default [`ZkOptions`] (overridden by
/// the URL's query parameters).
///
/// # Errors
/// See [`connect_with`].
pub async fn connect(url: &str) -> Result<ZkBackend> {
    connect_with(url, ZkOptions::default()).await
}

/// Connects to ZooKeeper at `url` (`zk://[user:password@]host:port[,…][/chroot][?…]`,
/// see [`ZkUrl::parse`]) with `options`, which the URL's query parameters
/// override. Opens one session, creates the chroot and lockkit's root
/// nodes if missing, and checks that the credentials may write there.
///
/// # Errors
/// [`Error::Configuration`] for a malformed URL or options (before any
/// I/O), and when ZooKeeper refuses the credentials (the message names the
/// URL with its password redacted); [`Error::Transient`] when no server
/// answers within the connect timeout.
pub async fn connect_with(url: &str, options: ZkOptions) -> Result<ZkBackend> {
    let parsed = ZkUrl::parse(url, options)?;
    let acls = match &parsed.credentials {
        // Only clients authenticated as this digest user may change or
        // delete lockkit's nodes; anyone may read them.
        Some(_) => vec![
            Acl::new(Permission::ALL, AuthId::authed()),
            Acl::new(Permission::READ, AuthId::anyone()),
        ],
        None => vec![Acl::new(Permission::ALL, AuthId::anyone())],
    };
    let spec = ConnectSpec {
        hosts: parsed.hosts.clone(),
        chroot: parsed.chroot.clone(),
        credentials: parsed.credentials.clone(),
        session_timeout: parsed.options.session_timeout,
        connect_timeout: parsed.options.connect_timeout,
        detached: parsed.options.detached,
        redacted: parsed.redacted.clone(),
        acls: acls.clone(),
    };
    let denied = |err: Error| match err {
        Error::Configuration { source, .. } => Error::Configuration {
            message: format!(
                "ZooKeeper at {} denied lockkit write access to {:?}: wrong user name or password, \
                 or lockkit's nodes there belong to other credentials",
                parsed.redacted, parsed.options.root
            ),
            source,
        },
        other => other,
    };
    let client = spec.open().await.map_err(denied)?;
    let nodes = Nodes::new(
        Layout::new(&parsed.options.root),
        acls,
        parsed.options.expiry_margin,
    );
    nodes.ensure_roots(&client).await.map_err(denied)?;
    let sessions = Arc::new(Sessions::new(client, spec));
    nodes
        .server_now(&sessions.current())
        .await
        .map_err(denied)?;
    let inner = Arc::new(Inner {
        sessions: Arc::clone(&sessions),
        registry: Arc::new(Registry::default()),
        nodes,
        root: parsed.options.root.clone(),
        shutdown: CancellationToken::new(),
    });
    tokio::spawn(monitor(
        sessions,
        Arc::clone(&inner.registry),
        inner.shutdown.clone(),
    ));
    Ok(ZkBackend { inner })
}

/// A renewal ready to be written: the node and its new data.
pub(crate) struct Renewal {
    generation: Arc<Generation>,
    path: String,
    record: Vec<u8>,
}

/// Where a lease node stands in its queue.
pub(crate) enum Way {
    /// Fewer live nodes than its permit count are before it, all of its
    /// count: it holds a permit.
    Clear,
    /// As many live nodes as its permit count (or more) are before it.
    Blocked(Blocked),
    /// A live node before it asked with another permit count (`held`).
    Mismatch { held: u32 },
    /// The node itself is gone (session ended, removed by an admin).
    Gone,
}

/// What a blocked node waits for.
#[derive(Debug, Clone)]
pub(crate) struct Blocked {
    /// The nearest live node before it (a lock's waiter watches it alone).
    pub(crate) predecessor: String,
    /// The names (last path segment) of every live node before it: a
    /// semaphore's waiter goes on as soon as any of them has gone.
    pub(crate) ahead: Vec<String>,
    /// When the first of them expires unless rewritten (server ms, with
    /// the margin), as read.
    pub(crate) expires_ms: Option<i64>,
}

impl ZkBackend {
    /// The client of the current session (chrooted), for inspection and
    /// tests. Deleting or changing lockkit's nodes through it breaks the
    /// guarantees.
    pub fn client(&self) -> Client {
        self.inner.sessions.current().client.clone()
    }

    /// The session timeout the server granted.
    pub fn session_timeout(&self) -> Duration {
        self.inner.sessions.current().session_timeout()
    }

    /// The root node of lockkit's data (below the chroot).
    pub fn root(&self) -> &str {
        &self.inner.root
    }

    /// Records a grant and builds the lease.
    pub(crate) fn grant(
        &self,
        generation: Arc<Generation>,
        req: &AcquireRequest,
        path: String,
        stat: &Stat,
        sent_at: Instant,
    ) -> Lease {
        generation.touch(sent_at);
        let token = FencingToken::new(u64::try_from(stat.czxid).unwrap_or(0));
        let lease = Lease::granted(req, token, sent_at).with_handle(path.clone());
        let held = Held::new(
            generation,
            path,
            req.owner.clone(),
            lease.deadline,
            stat.mtime,
        );
        self.inner
            .registry
            .insert(req.lease_id.clone(), held, &self.inner.shutdown);
        lease
    }

    /// Looks at the queue before `own`: deletes leases that expired by
    /// `server_now_ms` (only if unchanged since read) and duplicates of our
    /// own node, and says whether `own` now holds one of `req`'s permits
    /// (fewer than `req.permits` live nodes before it, all asking with
    /// that count: see `admission.rs`).
    pub(crate) async fn clear_way(
        &self,
        generation: &Generation,
        lock: &str,
        own: &str,
        req: &AcquireRequest,
        server_now_ms: i64,
    ) -> Result<Way> {
        let lease_id = &req.lease_id;
        let nodes = &self.inner.nodes;
        let Some(members) = nodes.members(generation, lock).await? else {
            return Ok(Way::Gone);
        };
        let own_node = own.rsplit('/').next().unwrap_or(own);
        let Some(index) = members.iter().position(|m| m.node == own_node) else {
            return Ok(Way::Gone);
        };
        let mut before = Vec::new();
        for member in &members[..index] {
            let path = format!("{lock}/{}", member.node);
            if member.is_for(lease_id) {
                // A duplicate from a create whose reply was lost.
                nodes.delete(generation, &path, None).await?;
            } else {
                before.push(path);
            }
        }
        for member in &members[index + 1..] {
            if member.is_for(lease_id) {
                let path = format!("{lock}/{}", member.node);
                nodes.delete(generation, &path, None).await?;
            }
        }
        if before.is_empty() {
            return Ok(Way::Clear);
        }
        let read = nodes.read(generation, &before).await?;
        // Leases whose TTL ran out may go, wherever they are; the live
        // nodes before ours decide.
        let mut live = Vec::with_capacity(read.len());
        for node in read {
            if node.is_expired(server_now_ms, nodes.margin) {
                match nodes
                    .delete(generation, &node.path, Some(node.stat.version))
                    .await?
                {
                    // Renewed since we read it: still live.
                    Deleted::Changed => live.push(node),
                    Deleted::Yes => {
                        tracing::info!(path = %node.path, "removed an expired lease node");
                    }
                    Deleted::Missing => {}
                }
            } else {
                live.push(node);
            }
        }
        match admit(&live, req.permits) {
            Admission::Admitted => Ok(Way::Clear),
            Admission::Mismatch { held } => Ok(Way::Mismatch { held }),
            Admission::Waits => {
                let margin = nodes.margin;
                let expires_ms = live.iter().filter_map(|n| n.expires_ms(margin)).min();
                let ahead = live
                    .iter()
                    .map(|n| n.path.rsplit('/').next().unwrap_or(&n.path).to_owned())
                    .collect();
                let predecessor = live.pop().map(|n| n.path).unwrap_or_default();
                Ok(Way::Blocked(Blocked {
                    predecessor,
                    ahead,
                    expires_ms,
                }))
            }
        }
    }

    /// The grant again for a request this backend already holds a permit
    /// for (a retry after a lost reply, by lease id): same node, same
    /// token, its TTL restarted by rewriting the node. `Ok(None)` when it
    /// holds nothing for the request (no I/O then).
    pub(crate) async fn regrant(&self, req: &AcquireRequest) -> Result<Option<Lease>> {
        let registry = &self.inner.registry;
        let Some(held) = registry.get(&req.lease_id) else {
            return Ok(None);
        };
        let lock = self.inner.nodes.layout.lock(&req.name);
        if held.lost.is_fired()
            || held.is_stopped()
            || held.generation.is_lost()
            || parent_of(&held.path) != lock
        {
            return Ok(None);
        }
        let record = Record::new(
            State::Held,
            req.ttl,
            &req.lease_id,
            &held.owner,
            req.permits,
        )
        .with_granted_ms(held.granted_ms)
        .encode();
        let sent_at = Instant::now();
        let result = held
            .generation
            .client
            .set_data(&held.path, &record, None)
            .await;
        held.generation.observe(sent_at, &result);
        match result {
            Ok(stat) => {
                let token = FencingToken::new(u64::try_from(stat.czxid).unwrap_or(0));
                let lease = Lease::granted(req, token, sent_at).with_handle(held.path);
                registry.renewed(&req.lease_id, lease.deadline);
                Ok(Some(lease))
            }
            Err(ZkError::NoNode) => {
                registry.lose(&req.lease_id);
                Ok(None)
            }
            Err(err) => Err(classify(err, "renewing a retried grant")),
        }
    }

    /// Deletes what a refused request created, bounded by
    /// [`CLEANUP_TIMEOUT`], else in the background.
    pub(crate) async fn discard(&self, generation: &Generation, req: &AcquireRequest) {
        let deleted = tokio::time::timeout(
            CLEANUP_TIMEOUT,
            self.delete_lease_nodes(generation, &req.name, &req.lease_id),
        )
        .await;
        if !matches!(deleted, Ok(Ok(()))) {
            self.abandon_in_background(req.clone());
        }
    }

    /// Checks a lease before renewing it and builds its node's new data.
    fn prepare_renewal(&self, lease: &Lease, ttl: Duration) -> Result<Renewal> {
        let held = self.inner.registry.get(&lease.lease_id);
        let deadline = held.as_ref().map_or(lease.deadline, |h| h.deadline);
        if let Some(reason) = held.as_ref().and_then(|h| h.lost.reason()) {
            return Err(Error::lost(&lease.name, reason));
        }
        if Instant::now() >= deadline {
            // When in doubt, lost: a contender may already have taken it.
            if let Some(held) = &held {
                held.lost.fire(LostReason::Expired);
            }
            return Err(Error::lost(&lease.name, LostReason::Expired));
        }
        let Some(path) = lease
            .handle
            .as_deref()
            .map(str::to_owned)
            .or_else(|| held.as_ref().map(|h| h.path.clone()))
        else {
            return Err(Error::lost(&lease.name, LostReason::NotHeld));
        };
        let generation = held.as_ref().map_or_else(
            || self.inner.sessions.current(),
            |h| Arc::clone(&h.generation),
        );
        let owner = held
            .as_ref()
            .map_or(lease.owner.as_str(), |h| h.owner.as_str());
        let granted_ms = held.as_ref().map_or(0, |h| h.granted_ms);
        let record = Record::new(State::Held, ttl, &lease.lease_id, owner, lease.permits)
            .with_granted_ms(granted_ms)
            .encode();
        Ok(Renewal {
            generation,
            path,
            record,
        })
    }

    /// The outcome of writing a lease's node at `sent_at`.
    fn renewed(
        &self,
        lease: &Lease,
        ttl: Duration,
        sent_at: Instant,
        written: std::result::Result<(), ZkError>,
    ) -> Result<Lease> {
        match written {
            Ok(()) => {
                let renewed = lease.renewed(ttl, sent_at);
                self.inner
                    .registry
                    .renewed(&lease.lease_id, renewed.deadline);
                Ok(renewed)
            }
            Err(ZkError::NoNode) => {
                self.inner.registry.lose(&lease.lease_id);
                Err(Error::lost(&lease.name, LostReason::NotHeld))
            }
            Err(err) => Err(classify(err, "renewing a lease")),
        }
    }

    /// Deletes every node of `lease_id` under `name`'s lock (a refused or
    /// abandoned request's), with the lock node when that leaves it empty.
    pub(crate) async fn delete_lease_nodes(
        &self,
        generation: &Generation,
        name: &LockName,
        lease_id: &LeaseId,
    ) -> Result<()> {
        let nodes = &self.inner.nodes;
        let lock = nodes.layout.lock(name);
        let Some(members) = nodes.members(generation, &lock).await? else {
            return Ok(());
        };
        for member in members.iter().filter(|m| m.is_for(lease_id)) {
            nodes
                .delete(generation, &format!("{lock}/{}", member.node), None)
                .await?;
        }
        nodes.delete_lock_if_empty(generation, &lock).await
    }
}

#[async_trait]
impl LockBackend for ZkBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fifo: true,
            push_wakeup: true,
            durable_tokens: true,
            ttl_granularity: Duration::from_millis(1),
            expiry_slack: self.inner.nodes.margin + Duration::from_millis(200),
            max_permits: lockkit_core::MAX_PERMITS,
        }
    }

    async fn try_acquire(&self, req: &AcquireRequest) -> Result<Option<Lease>> {
        if let Some(lease) = self.regrant(req).await? {
            return Ok(Some(lease));
        }
        let nodes = &self.inner.nodes;
        let lock = nodes.layout.lock(&req.name);
        let generation = self.inner.sessions.current();
        let sent_at = Instant::now();
        let created = nodes.create(&generation, &lock, req, State::Held).await?;
        let way = if created.sole {
            Way::Clear
        } else {
            self.clear_way(&generation, &lock, &created.path, req, created.stat.ctime)
                .await?
        };
        let refusal = match way {
            Way::Clear => None,
            Way::Mismatch { held } => {
                Some(Err(Error::permits_mismatch(&req.name, held, req.permits)))
            }
            Way::Blocked(_) | Way::Gone => Some(Ok(None)),
        };
        if refusal.is_some() || generation.is_lost() {
            // Refused (or the session changed under us): remove our node
            // now, or leave it to the background.
            self.discard(&generation, req).await;
            if let Some(refusal) = refusal {
                return refusal;
            }
            return Err(Error::transient(
                KIND,
                format!(
                    "the session changed while acquiring: {}",
                    generation.reason()
                ),
                None,
            ));
        }
        Ok(Some(self.grant(
            generation,
            req,
            created.path,
            &created.stat,
            sent_at,
        )))
    }

    fn queue(&self) -> Option<&dyn LockQueue> {
        Some(self)
    }

    /// Deletes every node this request created (found by the lease id in
    /// its name), held or waiting, and forgets a grant made to it.
    async fn abandon(&self, req: &AcquireRequest) -> Result<()> {
        self.inner.registry.remove(&req.lease_id);
        let generation = self.inner.sessions.current();
        self.delete_lease_nodes(&generation, &req.name, &req.lease_id)
            .await
    }

    fn abandon_in_background(&self, req: AcquireRequest) {
        lockkit_core::spi::spawn_abandon(self, req);
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let renewal = self.prepare_renewal(lease, ttl)?;
        let sent_at = Instant::now();
        let result = renewal
            .generation
            .client
            .set_data(&renewal.path, &renewal.record, None)
            .await;
        renewal.generation.observe(sent_at, &result);
        self.renewed(lease, ttl, sent_at, result.map(|_| ()))
    }

    /// Renewals due at once: one multi-write of every node (one round trip).
    /// A multi fails as a whole when any node is gone; the leases are then
    /// renewed one by one, so each learns its own fate.
    async fn extend_many(&self, batch: &[(Lease, Duration)]) -> Vec<Result<Lease>> {
        let prepared: Vec<Result<Renewal>> = batch
            .iter()
            .map(|(lease, ttl)| self.prepare_renewal(lease, *ttl))
            .collect();
        let ready: Vec<&Renewal> = prepared.iter().filter_map(|r| r.as_ref().ok()).collect();
        let one_generation = ready
            .windows(2)
            .all(|w| Arc::ptr_eq(&w[0].generation, &w[1].generation));
        if ready.len() > 1 && one_generation {
            let generation = Arc::clone(&ready[0].generation);
            let mut writer = generation.client.new_multi_writer();
            let added = ready
                .iter()
                .try_for_each(|r| writer.add_set_data(&r.path, &r.record, None));
            if added.is_ok() {
                let sent_at = Instant::now();
                if writer.commit().await.is_ok() {
                    generation.touch(sent_at);
                    return batch
                        .iter()
                        .zip(prepared)
                        .map(|((lease, ttl), prepared)| {
                            prepared.and_then(|_| self.renewed(lease, *ttl, sent_at, Ok(())))
                        })
                        .collect();
                }
            }
        }
        let mut results = Vec::with_capacity(batch.len());
        for ((lease, ttl), prepared) in batch.iter().zip(prepared) {
            results.push(match prepared {
                Ok(_) => self.extend(lease, *ttl).await,
                Err(err) => Err(err),
            });
        }
        results
    }

    /// Deletes the lease node. One attempt: a transient failure is returned
    /// as is and the lease stays registered, so the core's retry
    /// (`lockkit_core::RELEASE_RETRY_FOR`) judges the next attempt the same
    /// way; the core also treats "already gone" after a failed attempt as
    /// released by us.
    async fn release(&self, lease: &Lease) -> Result<bool> {
        let registry = &self.inner.registry;
        let held = registry.releasing(&lease.lease_id);
        // A lease this backend does not hold any more (released, lost,
        // or granted to another session) is not held; its node is still
        // removed if it is there.
        let was_lost = held.as_ref().is_none_or(|h| h.lost.is_fired());
        let deadline = held.as_ref().map_or(lease.deadline, |h| h.deadline);
        let Some(path) = lease
            .handle
            .as_deref()
            .map(str::to_owned)
            .or_else(|| held.as_ref().map(|h| h.path.clone()))
        else {
            registry.remove(&lease.lease_id);
            return Ok(false);
        };
        let generation = self.inner.sessions.current();
        match self
            .inner
            .nodes
            .delete_and_tidy(&generation, &path, None)
            .await
        {
            Ok(deleted) => {
                registry.remove(&lease.lease_id);
                Ok(deleted == Deleted::Yes && !was_lost && Instant::now() < deadline)
            }
            // A lost lease is not held whatever happens to its node, which
            // goes with its session or its TTL.
            Err(err) if was_lost && err.is_retryable() => {
                registry.remove(&lease.lease_id);
                tracing::debug!(%path, error = %err, "could not delete a lost lease's node");
                Ok(false)
            }
            Err(err) => {
                if !err.is_retryable() {
                    registry.remove(&lease.lease_id);
                }
                Err(err)
            }
        }
    }

    /// The first live nodes of the queue that hold a permit (see the
    /// crate docs, "Semaphores"), by the server's clock, by token.
    async fn holders(&self, name: &LockName) -> Result<Vec<LockInfo>> {
        self.holders_of(name).await
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        self.list_holders().await
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        self.force_release_holders(name).await
    }

    /// Deletes lease nodes whose TTL ran out by the server's clock (their
    /// holders or waiters stopped renewing but their sessions live on) and
    /// lock nodes left empty (ZooKeeper also reaps those, as container
    /// nodes, after its `znode.container.checkIntervalMs`).
    async fn cleanup_expired(&self) -> Result<u64> {
        self.cleanup_expired_nodes().await
    }

    fn loss_signal(&self, lease: &Lease) -> Option<LossSignal> {
        let held = self.inner.registry.get(&lease.lease_id)?;
        let same_node = lease.handle.as_deref().is_none_or(|h| h == held.path);
        same_node.then_some(held.lost)
    }
}
