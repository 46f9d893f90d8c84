//! # lockkit-redis
//!
//! The lockkit lease contract on Redis (standalone or Redis Cluster), with
//! the [`redis`] crate (async, Tokio, multiplexed self-reconnecting
//! connections).
//!
//! ```no_run
//! use std::sync::Arc;
//! use lockkit_core::Locker;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> lockkit_core::Result<()> {
//! let backend = lockkit_redis::connect("redis://:secret@127.0.0.1:6379/0?prefix=etl:").await?;
//! let locker = Locker::new(Arc::new(backend), "pipeline_1")?;
//! let guard = locker.acquire("node_b").await?;
//! // … pass guard.token() to storage that checks fencing tokens …
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Recipe
//!
//! Keys of lock `N` share the hash tag `{N}` (braces and `%` in the name
//! percent-encoded), so they live in one cluster slot:
//! `<prefix>{N}:lock`, `:fence`, `:queue`, `:waiters`, a semaphore's
//! `:permits` and `:holders`, and the channel `:released` (see [`keys`]).
//!
//! - **acquire**: one Lua script computes the next token from the fence
//!   counter, runs `SET lock "<lease id>\n<token>\n<ms>\n<owner>" NX PX ttl`
//!   and, only when that succeeded, `INCR`s the counter and returns the
//!   token. It refuses while FIFO waiters are queued ahead (see below). A
//!   retry with the same lease id (after a lost reply) gets the same grant
//!   back with its TTL reset, instead of waiting out its own lease.
//! - **extend**: Lua compare-and-`PEXPIRE` on the lease id.
//! - **release**: Lua compare-and-`DEL` that `PUBLISH`es the lock name on
//!   its channel; **force-release** is `DEL` + `PUBLISH`.
//! - **current**: one script returns the value, `PTTL` and the server's
//!   `TIME`; **list** `SCAN`s `<prefix>{*}:lock` on every node (every
//!   master in a cluster; never `KEYS`).
//! - **cleanup_expired** is a no-op returning 0: Redis expires keys itself.
//!
//! ## Semaphores
//!
//! A request for N > 1 permits ([`AcquireRequest::permits`](lockkit_core::spi::AcquireRequest::permits))
//! uses two more keys of the name: the sorted set `:permits` (one member
//! per held permit, the lease id, scored by its expiry in the server's
//! ms) and the hash `:holders` (lease id → token, grant time, N, owner).
//! A lock (N = 1) keeps the single string key above, so its round trips
//! and stored format are unchanged.
//!
//! - **acquire** is the same one script: it deletes members whose score
//!   is not above the server's `TIME` (and their details), counts the
//!   live ones, adds the FIFO waiters queued ahead of the request, and
//!   admits while the sum stays below N — `INCR` of the fence, `ZADD` of
//!   the lease id at `now + ttl`, `HSET` of its details. A request whose
//!   N differs from the live holders' (the lock's string counts as a
//!   holder of 1) gets [`Error::PermitsMismatch`](lockkit_core::Error::PermitsMismatch)
//!   and leaves the queue.
//! - **extend** rescores a member that is still live; **release** removes
//!   it and publishes the name followed by a bare `\n`, which wakes every
//!   queued waiter of the name (several may enter now, not only the head);
//!   **force-release** deletes every permit.
//! - Both keys `PEXPIREAT` their latest member's expiry after every
//!   change, so a semaphore whose holders all crashed leaves no key
//!   behind; the fence counter stays, as for locks.
//! - `holders` reads the live members by the server's clock, sorted by
//!   token; `list` also `SCAN`s `<prefix>{*}:permits`. Batched renewal
//!   (`extend_many`) pipelines the locks and extends permits one by one
//!   beside them.
//!
//! Fencing: every grant's token is an `INCR` of the name's one counter,
//! larger than every earlier grant whichever permit it takes; a store
//! fencing N > 1 holders orders writes by token but must not refuse a
//! lower live token (`ARCHITECTURE.md` §13).
//!
//! Scripts are sent by SHA (`EVALSHA`) and reloaded on `NOSCRIPT`. Expiry is
//! decided by the server's clock (`PX`, `TIME`); the holder's own deadline is
//! counted on its monotonic clock from *before* the request was sent.
//!
//! ## Waiting
//!
//! Each backend instance keeps one pub/sub connection, `PSUBSCRIBE`d to
//! `<prefix>{*}:released`, shared by all its waiters (one subscription, no
//! per-wait round trip). A release wakes the waiters of that name at once;
//! a jittered, capped poll ([`RedisOptions::poll`], 10 ms growing to 500 ms)
//! is the fallback for lost messages and for leases that simply expire.
//! Waiters never sleep past their deadline. Every instance receives the
//! release messages of every lock under its prefix: cheap for the tens of
//! locks of a pipeline, worth a separate prefix per application when
//! thousands of locks churn.
//!
//! **Default: FIFO mode** ([`RedisOptions::fifo`]) queues waiters in Redis
//! (a sorted set in arrival order plus a sorted set of liveness deadlines);
//! only the head may take a free lock, and `try_acquire` fails while anyone
//! is queued. A waiter refreshes its entry
//! on every retry (at least every third of [`RedisOptions::queue_entry_ttl`],
//! default 3 s); a waiter that dies blocks the queue for at most that TTL,
//! then its entry is dropped. Timed-out waiters leave the queue before
//! returning; cancelled ones leave from a task spawned on the current
//! runtime (so for a moment after the cancel the entry may still be there;
//! without a runtime it expires after the entry TTL). The queue keys
//! expire with their last entry. All clients of one lock should use the
//! same mode; unfair-mode clients still respect a FIFO queue when they
//! `try`, but they do not join it.
//!
//! **Unfair mode** (`fifo(false)`, URL `?fifo=false`): no queue; after a
//! release whichever client tries first wins, which under steady
//! contention is nearly always the releaser asking again — waiters starve
//! (the benchmark report in `docs/benchmarks/` shows it: Jain's index 0.36
//! with 16 contenders, waits up to the timeout). It never waits for a dead
//! waiter's entry to expire, and is for locks that are rarely contended.
//!
//! ## URLs
//!
//! `redis://[user][:password]@host[:port][/db][?params]`, `rediss://…` for
//! TLS (`#insecure` skips certificate checks; `tls_ca_file=/path/ca.pem`
//! trusts a private CA). lockkit's parameters: `prefix` (default
//! `lockkit:`), `fifo`, `cluster` (Redis Cluster; the host is a seed),
//! `nodes=host:port,host:port` (more seeds), `queue_ttl_ms`, `timeout_ms`
//! (per command, default 2000), `durable_tokens`, `pubsub=false` (poll
//! only, for ACLs without `PSUBSCRIBE`). Others go to the `redis`
//! crate. ACL users and passwords come from the URL; a refused login is an
//! [`Error::Configuration`](lockkit_core::Error::Configuration) whose
//! message never contains the password.
//!
//! ## Guarantees and limits — what Redis cannot promise
//!
//! On **one Redis server that stays up**, the contract holds: one holder at
//! a time, strictly increasing tokens, only the lease id can extend or
//! release, expiry by the server's clock.
//!
//! - **Replication is asynchronous.** If a master fails over to a replica
//!   that had not yet received the latest `SET` or `INCR`, the new master
//!   may grant the lock again while the old holder still runs, and may hand
//!   out a token already used. Redis Cluster and Sentinel failovers have this
//!   window. Fencing tokens checked by the storage you write to are the
//!   defence against a second holder; after a failover they can repeat too.
//! - **Restarts.** Without `appendonly yes` and `appendfsync always`, a
//!   restarted server loses recent writes: live leases disappear (another
//!   holder can enter) and the fence counter can go back. With
//!   `appendfsync always` every acquire is on disk before it is
//!   acknowledged and tokens keep increasing across restarts (a test checks
//!   this); leases also survive, with their TTL running on.
//! - **Eviction.** Run with `maxmemory-policy noeviction`: any eviction
//!   policy may delete fence counters (tokens restart) and `volatile-*`/
//!   `allkeys-*` ones may delete live leases.
//! - **Clocks.** Expiry uses the server's clock; a server whose clock jumps
//!   expires leases early or late.
//! - **Fence counters stay.** One small key per lock name ever used, like
//!   the fence table of the SQL backend; deleting them restarts tokens.
//!
//! For the strongest guarantee: a single master (or a cluster whose
//! failovers you treat as possible double grants), `appendonly yes`,
//! `appendfsync always`, `maxmemory-policy noeviction`, and storage that
//! rejects stale fencing tokens. This crate does not implement Redlock: its
//! safety rests on timing assumptions (bounded pauses and clock drift) that
//! lockkit does not want to promise.

