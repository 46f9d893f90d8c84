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
//! 3. **Wait** for the node just before ours: its deletion or change (a
//!    watch, no herd), the moment its TTL runs out, or the moment our own
//!    node needs refreshing (every third of our TTL, so that a waiter that
//!    dies stops blocking the queue after its TTL plus the margin).
//!
//! A node that vanished while we waited (its session ended, an admin
//! deleted it) is created again. Timeouts, errors and cancelled acquires
//! delete our nodes through `LockBackend::abandon`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockkit_core::spi::AcquireRequest;
use lockkit_core::spi::{LockQueue, QueuePlace, sleep_until, until};
use lockkit_core::{Error, Lease, Result};
use tokio::time::Instant;
use zookeeper_client::{Error as ZkError, Stat};

use crate::backend::{Way, ZkBackend};
use crate::error::{KIND, classify};
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
    /// The live node just before ours, to wait for.
    predecessor: Option<String>,
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
        let record = Record::new(state, req.ttl, &req.lease_id, &req.owner).encode();
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
                    predecessor: None,
                })
            }
        };
        own.predecessor = None;
        match self
            .clear_way(&generation, &lock, &own.path, &req.lease_id, own.anchor.0)
            .await?
        {
            Way::Gone => {
                p.own = None;
                Ok(None)
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
            Way::Blocked { predecessor } => {
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
                own.predecessor = Some(predecessor);
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
        let Some(predecessor) = own.predecessor.take() else {
            return Ok(());
        };
        let margin = self.inner.nodes.margin;
        let waited = until(deadline, async {
            let (data, stat, watcher) =
                match generation.client.get_and_watch_data(&predecessor).await {
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
            let expiry = pred.expires_ms(margin).map(|at| {
                let (server_ms, local) = own.anchor;
                let ahead = u64::try_from(at.saturating_sub(server_ms)).unwrap_or(0);
                local + Duration::from_millis(ahead)
            });
            // Our own node expires like any other unless rewritten: every
            // third of our TTL.
            let refresh = own.written_at + req.ttl / 3;
            let wake = expiry.map_or(refresh, |e| e.min(refresh));
            tokio::select! {
                _ = watcher.changed() => Ok(true),
                // Refresh our node, which also reads the server's clock;
                // then the driver steps again.
                () = sleep_until(Some(wake)) => Ok(self
                    .touch_own(&generation, own, req, State::Waiting)
                    .await?
                    .is_some()),
            }
        })
        .await;
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
