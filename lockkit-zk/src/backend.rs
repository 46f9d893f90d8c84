//! [`ZkBackend`]: the lock recipe on top of the node operations.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockkit_core::wait::PollPolicy;
use lockkit_core::{
    AcquireRequest, Capabilities, Error, FencingToken, Lease, LeaseId, LockBackend, LockInfo,
    LockName, LossSignal, LostReason, Result,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zookeeper_client::{Acl, AuthId, Client, Error as ZkError, Permission, Stat};

use crate::config::{ZkOptions, ZkUrl};
use crate::error::{KIND, map};
use crate::held::{Held, Registry};
use crate::layout::{Layout, Member, decode_name};
use crate::nodes::{Created, Deleted, Nodes};
use crate::record::{Node, Record, State};
use crate::session::{ConnectSpec, Generation, Sessions, monitor};

/// How long a clean-up after a timeout or a refused try may take before it
/// is left to the background.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The ZooKeeper lock backend (see the [crate docs](crate)).
///
/// Cheap to clone: clones share the session. Dropping the last clone ends
/// the session (unless [`ZkOptions::detached`]), which frees its nodes.
#[derive(Debug, Clone)]
pub struct ZkBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sessions: Arc<Sessions>,
    registry: Arc<Registry>,
    nodes: Nodes,
    root: String,
    shutdown: CancellationToken,
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

/// Where a lease node stands in its queue.
enum Way {
    /// Every node before it is gone: it holds the lock.
    Clear,
    /// A live node is before it; watch the one just before (`path`).
    Blocked { predecessor: String },
    /// The node itself is gone (session ended, removed by an admin).
    Gone,
}

/// A lease node being acquired: removed again (in the background if need
/// be) unless the lock is granted, so timeouts, refusals, errors and
/// cancelled acquires leave nothing behind.
struct Pending {
    client: Client,
    lock: String,
    lease_id: LeaseId,
    path: Option<String>,
    armed: bool,
}

impl Pending {
    fn new(client: Client, lock: String, lease_id: LeaseId) -> Self {
        Self {
            client,
            lock,
            lease_id,
            path: None,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }

    /// Deletes the node now (bounded); on failure the drop retries in the
    /// background.
    async fn abandon(&mut self, nodes: &Nodes, generation: &Generation) {
        let Some(path) = self.path.clone() else {
            return;
        };
        if let Ok(Ok(_)) =
            tokio::time::timeout(CLEANUP_TIMEOUT, nodes.delete(generation, &path, None)).await
        {
            self.disarm();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(lock = %self.lock, "no runtime to remove an abandoned lease node; it goes with the session");
            return;
        };
        let client = self.client.clone();
        let lock = self.lock.clone();
        match self.path.take() {
            Some(path) => {
                // Sent right now, in order with this session's earlier
                // requests; only the reply is awaited in the background.
                let deleting = client.delete(&path, None);
                runtime.spawn(async move {
                    let _ = deleting.await;
                    let _ = client.delete(&lock, None).await;
                });
            }
            None => {
                // The create may be in flight: this session's later
                // requests see its result, so find the node by lease id.
                let lease_id = self.lease_id.clone();
                runtime.spawn(async move {
                    let Ok(children) = client.list_children(&lock).await else {
                        return;
                    };
                    for child in children {
                        if Member::parse(&child).is_some_and(|m| m.is_for(&lease_id)) {
                            let _ = client.delete(&format!("{lock}/{child}"), None).await;
                        }
                    }
                    let _ = client.delete(&lock, None).await;
                });
            }
        }
    }
}

/// The node this acquire is waiting with.
struct Own {
    path: String,
    state: State,
    /// The local instant before the write that set the node's mtime.
    written_at: Instant,
    /// A server time (ms) and the local instant its reply arrived: how the
    /// waiter predicts when a holder's TTL runs out.
    anchor: (i64, Instant),
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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

    fn timeout(&self, req: &AcquireRequest, started: Instant) -> Error {
        Error::Timeout {
            name: req.name.clone(),
            waited: started.elapsed(),
        }
    }

    /// Records a grant and builds the lease.
    fn grant(
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

    /// Looks at the queue before `own`: deletes held leases that expired by
    /// `server_now_ms` (only if unchanged since read) and duplicates of our
    /// own node, and says whether `own` now holds the lock.
    async fn clear_way(
        &self,
        generation: &Generation,
        lock: &str,
        own: &str,
        lease_id: &LeaseId,
        server_now_ms: i64,
    ) -> Result<Way> {
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
        // Held leases whose TTL ran out may go, wherever they are; the
        // nearest live node before ours is the one to wait for.
        let mut nearest_live = None;
        for node in &read {
            if node.is_expired(server_now_ms, nodes.margin) {
                match nodes
                    .delete(generation, &node.path, Some(node.stat.version))
                    .await?
                {
                    // Renewed since we read it: still held.
                    Deleted::Changed => nearest_live = Some(node.path.clone()),
                    Deleted::Yes => {
                        tracing::info!(path = %node.path, "removed an expired lease node");
                    }
                    Deleted::Missing => {}
                }
            } else {
                nearest_live = Some(node.path.clone());
            }
        }
        if let Some(predecessor) = nearest_live {
            return Ok(Way::Blocked { predecessor });
        }
        Ok(Way::Clear)
    }

    /// The queue of `name` with the server's clock: the live holder, if any.
    async fn holder(
        &self,
        generation: &Generation,
        lock: &str,
        server_now_ms: i64,
        members: &[Member],
    ) -> Result<(Option<Node>, Vec<Node>)> {
        let nodes = &self.inner.nodes;
        let paths: Vec<String> = members
            .iter()
            .map(|m| format!("{lock}/{}", m.node))
            .collect();
        let read = nodes.read(generation, &paths).await?;
        let mut expired = Vec::new();
        for node in read {
            if node.is_expired(server_now_ms, nodes.margin) {
                expired.push(node);
                continue;
            }
            let holder = node
                .is_live_holder(server_now_ms, nodes.margin)
                .then_some(node);
            return Ok((holder, expired));
        }
        Ok((None, expired))
    }

    async fn acquire_inner(
        &self,
        req: &AcquireRequest,
        deadline: Option<Instant>,
        started: Instant,
    ) -> Result<Lease> {
        let nodes = &self.inner.nodes;
        let lock = nodes.layout.lock(&req.name);
        let mut backoff =
            PollPolicy::new(Duration::from_millis(20), Duration::from_secs(1)).backoff();
        'create: loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(self.timeout(req, started));
            }
            let generation = self.inner.sessions.current();
            let mut pending = Pending::new(
                generation.client.clone(),
                lock.clone(),
                req.lease_id.clone(),
            );
            let sent_at = Instant::now();
            let created = match nodes.create(&generation, &lock, req, State::Waiting).await {
                Ok(created) => created,
                Err(err) if err.is_retryable() => {
                    tracing::debug!(lock = %req.name, error = %err, "creating a lease node failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue 'create;
                }
                Err(err) => return Err(err),
            };
            pending.path = Some(created.path.clone());
            if created.sole && !generation.is_lost() {
                pending.disarm();
                return Ok(self.grant(generation, req, created.path, &created.stat, sent_at));
            }
            let Created {
                path, stat, state, ..
            } = created;
            let mut own = Own {
                path,
                state,
                written_at: sent_at,
                anchor: (stat.ctime, Instant::now()),
            };
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    pending.abandon(nodes, &generation).await;
                    return Err(self.timeout(req, started));
                }
                if generation.is_lost() {
                    // Start over on the current generation.
                    pending.abandon(nodes, &generation).await;
                    continue 'create;
                }
                let way = self
                    .clear_way(&generation, &lock, &own.path, &req.lease_id, own.anchor.0)
                    .await;
                let way = match way {
                    Ok(way) => way,
                    Err(err) if err.is_retryable() => {
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                    Err(err) => return Err(err),
                };
                match way {
                    Way::Gone => {
                        pending.disarm();
                        continue 'create;
                    }
                    Way::Clear if own.state == State::Held => {
                        pending.disarm();
                        return Ok(self.grant(
                            Arc::clone(&generation),
                            req,
                            own.path,
                            &stat,
                            own.written_at,
                        ));
                    }
                    Way::Clear => {
                        let record =
                            Record::new(State::Held, req.ttl, &req.lease_id, &req.owner).encode();
                        let sent_at = Instant::now();
                        let result = generation.client.set_data(&own.path, &record, None).await;
                        generation.observe(sent_at, &result);
                        match result {
                            Ok(stat) => {
                                pending.disarm();
                                return Ok(self.grant(
                                    Arc::clone(&generation),
                                    req,
                                    own.path,
                                    &stat,
                                    sent_at,
                                ));
                            }
                            Err(ZkError::NoNode) => {
                                pending.disarm();
                                continue 'create;
                            }
                            Err(err) => {
                                let err = map(err, "taking the lock");
                                if !err.is_retryable() {
                                    return Err(err);
                                }
                                tokio::time::sleep(backoff.next_delay()).await;
                                continue;
                            }
                        }
                    }
                    Way::Blocked { predecessor } => {
                        if own.state == State::Held {
                            // Recovered after a lost reply as a holder but
                            // not first: queue as a waiter, so the TTL does
                            // not count against it.
                            let record =
                                Record::new(State::Waiting, req.ttl, &req.lease_id, &req.owner)
                                    .encode();
                            let sent_at = Instant::now();
                            let result = generation.client.set_data(&own.path, &record, None).await;
                            generation.observe(sent_at, &result);
                            match result {
                                Ok(stat) => {
                                    own.state = State::Waiting;
                                    own.anchor = (stat.mtime, Instant::now());
                                    own.written_at = sent_at;
                                }
                                Err(ZkError::NoNode) => {
                                    pending.disarm();
                                    continue 'create;
                                }
                                Err(err) => return Err(map(err, "queueing")),
                            }
                        }
                        let watched = generation.client.get_and_watch_data(&predecessor).await;
                        let (data, pred_stat, watcher) = match watched {
                            Ok(watched) => watched,
                            Err(ZkError::NoNode) => continue,
                            Err(err) => {
                                let err = map(err, "watching the lease before ours");
                                if !err.is_retryable() {
                                    return Err(err);
                                }
                                tokio::time::sleep(backoff.next_delay()).await;
                                continue;
                            }
                        };
                        backoff.reset();
                        let pred = Node {
                            path: predecessor,
                            record: Record::decode(&data),
                            stat: pred_stat,
                        };
                        // When the predecessor's TTL runs out, by our
                        // reading of the server's clock.
                        let expiry = pred.expires_ms(nodes.margin).map(|at| {
                            let (server_ms, local) = own.anchor;
                            let ahead = u64::try_from(at.saturating_sub(server_ms)).unwrap_or(0);
                            local + Duration::from_millis(ahead)
                        });
                        // Our own node expires like any other unless we
                        // rewrite it: every third of the TTL.
                        let refresh = own.written_at + req.ttl / 3;
                        let wake = expiry.map_or(refresh, |e| e.min(refresh));
                        tokio::select! {
                            _ = watcher.changed() => {}
                            () = tokio::time::sleep_until(wake) => {
                                // Refresh our node, which also reads the
                                // server's clock, then look again.
                                let record = Record::new(State::Waiting, req.ttl, &req.lease_id, &req.owner).encode();
                                let sent_at = Instant::now();
                                let result = generation.client.set_data(&own.path, &record, None).await;
                                generation.observe(sent_at, &result);
                                match result {
                                    Ok(stat) => {
                                        own.anchor = (stat.mtime, Instant::now());
                                        own.written_at = sent_at;
                                    }
                                    Err(ZkError::NoNode) => {
                                        pending.disarm();
                                        continue 'create;
                                    }
                                    Err(err) => {
                                        let err = map(err, "reading the server clock");
                                        if !err.is_retryable() {
                                            return Err(err);
                                        }
                                        tokio::time::sleep(backoff.next_delay()).await;
                                    }
                                }
                            }
                            () = sleep_until(deadline) => {}
                        }
                    }
                }
            }
        }
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
        }
    }

    async fn try_acquire(&self, req: &AcquireRequest) -> Result<Option<Lease>> {
        let nodes = &self.inner.nodes;
        let lock = nodes.layout.lock(&req.name);
        let generation = self.inner.sessions.current();
        let mut pending = Pending::new(
            generation.client.clone(),
            lock.clone(),
            req.lease_id.clone(),
        );
        let sent_at = Instant::now();
        let created = nodes.create(&generation, &lock, req, State::Held).await?;
        pending.path = Some(created.path.clone());
        if !created.sole {
            let way = self
                .clear_way(
                    &generation,
                    &lock,
                    &created.path,
                    &req.lease_id,
                    created.stat.ctime,
                )
                .await?;
            if !matches!(way, Way::Clear) {
                pending.abandon(nodes, &generation).await;
                return Ok(None);
            }
        }
        if generation.is_lost() {
            pending.abandon(nodes, &generation).await;
            return Err(Error::transient(
                KIND,
                format!(
                    "the session changed while acquiring: {}",
                    generation.reason()
                ),
                None,
            ));
        }
        pending.disarm();
        Ok(Some(self.grant(
            generation,
            req,
            created.path,
            &created.stat,
            sent_at,
        )))
    }

    /// Queues a lease node and waits for the node just before it (FIFO, no
    /// herd): its deletion or change wakes the waiter at once, and a timer
    /// fires when its TTL runs out by the server's clock. Timeouts and
    /// cancellation remove the waiter's node.
    async fn acquire(&self, req: &AcquireRequest, deadline: Option<Instant>) -> Result<Lease> {
        let started = Instant::now();
        // The loop honours the deadline itself (and removes its node);
        // this bound only covers requests stuck on a dead connection.
        let bound = deadline.map(|d| d + CLEANUP_TIMEOUT);
        match bound {
            Some(bound) => {
                tokio::time::timeout_at(bound, self.acquire_inner(req, deadline, started))
                    .await
                    .unwrap_or_else(|_| Err(self.timeout(req, started)))
            }
            None => self.acquire_inner(req, deadline, started).await,
        }
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let registry = &self.inner.registry;
        let held = registry.get(&lease.lease_id);
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
        let record = Record::new(State::Held, ttl, &lease.lease_id, owner)
            .with_granted_ms(granted_ms)
            .encode();
        let sent_at = Instant::now();
        let result = generation.client.set_data(&path, &record, None).await;
        generation.observe(sent_at, &result);
        match result {
            Ok(_) => {
                let renewed = lease.renewed(ttl, sent_at);
                registry.renewed(&lease.lease_id, renewed.deadline);
                Ok(renewed)
            }
            Err(ZkError::NoNode) => {
                registry.lose(&lease.lease_id);
                Err(Error::lost(&lease.name, LostReason::NotHeld))
            }
            Err(err) => Err(map(err, "renewing a lease")),
        }
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
        match self.inner.nodes.delete(&generation, &path, None).await {
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

    async fn current(&self, name: &LockName) -> Result<Option<LockInfo>> {
        let generation = self.inner.sessions.current();
        let nodes = &self.inner.nodes;
        let now_ms = nodes.server_now(&generation).await?;
        let lock = nodes.layout.lock(name);
        let Some(members) = nodes.members(&generation, &lock).await? else {
            return Ok(None);
        };
        let (holder, _) = self.holder(&generation, &lock, now_ms, &members).await?;
        Ok(holder.and_then(|h| h.info(name)))
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let generation = self.inner.sessions.current();
        let nodes = &self.inner.nodes;
        let now_ms = nodes.server_now(&generation).await?;
        let dir = nodes.layout.locks_dir();
        let children = match generation.client.list_children(&dir).await {
            Ok(children) => children,
            Err(ZkError::NoNode) => return Ok(Vec::new()),
            Err(err) => return Err(map(err, "listing locks")),
        };
        let named: Vec<(LockName, String)> = children
            .iter()
            .filter_map(|c| decode_name(c).map(|n| (n, format!("{dir}/{c}"))))
            .collect();
        let paths: Vec<String> = named.iter().map(|(_, p)| p.clone()).collect();
        let queues = nodes.queues(&generation, &paths).await?;
        let mut infos = Vec::new();
        for (lock, members) in queues {
            if members.is_empty() {
                continue;
            }
            let Some(name) = lock.rsplit('/').next().and_then(decode_name) else {
                continue;
            };
            let (holder, _) = self.holder(&generation, &lock, now_ms, &members).await?;
            if let Some(info) = holder.and_then(|h| h.info(&name)) {
                infos.push(info);
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let generation = self.inner.sessions.current();
        let nodes = &self.inner.nodes;
        let now_ms = nodes.server_now(&generation).await?;
        let lock = nodes.layout.lock(name);
        let Some(members) = nodes.members(&generation, &lock).await? else {
            return Ok(false);
        };
        let (holder, expired) = self.holder(&generation, &lock, now_ms, &members).await?;
        for node in &expired {
            nodes
                .delete(&generation, &node.path, Some(node.stat.version))
                .await?;
        }
        let removed = match holder {
            Some(node) => {
                tracing::warn!(lock = %name, path = %node.path, "force-releasing a held lock");
                nodes.delete(&generation, &node.path, None).await? == Deleted::Yes
            }
            None => false,
        };
        if !removed {
            nodes.delete_lock_if_empty(&generation, &lock).await?;
        }
        Ok(removed)
    }

    /// Deletes lease nodes whose TTL ran out by the server's clock (their
    /// holders stopped renewing but their sessions live on) and lock nodes
    /// left empty (ZooKeeper also reaps those, as container nodes, after
    /// its `znode.container.checkIntervalMs`).
    async fn cleanup_expired(&self) -> Result<u64> {
        let generation = self.inner.sessions.current();
        let nodes = &self.inner.nodes;
        let now_ms = nodes.server_now(&generation).await?;
        let dir = nodes.layout.locks_dir();
        let children = match generation.client.list_children(&dir).await {
            Ok(children) => children,
            Err(ZkError::NoNode) => return Ok(0),
            Err(err) => return Err(map(err, "listing locks")),
        };
        let paths: Vec<String> = children.iter().map(|c| format!("{dir}/{c}")).collect();
        let mut removed = 0;
        for (lock, members) in nodes.queues(&generation, &paths).await? {
            let member_paths: Vec<String> = members
                .iter()
                .map(|m| format!("{lock}/{}", m.node))
                .collect();
            let read = nodes.read(&generation, &member_paths).await?;
            let mut left = read.len();
            for node in &read {
                if node.is_expired(now_ms, nodes.margin)
                    && nodes
                        .delete(&generation, &node.path, Some(node.stat.version))
                        .await?
                        == Deleted::Yes
                {
                    removed += 1;
                    left -= 1;
                }
            }
            if left == 0 {
                nodes.delete_lock_if_empty(&generation, &lock).await?;
            }
        }
        Ok(removed)
    }

    fn loss_signal(&self, lease: &Lease) -> Option<LossSignal> {
        let held = self.inner.registry.get(&lease.lease_id)?;
        let same_node = lease.handle.as_deref().is_none_or(|h| h == held.path);
        same_node.then_some(held.lost)
    }
}
