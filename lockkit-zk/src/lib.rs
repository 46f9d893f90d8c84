//! # lockkit-zk
//!
//! ZooKeeper backend for lockkit: the classic lock recipe (ephemeral
//! sequential nodes, each waiter watching only its predecessor) with
//! per-lease TTLs, fencing tokens from `czxid`, digest authentication with
//! ACLs, and chroots; semaphores (N permits per name) by the same nodes
//! with N leaders.
//!
//! ```no_run
//! # async fn demo() -> lockkit_core::Result<()> {
//! use std::sync::Arc;
//! use lockkit_core::Locker;
//!
//! let backend = lockkit_zk::connect("zk://lockkit:s3cret@zk1:2181,zk2:2181,zk3:2181/pipelines").await?;
//! let locker = Locker::new(Arc::new(backend), "pipeline_1")?;
//! let guard = locker.acquire("node_b").await?;
//! // … pass guard.token() to storage that checks fencing tokens …
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## URL
//!
//! `zk://[user:password@]host[:port][,host[:port]…][/chroot][?param=value…]`
//! (or `zookeeper://`); see [`ZkUrl::parse`] and [`ZkOptions`] for the
//! parameters (`session_timeout_ms`, `root`, `expiry_margin_ms`,
//! `connect_timeout_ms`). The chroot is created if missing.
//!
//! ## Recipe
//!
//! Each lock is a container node `<root>/locks/<percent-encoded name>`;
//! each acquisition creates one `EPHEMERAL_SEQUENTIAL` child
//! `lk-<lease id>-<sequence>` holding its owner, lease id, TTL, permit
//! count (1 for a lock) and state (`held` or `waiting`).
//!
//! - **Protected creates.** The lease id in the node name lets a create
//!   whose reply was lost (connection loss) be found again by listing the
//!   lock's children, instead of leaving an orphan that would block the
//!   queue; stray duplicates are deleted when seen.
//! - **Grant.** The lowest sequence holds (the first N, for a semaphore:
//!   see "Semaphores" below). A free lock costs one round trip:
//!   the lock node and the lease node are created in one transaction, so
//!   the new node is known to be alone (servers before 3.7.2 and 3.8.2 —
//!   Debian 12 ships 3.8.0 — leave the new node's stat out of a
//!   transaction's reply, and it is read in a second request). Otherwise
//!   the queue is listed. A release is one transaction too (the lease node
//!   and, if that leaves it empty, the lock node); when other nodes are
//!   queued, the lease node goes alone and the lock node is removed after
//!   it if the others left meanwhile.
//! - **Waiting.** A lock's waiter sets a watch on the node just before its own
//!   (FIFO, no herd effect), so a release wakes exactly one waiter, by
//!   push. When its turn comes it is granted at once if its node was
//!   written within the last tenth of its TTL (the lease's deadline counts
//!   from that write; the first renewal marks the node `held`), else after
//!   rewriting the node as `held`. The first live node of a queue is its
//!   holder, whatever its state says.
//! - **Fencing token** = the lease node's `czxid`, the zxid of its creation:
//!   unique and increasing across the ensemble, leader changes and
//!   restarts (ZooKeeper persists its transaction log), and grants follow
//!   creation order.
//! - **Per-lease TTL.** One ZooKeeper session is shared by every lease of
//!   the backend, so the TTL is enforced on top of it: renewing rewrites the
//!   node, which stamps its `mtime` with the leader's clock; a contender
//!   treats a `held` node as expired once the server's clock (read as the
//!   `mtime` of its own write) passes `mtime + TTL + expiry margin`, and
//!   deletes it only if unchanged since read (version check), so a renewal
//!   racing the takeover wins. A waiter arms a timer for that moment besides
//!   its watch. The holder's own deadline is counted on its monotonic clock
//!   from before its write, so it always ends first.
//! - **Waiters expire too.** A waiting node follows the same rule with its
//!   request's TTL: live waiters rewrite their node every third of the TTL,
//!   and the waiter behind a dead one deletes it once `mtime + TTL +
//!   margin` has passed. A waiter process that dies while queued therefore
//!   blocks the queue for at most its TTL plus the margin, not for the
//!   session timeout (a waiter that could not refresh in time, say on an
//!   overloaded host, finds its node gone and queues again at the back).
//! - **Session.** One session per backend instance; its nodes vanish when it
//!   expires, so a crashed holder frees the lock after
//!   `min(TTL, session timeout)` plus the margin. Every lease of the session
//!   is reported lost (its guard's loss signal fires) when the session
//!   expires or closes, or when no reply came from the server for 2/3 of the
//!   negotiated session timeout: the server may expire the session after
//!   the full timeout and give the lock to someone else, and we must stop
//!   claiming it before that. A heartbeat read every 1/6 of the timeout
//!   keeps a quiet connection proven alive while leases are held. After an
//!   expiry a new session is opened.
//! - **Loss by deletion.** Each held node is watched; when it disappears
//!   without this backend releasing it (an admin's `force_release`, a
//!   takeover after expiry) the lease's loss signal fires at once.
//! - **Security.** With `user:password` in the URL the session adds
//!   `digest` auth, and every node lockkit creates gets the ACL
//!   `auth::cdrwa` plus `world:anyone:r`: anyone may read, only clients
//!   authenticated as that user may create, renew or delete leases (in
//!   ZooKeeper, deleting a node needs DELETE on its parent, which the lock
//!   node's ACL denies). [`connect`] writes to `<root>/clock` to check the
//!   credentials: a wrong password is a [`Error::Configuration`] naming the
//!   URL with the password redacted.
//! - **Clean-up.** Releasing, a timed-out or cancelled acquire and a
//!   refused try delete their node, together with the lock node when that
//!   leaves it empty (one transaction). `cleanup_expired` deletes expired
//!   `held` nodes and empty lock nodes; ZooKeeper also reaps empty
//!   container nodes by itself.
//!
//! ## Semaphores
//!
//! A request for one of N permits (`AcquireRequest::with_permits`,
//! `LockOptions::permits`; up to [`lockkit_core::MAX_PERMITS`]) uses the
//! lock's nodes unchanged — a lock is the case N = 1, on the same code
//! path — with the ephemeral-sequential recipe with N leaders
//! (`ARCHITECTURE.md` §13 "Semaphores"):
//!
//! - **Nodes.** Each request creates its protected `EPHEMERAL_SEQUENTIAL`
//!   child as above; its data carries N. One node per permit holder and
//!   per waiter; nothing else is stored per name.
//! - **Admission.** A node holds a permit when fewer than N live nodes
//!   precede it (by sequence; expired ones are deleted first, versioned)
//!   and all of them carry N: the first N children hold. Nodes only leave
//!   the part of the queue ahead of a node — later creates get higher
//!   sequences — so an admitted node stays admitted, and the last of any
//!   set of holders saw every other one ahead of it: never more than N,
//!   across clients, sessions and processes. [`holders`] reports the
//!   nodes this rule admits, by the server's clock (waiting or not: a node
//!   in the first N is granted when it next looks), `list` one record per
//!   such node, and `force_release` deletes them all (their holders'
//!   node watches fire the loss signals).
//! - **Waking.** A waiter at index i ≥ N is admitted once fewer than N
//!   live nodes precede it — when *any* of them goes, which a single
//!   predecessor watch can miss. So a semaphore's waiter (N > 1) sets a
//!   children watch on the lock node and compares the children it returns
//!   with the live nodes it saw ahead: one of them gone, it steps again at
//!   once; otherwise (a node joined behind it) it re-arms the watch without
//!   reading the queue. A lock's waiter (N = 1) keeps the predecessor-only
//!   watch (no herd). Both also wake when the first node ahead's TTL runs
//!   out and to refresh their own node. Waiters are admitted in arrival
//!   order: with k permits free, the first k waiters go.
//! - **Tokens** are the nodes' `czxid`s, as for a lock: unique and
//!   increasing across every permit of the name, clients and restarts.
//! - **Mismatched counts.** A request that finds a live node ahead of its
//!   own carrying another N deletes its node and fails with
//!   [`Error::PermitsMismatch`] (from `try_acquire` or the queue step, at
//!   once); once the nodes of the other count are gone, the new count
//!   works.
//! - **Idempotency.** A retry of a granted request (same lease id) on the
//!   backend that holds it rewrites the granted node — same token, TTL
//!   restarted — instead of taking a second permit; a create whose reply
//!   was lost is found again by its name as for a lock.
//! - **Round trips.** An uncontended N = 1 acquire stays one request (the
//!   lock node and the lease node created in one transaction) and its
//!   release one; a request that finds the lock node in place (a second
//!   permit, a waiter) creates its node, lists the queue and reads the
//!   nodes ahead in one multi-read.
//! - **Fencing with N > 1.** Tokens are unique and ordered, but N holders
//!   hold at once, so a store keeping a single high-water mark of the
//!   name would refuse live holders with lower tokens. Check a write's
//!   lease id against [`holders`] (or fence per resource each holder
//!   works on) instead.
//!
//! [`holders`]: lockkit_core::LockBackend::holders
//!
//! ## Limits (what ZooKeeper cannot promise)
//!
//! - TTL expiry compares the leader's clock at two moments; after a leader
//!   change, skew between the old and new leader's clocks adds to (or
//!   subtracts from) the TTL. Keep server clocks synchronised and the
//!   expiry margin above their skew.
//! - A follower cut off from the leader keeps serving reads for up to
//!   `syncLimit × tickTime`, so heartbeats may succeed there while the
//!   leader no longer hears the session; the 2/3 rule leaves 1/3 of the
//!   session timeout for that. Keep `syncLimit × tickTime` below a third
//!   of the session timeout.
//! - `current` and `list` write to `<root>/clock` to read the server's
//!   clock, so they need write access like everything else.
//! - Ops made during a connection loss wait for the reconnection (bounded
//!   by the session timeout), so an acquire's timeout may be late by up to
//!   the connection timeout while the ensemble is unreachable.
//!
//! ## Departure from the design note
//!
//! The original design tied expiry to the ZooKeeper session
//! (`ARCHITECTURE.md` §9). With one session per
//! backend shared by leases of different TTLs, the session timeout cannot
//! be every lease's TTL; it is a separate setting ([`ZkOptions::session_timeout`],
//! default 10 s) and the TTL is enforced with node `mtime`s as above. A lease
//! is safe until the earlier of its TTL deadline and the session rule.

mod admission;
mod backend;
mod config;
mod error;
mod held;
mod inspect;
mod layout;
mod monitor;
mod nodes;
mod queue;
mod record;
mod session;

pub use crate::backend::{ZkBackend, connect, connect_with};
pub use crate::config::{Credentials, DEFAULT_PORT, URL_PARAMS, URL_SCHEMES, ZkOptions, ZkUrl};
pub use crate::layout::{decode_name, encode_name, lock_path};

#[cfg(doc)]
use lockkit_core::Error;
