//! [`RedisBackend`]: the lease contract on Redis keys and Lua scripts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use lockkit_core::spi::{AcquireRequest, ttl_millis};
use lockkit_core::spi::{
    Backoff, PollPolicy, TurnSubscription, WakeSubscription, Wakes, wait_for_turn,
};
use lockkit_core::spi::{LockQueue, QueuePlace};
use lockkit_core::{
    Capabilities, Error, FencingToken, Lease, LeaseId, LockBackend, LockInfo, LockName, LostReason,
    Result,
};
use tokio::time::Instant;

use crate::conn::{self, Conn};
use crate::error::{KIND, classify, is_auth_error};
use crate::keys::{KeyPrefix, LockKeys};
use crate::listener::Listener;
use crate::options::{ParsedUrl, RedisOptions};
use crate::record;
use crate::scripts::SCRIPTS;

/// How many leases `list` reads at once.
const LIST_CONCURRENCY: usize = 32;

/// Locks per `INSPECT_MANY` call of `list` (standalone servers).
const LIST_CHUNK: usize = 500;

/// A lock backend on a Redis server or Redis Cluster (see the
/// [crate docs](crate) for the recipe, guarantees and limits).
///
/// Cheap to clone: clones share the connection, the pub/sub listener and
/// the wake-up hub. Build one with [`connect`](crate::connect) or
/// [`connect_with`](crate::connect_with).
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    options: RedisOptions,
    wakes: Arc<Wakes>,
    listener: Listener,
    redacted_url: String,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.redacted_url)
            .field("prefix", &self.inner.options.prefix.as_str())
            .field("fifo", &self.inner.options.fifo)
            .field("cluster", &self.inner.options.cluster)
            .finish_non_exhaustive()
    }
}

/// What the acquire script should do when it cannot grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Give up (never queue).
    Try,
    /// Join the FIFO queue, or refresh our entry in it.
    Wait,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Try => "try",
            Self::Wait => "wait",
        }
    }
}

