//! The leases this backend instance holds, each watched for deletion.
//!
//! A held lease's loss signal is in its session generation's group (so
//! session expiry or silence fires it) and is also cancelled when its
//! node disappears without this backend releasing it: an admin's
//! `force_release`, a contender that found it expired, the session's end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use lockkit_core::spi::LossSignal;
use lockkit_core::{LeaseId, LostReason};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zookeeper_client::{Error as ZkError, EventType};

use crate::session::Generation;

/// One held lease.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) generation: Arc<Generation>,
    pub(crate) path: String,
    pub(crate) owner: String,
    /// Fired, with the reason, when the lease is known to be gone; follows
    /// its session generation (`SessionLost`).
    pub(crate) lost: LossSignal,
    /// Cancelled when this backend releases the lease (stops the watch).
    stop: CancellationToken,
    /// The local safe deadline after the last grant or renewal.
    pub(crate) deadline: Instant,
    /// When the lease was granted, by the server's clock (ms).
    pub(crate) granted_ms: i64,
}

impl Held {
    /// A lease granted in `generation` whose node is `path`.
    pub(crate) fn new(
        generation: Arc<Generation>,
        path: String,
        owner: String,
        deadline: Instant,
        granted_ms: i64,
    ) -> Self {
        Self {
            lost: LossSignal::in_group(generation.leases()),
            generation,
            path,
            owner,
            stop: CancellationToken::new(),
            deadline,
            granted_ms,
        }
    }
}

impl Held {
    /// Whether this backend is releasing (or has released) the lease.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }
}

/// Leases held through this backend instance, by lease id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    entries: Mutex<HashMap<LeaseId, Held>>,
}

impl Registry {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<LeaseId, Held>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a grant and starts watching its node; returns the lease's
    /// loss token.
    pub(crate) fn insert(
        self: &Arc<Self>,
        lease_id: LeaseId,
        held: Held,
        shutdown: &CancellationToken,
    ) -> LossSignal {
        let lost = held.lost.clone();
        let watch = watch_node(
            Arc::downgrade(self),
            lease_id.clone(),
            Arc::clone(&held.generation),
            held.path.clone(),
            lost.clone(),
            held.stop.clone(),
            shutdown.clone(),
        );
        {
            let mut entries = self.entries();
            // Leases whose release gave up on transient errors stay until
            // their deadline has passed; forget them now.
            let now = Instant::now();
            entries.retain(|_, h| !(h.stop.is_cancelled() && h.deadline <= now));
            // A retried request granted again (its first node was a
            // duplicate): the old node's watch must not report this grant
            // lost when that duplicate is deleted.
            if let Some(old) = entries.insert(lease_id, held) {
                old.stop.cancel();
            }
        }
        tokio::spawn(watch);
        lost
    }

    pub(crate) fn get(&self, lease_id: &LeaseId) -> Option<Held> {
        self.entries().get(lease_id).cloned()
    }

    /// Marks a lease as being released: its watch stops (our own delete is
    /// not a loss), but the entry stays until [`remove`](Self::remove), so a
    /// retried release judges the lease the same way.
    pub(crate) fn releasing(&self, lease_id: &LeaseId) -> Option<Held> {
        let held = self.entries().get(lease_id).cloned()?;
        held.stop.cancel();
        Some(held)
    }

    /// Forgets a lease this backend is releasing; its watch stops without
    /// reporting a loss.
    pub(crate) fn remove(&self, lease_id: &LeaseId) -> Option<Held> {
        let held = self.entries().remove(lease_id)?;
        held.stop.cancel();
        Some(held)
    }

    /// Moves the local deadline after a renewal.
    pub(crate) fn renewed(&self, lease_id: &LeaseId, deadline: Instant) {
        if let Some(held) = self.entries().get_mut(lease_id) {
            held.deadline = deadline;
        }
    }

