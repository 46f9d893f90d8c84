//! [`RedisBackend`]: the lease contract on Redis keys and Lua scripts.

use std::collections::HashSet;
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
    ///
    /// # Errors
    /// [`Error::PermitsMismatch`] when the holders asked with another
    /// permit count (the script has taken the request out of the queue).
    async fn run_acquire(&self, req: &AcquireRequest, mode: Mode) -> Result<Option<FencingToken>> {
        let keys = self.keys(&req.name);
        let entry_ttl = ttl_millis(self.inner.options.queue_entry_ttl);
        let token: i64 = SCRIPTS
            .acquire
            .key(&keys.lock)
            .key(&keys.fence)
            .key(&keys.queue)
            .key(&keys.waiters)
            .key(&keys.permits)
            .key(&keys.holders)
            .arg(req.lease_id.as_str())
            .arg(&req.owner)
            .arg(ttl_millis(req.ttl))
            .arg(mode.as_str())
            .arg(entry_ttl)
            .arg(req.permits)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| classify(e, "acquiring a lock"))?;
        match token {
            0 => Ok(None),
            t if t < 0 => match u32::try_from(-t) {
                Ok(held) => Err(Error::permits_mismatch(&req.name, held, req.permits)),
                Err(_) => Err(Error::backend(
                    KIND,
                    format!("invalid permit count {} from Redis", -t),
                    None,
                )),
            },
            t => u64::try_from(t)
                .map(|t| Some(FencingToken::new(t)))
                .map_err(|_| {
                    Error::backend(KIND, format!("invalid fencing token {t} from Redis"), None)
                }),
        }
    }

    /// Compare-and-delete of `name`'s lease (of a lock when `permits` is 1,
    /// else a semaphore's permit) held by `lease_id`; `true` if it was
    /// there (and unexpired).
    async fn release_id(&self, name: &LockName, lease_id: &LeaseId, permits: u32) -> Result<bool> {
        let keys = self.keys(name);
        let mut script = if permits == 1 {
            SCRIPTS.release.key(&keys.lock)
        } else {
            let mut script = SCRIPTS.release_permit.key(&keys.permits);
            script.key(&keys.holders);
            script
        };
        let reply: redis::Value = script
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
    async fn leave_queue(&self, req: &AcquireRequest) -> Result<bool> {
        let keys = self.keys(&req.name);
        let reply: redis::Value = SCRIPTS
            .leave
            .key(&keys.queue)
            .key(&keys.waiters)
            .arg(req.lease_id.as_str())
            .arg(&keys.channel)
            .arg(req.name.as_str())
            .arg(req.permits)
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
    /// Renews locks' leases (permit count 1): one pipeline of `EXTEND_MANY`
    /// calls, one round trip.
    async fn extend_locks(&self, batch: &[(Lease, Duration)]) -> Vec<Result<Lease>> {
        if batch.is_empty() {
            return Vec::new();
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

    /// `list` of locks whose keys live in many slots (a cluster) or that
    /// are semaphores: one `INSPECT` per name, `LIST_CONCURRENCY` at a
    /// time.
    async fn list_lock_by_lock(&self, names: Vec<LockName>) -> Result<Vec<LockInfo>> {
        let per_name: Vec<Vec<LockInfo>> = futures::stream::iter(names)
            .map(|name| async move {
                match self.holders(&name).await {
                    Err(Error::Backend { message, .. }) => {
                        tracing::warn!(lock = %name, %message, "skipping a key that is not a lockkit lease");
                        Ok(Vec::new())
                    }
                    other => other,
                }
            })
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        let mut infos: Vec<LockInfo> = per_name.into_iter().flatten().collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name).then(a.token.cmp(&b.token)));
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
            max_permits: lockkit_core::MAX_PERMITS,
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
            self.leave_queue(req).await?;
        }
        self.release_id(&req.name, &req.lease_id, req.permits)
            .await
            .map(|_| ())
    }

    fn abandon_in_background(&self, req: AcquireRequest) {
        lockkit_core::spi::spawn_abandon(self, req);
    }

    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let keys = self.keys(&lease.name);
        let sent_at = Instant::now();
        let mut script = if lease.permits == 1 {
            SCRIPTS.extend.key(&keys.lock)
        } else {
            let mut script = SCRIPTS.extend_permit.key(&keys.permits);
            script.key(&keys.holders);
            script
        };
        let extended: i64 = script
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
    ///
    /// Semaphore permits live in their own keys (`:permits`): they are
    /// extended one by one, concurrently with the locks' pipeline.
    async fn extend_many(&self, batch: &[(Lease, Duration)]) -> Vec<Result<Lease>> {
        if batch.len() <= 1 || matches!(self.inner.conn, Conn::Cluster(_)) {
            return futures::future::join_all(
                batch.iter().map(|(lease, ttl)| self.extend(lease, *ttl)),
            )
            .await;
        }
        if batch.iter().all(|(lease, _)| lease.permits == 1) {
            return self.extend_locks(batch).await;
        }
        let (locks, permits): (Vec<_>, Vec<_>) = batch
            .iter()
            .enumerate()
            .partition(|(_, (l, _))| l.permits == 1);
        let lock_batch: Vec<(Lease, Duration)> = locks.iter().map(|(_, b)| (*b).clone()).collect();
        let (lock_results, permit_results) = futures::join!(
            self.extend_locks(&lock_batch),
            futures::future::join_all(permits.iter().map(|(_, (l, ttl))| self.extend(l, *ttl)))
        );
        let mut out: Vec<Option<Result<Lease>>> = (0..batch.len()).map(|_| None).collect();
        for ((i, _), result) in locks.iter().zip(lock_results) {
            out[*i] = Some(result);
        }
        for ((i, _), result) in permits.iter().zip(permit_results) {
            out[*i] = Some(result);
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Error::backend(KIND, "a batched renewal lost a reply", None))
                })
            })
            .collect()
    }

    async fn release(&self, lease: &Lease) -> Result<bool> {
        self.release_id(&lease.name, &lease.lease_id, lease.permits)
            .await
    }

    /// The lock's lease, or a semaphore's live permits, read with the
    /// server's time in one script.
    async fn holders(&self, name: &LockName) -> Result<Vec<LockInfo>> {
        let keys = self.keys(name);
        let (now, permits, found): (i64, u32, Vec<(Vec<u8>, i64)>) = SCRIPTS
            .inspect
            .key(&keys.lock)
            .key(&keys.permits)
            .key(&keys.holders)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| classify(e, "reading a lock"))?;
        let mut infos = found
            .into_iter()
            // -2: the key expired between GET and PTTL (cannot happen
            // inside one script, but be safe).
            .filter(|(_, pttl)| *pttl != -2)
            .map(|(value, pttl)| {
                record::decode(name.clone(), &value, pttl, now).map(|i| i.with_permits(permits))
            })
            .collect::<Result<Vec<_>>>()?;
        infos.sort_by_key(|info| info.token);
        Ok(infos)
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
        let semaphores = conn::scan_all(&self.inner.conn, &prefix.permits_pattern())
            .await
            .map_err(|e| classify(e, "listing semaphores"))?;
        let locks: HashSet<&LockName> = names.iter().collect();
        // A name is a lock or a semaphore, never both (the acquire script
        // refuses a mismatch), but a stray key must not list it twice.
        let semaphores: Vec<LockName> = semaphores
            .iter()
            .filter_map(|key| prefix.name_of_permits_key(key))
            .filter(|name| !locks.contains(name))
            .collect();
        if !matches!(self.inner.conn, Conn::Single(_)) {
            return self
                .list_lock_by_lock(names.into_iter().chain(semaphores).collect())
                .await;
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
        infos.extend(self.list_lock_by_lock(semaphores).await?);
        infos.sort_by(|a, b| a.name.cmp(&b.name).then(a.token.cmp(&b.token)));
        Ok(infos)
    }

    async fn force_release(&self, name: &LockName) -> Result<bool> {
        let keys = self.keys(name);
        let reply: redis::Value = SCRIPTS
            .force_release
            .key(&keys.lock)
            .key(&keys.queue)
            .key(&keys.waiters)
            .key(&keys.permits)
            .key(&keys.holders)
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
