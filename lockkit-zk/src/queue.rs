//! The queue steps the core's acquisition driver runs on ZooKeeper.
//!
//! 1. **Create** an `EPHEMERAL_SEQUENTIAL` node named by the lease id (the
//!    lock node and the lease node in one transaction when the lock is
//!    free: then it is alone, and granted at once).
//! 2. **Check** the queue before it (`clear_way`): expired nodes — holders
//!    and waiters alike, by `mtime + TTL + margin` on the leader's clock —
//!    are deleted (versioned, so a refresh racing the delete wins);
//!    duplicates of our own node from a create whose reply was lost too.
//!    Nothing live before us: granted — marking the node `held` first only
//!    when it was last written more than a tenth of the TTL ago (the lease
//!    counts from that write); otherwise the first renewal marks it.
//!    A node ahead with another permit count fails the request
//!    (`Error::PermitsMismatch`) after deleting our node.
//! 3. **Wait** — a lock's waiter (1 permit) for the node just before ours:
//!    its deletion or change (a watch, no herd); a semaphore's waiter
//!    (N > 1 permits), whose turn may come when *any* node ahead goes, for
//!    a change of the lock node's children (one watch that cannot miss a
//!    departure: the children it returns are compared with the live nodes
//!    seen ahead, and re-armed without a step while none of them left).
//!    Either also wakes the moment a node ahead's TTL runs out, or the
//!    moment our own node needs refreshing (every third of our TTL, so that
//!    a waiter that dies stops blocking the queue after its TTL plus the
//!    margin).
//!
//! A node that vanished while we waited (its session ended, an admin
//! deleted it) is created again. Timeouts, errors and cancelled acquires
//! delete our nodes through `LockBackend::abandon`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockkit_core::spi::AcquireRequest;
use lockkit_core::spi::{LockQueue, QueuePlace, sleep_until, until};
use lockkit_core::{Error, Lease, Result};
use tokio::time::Instant;
use zookeeper_client::{Error as ZkError, EventType, Stat};

use crate::backend::{Blocked, Way, ZkBackend};
use crate::error::{KIND, classify};
use crate::nodes::parent_of;
use crate::record::{Node, Record, State};
use crate::session::Generation;

/// A waiter's node written within `TTL / FRESH_FRACTION` before its turn
/// comes is granted without being rewritten (see `LockQueue::step`).
const FRESH_FRACTION: u32 = 10;

/// A queued request between the driver's steps.
struct ZkPlace {
    /// The session generation the node was created in.
    generation: Arc<Generation>,
    /// Our node, once created.
    own: Option<Own>,
}

/// Our lease node.
struct Own {
    path: String,
    /// The create stat (its `czxid` is the token).
    stat: Stat,
    state: State,
    /// The local instant before the write that set the node's mtime.
    written_at: Instant,
    /// A server time (ms) and the local instant its reply arrived: how the
    /// waiter predicts when a node's TTL runs out.
    anchor: (i64, Instant),
    /// What to wait for: the live nodes before ours.
    blocked: Option<Blocked>,
}

impl ZkBackend {
    /// Rewrites our node with `state`, stamping its mtime (and reading the
    /// server's clock). `Ok(None)` when the node is gone.
    async fn touch_own(
        &self,
        generation: &Generation,
        own: &mut Own,
        req: &AcquireRequest,
        state: State,
    ) -> Result<Option<Stat>> {
        let record = Record::new(state, req.ttl, &req.lease_id, &req.owner, req.permits).encode();
        let sent_at = Instant::now();
        let result = generation.client.set_data(&own.path, &record, None).await;
        generation.observe(sent_at, &result);
        match result {
            Ok(stat) => {
                own.state = state;
                own.anchor = (stat.mtime, Instant::now());
                own.written_at = sent_at;
                Ok(Some(stat))
            }
            Err(ZkError::NoNode) => Ok(None),
            Err(err) => Err(classify(err, "writing our lease node")),
        }
    }
}