mod backend;
mod conn;
mod error;
pub mod keys;
mod listener;
mod options;
mod record;
mod scripts;

use lockkit_core::Result;

pub use crate::backend::RedisBackend;
pub use crate::keys::{DEFAULT_PREFIX, KeyPrefix, LockKeys};
pub use crate::options::{RedisOptions, URL_PARAMS, URL_SCHEMES};

/// Connects to Redis at `url` with default [`RedisOptions`] (URL parameters
/// apply; see the [crate docs](crate#urls)).
///
/// # Errors
/// [`Error::Configuration`](lockkit_core::Error::Configuration) for a
/// malformed URL, another scheme, refused credentials or an unreadable CA
/// file (passwords redacted); [`Error::InvalidInput`](lockkit_core::Error::InvalidInput)
/// for invalid parameter values; [`Error::Transient`](lockkit_core::Error::Transient)
/// when the server cannot be reached.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lockkit_core::Result<()> {
/// // Redis Cluster, fair queueing, a prefix per application:
/// let backend = lockkit_redis::connect(
///     "redis://10.0.0.1:7000?cluster=true&nodes=10.0.0.2:7000,10.0.0.3:7000&fifo=true&prefix=etl:",
/// )
/// .await?;
/// # Ok(())
/// # }
/// ```
pub async fn connect(url: &str) -> Result<RedisBackend> {
    connect_with(url, RedisOptions::default()).await
}

/// Connects to Redis at `url` with `options`; parameters in the URL
/// override the options.
///
/// # Errors
/// As [`connect`], plus [`Error::InvalidInput`](lockkit_core::Error::InvalidInput)
/// for invalid options (checked before any I/O).
///
/// ```no_run
/// use lockkit_redis::{KeyPrefix, RedisOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> lockkit_core::Result<()> {
/// let options = RedisOptions::default().fifo(true).prefix(KeyPrefix::new("etl:")?);
/// let backend = lockkit_redis::connect_with("rediss://app:secret@redis.internal:6380", options).await?;
/// # Ok(())
/// # }
/// ```
pub async fn connect_with(url: &str, options: RedisOptions) -> Result<RedisBackend> {
    RedisBackend::open(url, options).await
}