impl RedisBackend {
    /// Parses `url`, connects and checks the credentials.
    pub(crate) async fn open(url: &str, options: RedisOptions) -> Result<Self> {
        let parsed = ParsedUrl::parse(url, options)?;
        let scrub = |text: String| match parsed.password() {
            Some(password) => text.replace(&password, "***"),
            None => text,
        };
        let (conn, clients) = conn::open(&parsed).await.map_err(|err| {
            let message = if is_auth_error(&err) {
                format!(
                    "Redis at {:?} refused the credentials: {err} (check the user and password in the URL)",
                    parsed.redacted
                )
            } else {
                format!("cannot connect to Redis at {:?}: {err}", parsed.redacted)
            };
            let message = scrub(message);
            if is_auth_error(&err) || !classify(err.clone(), "").is_retryable() {
                Error::configuration(message)
            } else {
                Error::transient(KIND, message, None)
            }
        })?;
        let ParsedUrl {
            options, redacted, ..
        } = parsed;
        let wakes = Wakes::new();
        let listener = Listener::new(
            clients,
            options.prefix.channel_pattern(),
            Arc::clone(&wakes),
            options.connection_timeout,
        );
        let backend = Self {
            inner: Arc::new(Inner {
                conn,
                options,
                wakes,
                listener,
                redacted_url: redacted,
            }),
        };
        // Verify the connection (and, for a cluster, that the slots are
        // served) before handing the backend out.
        let mut conn = backend.inner.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| {
                let message = format!(
                    "Redis at {:?} did not answer PING: {e}",
                    backend.inner.redacted_url
                );
                if is_auth_error(&e) {
                    Error::configuration(message)
                } else {
                    classify(e, &message)
                }
            })?;
        Ok(backend)
    }

    /// The settings in effect (after the URL's parameters).
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// The key prefix.
    pub fn prefix(&self) -> &KeyPrefix {
        &self.inner.options.prefix
    }

    /// The Redis keys and channel used for `name` (for inspection and
    /// tests).
    pub fn keys(&self, name: &LockName) -> LockKeys {
        self.inner.options.prefix.keys(name)
    }

    /// Whether the release listener's pattern subscription is active now
    /// (it starts with the first wait).
    pub fn listening(&self) -> bool {
        self.inner.listener.is_subscribed()
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    /// Runs the acquire script; `Some(token)` when granted.
    async fn run_acquire(&self, req: &AcquireRequest, mode: Mode) -> Result<Option<FencingToken>> {
        let keys = self.keys(&req.name);
        let entry_ttl = ttl_millis(self.inner.options.queue_entry_ttl);
        let token: i64 = SCRIPTS
            .acquire
            .key(&keys.lock)
            .key(&keys.fence)
            .key(&keys.queue)
            .key(&keys.waiters)
            .arg(req.lease_id.as_str())
            .arg(&req.owner)
            .arg(ttl_millis(req.ttl))
            .arg(mode.as_str())
            .arg(entry_ttl)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| classify(e, "acquiring a lock"))?;
        match token {
            0 => Ok(None),
            t => u64::try_from(t)
                .map(|t| Some(FencingToken::new(t)))
                .map_err(|_| {
                    Error::backend(KIND, format!("invalid fencing token {t} from Redis"), None)
                }),
        }
    }

    /// Compare-and-delete of `name`'s lease held by `lease_id`; `true` if
    /// it was there (and unexpired).
    async fn release_id(&self, name: &LockName, lease_id: &LeaseId) -> Result<bool> {
        let keys = self.keys(name);
        let reply: redis::Value = SCRIPTS
            .release
            .key(&keys.lock)
            .key(&keys.queue)
            .key(&keys.waiters)
            .arg(lease_id.as_str())
            .arg(&keys.channel)
            .arg(name.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| classify(e, "releasing a lease"))?;
        Ok(self.announced(&reply))
    }

    /// A script's reply: 0 when it changed nothing, else the payload it
    /// published — delivered to this process's waiters at once, without
    /// waiting for the message.
    fn announced(&self, reply: &redis::Value) -> bool {
        match reply {
            redis::Value::BulkString(payload) => {
                self.inner.wakes.deliver(&String::from_utf8_lossy(payload));
                true
            }
            redis::Value::SimpleString(payload) => {
                self.inner.wakes.deliver(payload);
                true
            }
            _ => false,
        }
    }

    /// Removes a FIFO waiter's queue entry and wakes the (new) head.
    async fn leave_queue(&self, name: &LockName, lease_id: &LeaseId) -> Result<bool> {
        let keys = self.keys(name);
        let reply: redis::Value = SCRIPTS
            .leave
            .key(&keys.queue)
            .key(&keys.waiters)
            .arg(lease_id.as_str())
            .arg(&keys.channel)
            .arg(name.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| classify(e, "leaving the FIFO queue"))?;
        Ok(self.announced(&reply))
    }

    /// A FIFO waiter's subscription: woken only when a release or a leave
    /// makes it the head of the queue (`lockkit_core::spi::Wakes`), with the listener
    /// subscribed (unless pub/sub is off).
    async fn subscribe_turn(&self, req: &AcquireRequest) -> TurnSubscription {
        let subscription = self.inner.wakes.subscribe_turn(&req.name, &req.lease_id);
        if self.inner.options.pubsub {
            self.inner.listener.ensure_subscribed().await;
        }
        subscription
    }

    /// A hub subscription for `name`, with the listener subscribed (unless
    /// pub/sub is off: then only this process's hints wake it).
    async fn subscribe(&self, name: &LockName) -> WakeSubscription {
        let subscription = self.inner.wakes.subscribe_name(name);
        if self.inner.options.pubsub {
            self.inner.listener.ensure_subscribed().await;
        }
        subscription
    }
}

/// A FIFO waiter's state between the driver's steps: its wake-up
/// subscription (taken before its first script, so no release message is
/// missed) and its poll backoff.
struct FifoPlace {
    wake: TurnSubscription,
    backoff: Backoff,
}

/// FIFO mode: waiters queue in Redis (the acquire script in `wait` mode
/// adds or refreshes the entry, and grants only the head). The core's
/// driver steps and waits; cancellation and timeouts leave the queue
/// through [`LockBackend::abandon`].
/// Leases per `EXTEND_MANY` call: large enough that a renewal tick is a
/// handful of requests, small enough that one call holds the server for
/// well under a millisecond.
const EXTEND_MANY_CHUNK: usize = 500;

#[async_trait]
impl LockQueue for RedisBackend {
    async fn step(
        &self,
        req: &AcquireRequest,
        place: &mut Option<QueuePlace>,
    ) -> Result<Option<Lease>> {
        if place.is_none() {
            *place = Some(QueuePlace::new(FifoPlace {
                wake: self.subscribe_turn(req).await,
                backoff: self.inner.options.poll.backoff(),
            }));
        }
        let sent_at = Instant::now();
        // Idempotent per lease id: a retry refreshes the same entry, or
        // returns the grant it already made.
        Ok(self
            .run_acquire(req, Mode::Wait)
            .await?
            .map(|token| Lease::granted(req, token, sent_at)))
    }