#[async_trait]
impl LockQueue for ZkBackend {
    async fn step(
        &self,
        req: &AcquireRequest,
        place: &mut Option<QueuePlace>,
    ) -> Result<Option<Lease>> {
        let nodes = &self.inner.nodes;
        let lock = nodes.layout.lock(&req.name);
        if place
            .as_ref()
            .is_none_or(|p| p.get::<ZkPlace>().is_none_or(|p| p.generation.is_lost()))
        {
            // First step, or the session ended under us (its nodes went
            // with it): start in the current generation.
            *place = Some(QueuePlace::new(ZkPlace {
                generation: self.inner.sessions.current(),
                own: None,
            }));
        }
        let Some(p) = place.as_mut().and_then(|p| p.get_mut::<ZkPlace>()) else {
            return Err(Error::backend(KIND, "queue place of another backend", None));
        };
        let generation = Arc::clone(&p.generation);
        let own = match p.own.as_mut() {
            Some(own) => own,
            None => {
                // A retry of a request granted already (a lost reply).
                if let Some(lease) = self.regrant(req).await? {
                    return Ok(Some(lease));
                }
                let sent_at = Instant::now();
                let created = nodes
                    .create(&generation, &lock, req, State::Waiting)
                    .await?;
                if created.sole && !generation.is_lost() {
                    return Ok(Some(self.grant(
                        generation,
                        req,
                        created.path,
                        &created.stat,
                        sent_at,
                    )));
                }
                p.own.insert(Own {
                    path: created.path,
                    anchor: (created.stat.ctime, Instant::now()),
                    stat: created.stat,
                    state: created.state,
                    written_at: sent_at,
                    blocked: None,
                })
            }
        };
        own.blocked = None;
        match self
            .clear_way(&generation, &lock, &own.path, req, own.anchor.0)
            .await?
        {
            Way::Gone => {
                p.own = None;
                Ok(None)
            }
            Way::Mismatch { held } => {
                // A permanent error: the driver abandons the request, but
                // our node goes first.
                p.own = None;
                self.discard(&generation, req).await;
                Err(Error::permits_mismatch(&req.name, held, req.permits))
            }
            Way::Clear => {
                // A node written moments ago (the usual hand-off: created,
                // or refreshed, then woken by its predecessor's deletion)
                // is granted as it stands, without the extra fsynced write
                // that would mark it `held`: the lease counts from that
                // write, keeping at least nine tenths of its TTL, and the
                // first renewal marks it. An older node is rewritten so
                // the lease gets its full TTL.
                if own.state != State::Held
                    && own.written_at.elapsed() > req.ttl / FRESH_FRACTION
                    && self
                        .touch_own(&generation, own, req, State::Held)
                        .await?
                        .is_none()
                {
                    p.own = None;
                    return Ok(None);
                }
                let (path, stat) = (own.path.clone(), own.stat);
                Ok(Some(self.grant(
                    generation,
                    req,
                    path,
                    &stat,
                    own.written_at,
                )))
            }
            Way::Blocked(blocked) => {
                if own.state == State::Held
                    && self
                        .touch_own(&generation, own, req, State::Waiting)
                        .await?
                        .is_none()
                {
                    // Recovered after a lost reply as a holder but not
                    // first, and gone meanwhile: create again.
                    p.own = None;
                    return Ok(None);
                }
                own.blocked = Some(blocked);
                Ok(None)
            }
        }
    }

    async fn wait_turn(
        &self,
        req: &AcquireRequest,
        place: &mut QueuePlace,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let Some(p) = place.get_mut::<ZkPlace>() else {
            return Ok(());
        };
        let generation = Arc::clone(&p.generation);
        let Some(own) = p.own.as_mut() else {
            return Ok(());
        };
        let Some(blocked) = own.blocked.take() else {
            return Ok(());
        };
        let waited = if req.permits == 1 {
            until(
                deadline,
                self.wait_for_predecessor(&generation, own, req, blocked.predecessor),
            )
            .await
        } else {
            until(
                deadline,
                self.wait_for_ahead(&generation, own, req, &blocked),
            )
            .await
        };
        match waited {
            // Our node vanished: the next step creates it again.
            Some(Ok(false)) => {
                p.own = None;
                Ok(())
            }
            Some(Ok(true)) | None => Ok(()),
            Some(Err(err)) => Err(err),
        }
    }
}