    /// Reports a lease whose node is gone as lost, and forgets it.
    pub(crate) fn lose(&self, lease_id: &LeaseId) {
        if let Some(held) = self.entries().remove(lease_id) {
            held.lost.fire(LostReason::NotHeld);
            held.stop.cancel();
        }
    }

    /// As [`lose`](Self::lose), but only while the lease is still the one
    /// granted with the node at `path`.
    fn lose_node(&self, lease_id: &LeaseId, path: &str) {
        let mut entries = self.entries();
        if entries.get(lease_id).is_some_and(|h| h.path == path)
            && let Some(held) = entries.remove(lease_id)
        {
            held.lost.fire(LostReason::NotHeld);
            held.stop.cancel();
        }
    }

    /// Whether any lease is held in generation `number`.
    pub(crate) fn holds_in(&self, number: u64) -> bool {
        self.entries()
            .values()
            .any(|h| h.generation.number == number && !h.lost.is_fired())
    }
}

/// How long after the grant a held lease's node starts being watched.
const ARM_DELAY: Duration = Duration::from_millis(100);

/// Watches a held lease's node until it is released (stop), lost, or the
/// backend shuts down. A deletion not made by this backend fires the loss.
///
/// The watch is on the *children* of the lock node, not on the lease node
/// itself: a node watch fires on every data change, and renewals rewrite
/// the node's data, so it would be re-armed — one more request — per held
/// lock per renewal. A child watch fires only when a node of this lock is
/// created or deleted — our own release included, which ends this task.
/// The watch is armed [`ARM_DELAY`] after the grant.
///
/// One task per held lease, kept small: while it waits it holds only the
/// watcher and the shutdown token (the arming request is boxed, the loss
/// signal is not awaited: a session's end reaches the watcher as a session
/// event, and a lost lease is released, which deletes the node).
async fn watch_node(
    registry: Weak<Registry>,
    lease_id: LeaseId,
    generation: Arc<Generation>,
    path: String,
    lost: LossSignal,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    let mut retry = Duration::from_millis(20);
    // Most short holds end before this: they never cost the watch request.
    // A deletion made meanwhile is seen when the watch is armed (the
    // children it reads lack the node).
    tokio::select! {
        () = shutdown.cancelled() => return,
        () = tokio::time::sleep(ARM_DELAY) => {}
    }
    loop {
        if stop.is_cancelled() || lost.is_fired() || shutdown.is_cancelled() {
            return;
        }
        let (parent, own) = path.rsplit_once('/').unwrap_or(("/", path.as_str()));
        let parent = if parent.is_empty() { "/" } else { parent };
        let watched = tokio::select! {
            () = shutdown.cancelled() => return,
            watched = Box::pin(generation.client.get_and_watch_children(parent)) => watched,
        };
        let gone = match watched {
            Ok((children, _, _)) if !children.iter().any(|c| c == own) => true,
            Err(ZkError::NoNode) => true,
            Ok((_, _, watcher)) => {
                retry = Duration::from_millis(20);
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = watcher.changed() => event,
                };
                match event.event_type {
                    EventType::NodeDeleted => true,
                    // A session that ended: the generation's monitor
                    // decides what that means for the lease.
                    EventType::Session if event.session_state.is_terminated() => return,
                    _ => false,
                }
            }
            Err(ZkError::SessionExpired | ZkError::ClientClosed) => return,
            Err(err) => {
                tracing::debug!(%path, error = %err, "watching a held lease node failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(Duration::from_secs(1));
                false
            }
        };
        if gone {
            if stop.is_cancelled() {
                return;
            }
            tracing::info!(%path, "held lease node was deleted by someone else");
            // The node is gone for good: fire the signal and forget the
            // lease (renewing it now fails with NoNode on the server).
            if let Some(registry) = registry.upgrade() {
                registry.lose_node(&lease_id, &path);
            }
            lost.fire(LostReason::NotHeld);
            return;
        }
    }
}