    async fn wait_turn(
        &self,
        _req: &AcquireRequest,
        place: &mut QueuePlace,
        until: Option<Instant>,
    ) -> Result<()> {
        let Some(place) = place.get_mut::<FifoPlace>() else {
            return Ok(());
        };
        // A live waiter refreshes its queue entry (by stepping again) well
        // before it expires.
        let refresh = self.inner.options.queue_entry_ttl / 3;
        wait_for_turn(Some(&mut place.wake), &mut place.backoff, refresh, until).await;
        Ok(())
    }
}

impl RedisBackend {
    /// `list` on a cluster, whose keys live in many slots: one `INSPECT`
    /// per lock, `LIST_CONCURRENCY` at a time.
    async fn list_lock_by_lock(&self, names: Vec<LockName>) -> Result<Vec<LockInfo>> {
        let mut infos: Vec<LockInfo> = futures::stream::iter(names)
            .map(|name| async move {
                match self.current(&name).await {
                    Err(Error::Backend { message, .. }) => {
                        tracing::warn!(lock = %name, %message, "skipping a key that is not a lockkit lease");
                        Ok(None)
                    }
                    other => other,
                }
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_filter_map(|info| async move { Ok(info) })
            .try_collect()
            .await?;
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }
}

#[async_trait]
impl LockBackend for RedisBackend {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fifo: self.inner.options.fifo,
            push_wakeup: self.inner.options.pubsub,
            durable_tokens: self.inner.options.durable_tokens,
            ttl_granularity: Duration::from_millis(1),
            expiry_slack: Duration::from_millis(50),
            max_permits: 1,
        }
    }

    async fn try_acquire(&self, req: &AcquireRequest) -> Result<Option<Lease>> {
        let sent_at = Instant::now();
        Ok(self
            .run_acquire(req, Mode::Try)
            .await?
            .map(|token| Lease::granted(req, token, sent_at)))
    }

    fn queue(&self) -> Option<&dyn LockQueue> {
        self.inner.options.fifo.then_some(self as &dyn LockQueue)
    }

    /// Leaves the FIFO queue and deletes a lease carrying this lease id, if
    /// a request whose reply was lost left one (compare-and-delete, so no
    /// other holder is touched).
    async fn abandon(&self, req: &AcquireRequest) -> Result<()> {
        if self.inner.options.fifo {
            self.leave_queue(&req.name, &req.lease_id).await?;
        }
        self.release_id(&req.name, &req.lease_id).await.map(|_| ())
    }