impl ZkBackend {
    /// The local instant at which server time `at_ms` comes, by `own`'s
    /// anchor (a server time and when its reply arrived).
    fn local_instant(own: &Own, at_ms: i64) -> Instant {
        let (server_ms, local) = own.anchor;
        let ahead = u64::try_from(at_ms.saturating_sub(server_ms)).unwrap_or(0);
        local + Duration::from_millis(ahead)
    }

    /// When our own node needs rewriting: every third of our TTL.
    fn refresh_at(own: &Own, req: &AcquireRequest) -> Instant {
        own.written_at + req.ttl / 3
    }

    /// A lock's waiter: waits for the node just before ours to change or
    /// go (a data watch on it alone: no herd), for its TTL to run out, or
    /// for our node's refresh. `Ok(false)` when our node is gone.
    async fn wait_for_predecessor(
        &self,
        generation: &Generation,
        own: &mut Own,
        req: &AcquireRequest,
        predecessor: String,
    ) -> Result<bool> {
        let margin = self.inner.nodes.margin;
        let (data, stat, watcher) = match generation.client.get_and_watch_data(&predecessor).await {
            Ok(watched) => watched,
            Err(ZkError::NoNode) => return Ok(true),
            Err(err) => return Err(classify(err, "watching the lease before ours")),
        };
        let pred = Node {
            path: predecessor,
            record: Record::decode(&data),
            stat,
        };
        // When the predecessor's TTL runs out, by our reading of the
        // server's clock.
        let expiry = pred
            .expires_ms(margin)
            .map(|at| Self::local_instant(own, at));
        // Our own node expires like any other unless rewritten.
        let refresh = Self::refresh_at(own, req);
        let wake = expiry.map_or(refresh, |e| e.min(refresh));
        tokio::select! {
            _ = watcher.changed() => Ok(true),
            // Refresh our node, which also reads the server's clock;
            // then the driver steps again.
            () = sleep_until(Some(wake)) => Ok(self
                .touch_own(generation, own, req, State::Waiting)
                .await?
                .is_some()),
        }
    }

    /// A semaphore's waiter: its turn may come when any live node ahead
    /// goes, so it watches the lock node's children (a single predecessor
    /// watch would miss a holder further ahead releasing). The children
    /// returned with each watch are compared with the live nodes seen
    /// ahead: if one of them is gone (or our node is), the driver steps
    /// again at once; otherwise — a node joined behind us, or a stray
    /// duplicate went — the watch is re-armed without a step. Also wakes
    /// when the first node ahead's TTL runs out and for our node's
    /// refresh. `Ok(false)` when our node is gone.
    async fn wait_for_ahead(
        &self,
        generation: &Generation,
        own: &mut Own,
        req: &AcquireRequest,
        blocked: &Blocked,
    ) -> Result<bool> {
        let lock = parent_of(&own.path).to_owned();
        let own_node = own.path.rsplit('/').next().unwrap_or(&own.path).to_owned();
        let expiry = blocked.expires_ms.map(|at| Self::local_instant(own, at));
        let refresh = Self::refresh_at(own, req);
        let wake = expiry.map_or(refresh, |e| e.min(refresh));
        loop {
            let sent_at = Instant::now();
            let listed = generation.client.get_and_watch_children(&lock).await;
            generation.observe(sent_at, &listed);
            let (children, _, watcher) = match listed {
                Ok(watched) => watched,
                Err(ZkError::NoNode) => return Ok(false),
                Err(err) => return Err(classify(err, "watching a semaphore's queue")),
            };
            let present: HashSet<&str> = children.iter().map(String::as_str).collect();
            if !present.contains(own_node.as_str()) {
                return Ok(false);
            }
            if blocked.ahead.iter().any(|n| !present.contains(n.as_str())) {
                return Ok(true);
            }
            tokio::select! {
                event = watcher.changed() => {
                    if event.event_type != EventType::NodeChildrenChanged {
                        // A session event: step again, which judges it.
                        return Ok(true);
                    }
                }
                () = sleep_until(Some(wake)) => {
                    return Ok(self
                        .touch_own(generation, own, req, State::Waiting)
                        .await?
                        .is_some());
                }
            }
        }
    }
}