    fn abandon_in_background(&self, req: AcquireRequest) {
        lockkit_core::spi::spawn_abandon(self, req);
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let keys = self.keys(&lease.name);
        let sent_at = Instant::now();
        let extended: i64 = SCRIPTS
            .extend
            .key(&keys.lock)
            .arg(lease.lease_id.as_str())
            .arg(ttl_millis(ttl))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| classify(e, "extending a lease"))?;
        if extended == 1 {
            Ok(lease.renewed(ttl, sent_at))
        } else {
            Err(Error::lost(&lease.name, LostReason::NotHeld))
        }
    }

    /// One pipeline (`SCRIPT LOAD` + one `EVALSHA` per lease) on a
    /// standalone server: one round trip for every renewal due at once. In
    /// a cluster the leases' slots live on different nodes, so the
    /// extensions run concurrently instead.
    async fn extend_many(&self, batch: &[(Lease, Duration)]) -> Vec<Result<Lease>> {
        if batch.len() <= 1 || matches!(self.inner.conn, Conn::Cluster(_)) {
            return futures::future::join_all(
                batch.iter().map(|(lease, ttl)| self.extend(lease, *ttl)),
            )
            .await;
        }
        // One script call per chunk, all chunks in one pipeline: one round
        // trip and one request per EXTEND_MANY_CHUNK leases.
        let mut pipe = redis::pipe();
        for chunk in batch.chunks(EXTEND_MANY_CHUNK) {
            let mut invocation = SCRIPTS.extend_many.prepare_invoke();
            for (lease, ttl) in chunk {
                invocation
                    .key(self.keys(&lease.name).lock)
                    .arg(lease.lease_id.as_str())
                    .arg(ttl_millis(*ttl));
            }
            pipe.invoke_script(&invocation);
        }
        let sent_at = Instant::now();
        let replies: std::result::Result<Vec<Vec<i64>>, _> =
            pipe.query_async(&mut self.conn()).await;
        let replies = match replies {
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                // A restarted or flushed server: load the script and retry once.
                let mut load = redis::pipe();
                load.load_script(&SCRIPTS.extend_many).ignore();
                match load.query_async::<()>(&mut self.conn()).await {
                    Ok(()) => pipe.query_async(&mut self.conn()).await,
                    Err(err) => Err(err),
                }
            }
            other => other,
        };
        match replies {
            Ok(replies) => {
                let flat: Vec<i64> = replies.into_iter().flatten().collect();
                if flat.len() != batch.len() {
                    return batch
                        .iter()
                        .map(|_| {
                            Err(Error::backend(
                                KIND,
                                "a batched renewal returned the wrong number of replies",
                                None,
                            ))
                        })
                        .collect();
                }
                batch
                    .iter()
                    .zip(flat)
                    .map(|((lease, ttl), extended)| {
                        if extended == 1 {
                            Ok(lease.renewed(*ttl, sent_at))
                        } else {
                            Err(Error::lost(&lease.name, LostReason::NotHeld))
                        }
                    })
                    .collect()
            }
            Err(err) => {
                let doing = format!("renewing {} leases", batch.len());
                batch
                    .iter()
                    .map(|_| Err(classify(err.clone(), &doing)))
                    .collect()
            }
        }
    }

    async fn release(&self, lease: &Lease) -> Result<bool> {
        self.release_id(&lease.name, &lease.lease_id).await
    }

    async fn holders(&self, name: &LockName) -> Result<Vec<LockInfo>> {
        let one: Result<Option<LockInfo>> = async {
            let keys = self.keys(name);
            let found: Option<(Vec<u8>, i64, i64)> = SCRIPTS
                .inspect
                .key(&keys.lock)
                .invoke_async(&mut self.conn())
                .await
                .map_err(|e| classify(e, "reading a lock"))?;
            match found {
                // -2: the key expired between GET and PTTL (cannot happen inside
                // one script, but be safe).
                Some((_, -2, _)) | None => Ok(None),
                Some((value, pttl, now)) => {
                    record::decode(name.clone(), &value, pttl, now).map(Some)
                }
            }
        }
        .await;
        Ok(one?.into_iter().collect())
    }

    async fn list(&self) -> Result<Vec<LockInfo>> {
        let prefix = &self.inner.options.prefix;
        let keys = conn::scan_all(&self.inner.conn, &prefix.lock_pattern())
            .await
            .map_err(|e| classify(e, "listing locks"))?;
        let names: Vec<LockName> = keys
            .iter()
            .filter_map(|key| prefix.name_of_lock_key(key))
            .collect();
        if !matches!(self.inner.conn, Conn::Single(_)) {
            return self.list_lock_by_lock(names).await;
        }
        // One INSPECT_MANY call per LIST_CHUNK locks, each at one server
        // time.
        let mut infos = Vec::with_capacity(names.len());
        for chunk in names.chunks(LIST_CHUNK) {
            let mut invocation = SCRIPTS.inspect_many.prepare_invoke();
            for name in chunk {
                invocation.key(self.keys(name).lock);
            }
            let (now, found): (i64, Vec<Option<(Vec<u8>, i64)>>) = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(|e| classify(e, "listing locks"))?;
            for (name, found) in chunk.iter().zip(found) {
                match found {
                    Some((_, -2)) | None => {}
                    Some((value, pttl)) => match record::decode(name.clone(), &value, pttl, now) {
                        Ok(info) => infos.push(info),
                        Err(err) => {
                            tracing::warn!(lock = %name, error = %err, "skipping a key that is not a lockkit lease");
                        }
                    },
                }
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let keys = self.keys(name);
        let reply: redis::Value = SCRIPTS
            .force_release
            .key(&keys.lock)
            .key(&keys.queue)
            .key(&keys.waiters)
            .arg(&keys.channel)
            .arg(name.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| classify(e, "force-releasing a lock"))?;
        Ok(self.announced(&reply))
    }

    /// Redis deletes expired lease keys itself (`PX`), and FIFO queue keys
    /// expire with their last waiter, so there is nothing to clean up:
    /// always `Ok(0)`, without I/O. Fence counters are kept on purpose.
    async fn cleanup_expired(&self) -> Result<u64> {
        Ok(0)
    }

    async fn subscribe_releases(&self, name: &LockName) -> Result<Option<WakeSubscription>> {
        if self.inner.options.pubsub {
            Ok(Some(self.subscribe(name).await))
        } else {
            Ok(None)
        }
    }

    fn poll_policy(&self) -> PollPolicy {
        self.inner.options.poll
    }
}
