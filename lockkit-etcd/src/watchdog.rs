//! The task that watches over one held lock.
//!
//! It ends the lock — fires its loss signal and forgets it — when
//! - its deadline passes without an `extend` (it then deletes the key,
//!   only if it still carries the lock's create revision): the per-lock
//!   TTL on top of the shared, kept-alive session lease;
//! - its session is lost (the key dies with the session lease);
//! - its key is deleted by someone else (an admin's force-release, or etcd
//!   expiring the lease): seen at once through a watch on the key, not only
//!   at the next `extend`.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchFilterType, WatchOptions};
use lockkit_core::spi::AcquireRequest;
use lockkit_core::spi::PollPolicy;
use lockkit_core::{Lease, LostReason, Result};
use tokio::time::Instant;

use crate::held::{HeldLock, HeldState};
use crate::session::Session;
use crate::shared::Shared;
use crate::shared::{capped, token_of, ttl_secs};

/// Watches over `lock` until it is released, lost or the backend is gone.
pub(crate) async fn watchdog(shared: Arc<Shared>, lock: Arc<HeldLock>) {
    let deleted = key_deleted(&shared, &lock);
    tokio::pin!(deleted);
    loop {
        let state = lock.state();
        tokio::select! {
            biased;
            () = lock.done.cancelled() => return,
            () = shared.shutdown.cancelled() => return,
            () = lock.changed.notified() => {}
            () = state.session.lost().cancelled() => {
                shared.held.forget(&lock);
                lock.lost.fire(LostReason::SessionLost(state.session.lost_reason()));
                return;
            }
            () = &mut deleted => {
                tracing::debug!(lock = %lock.name, "the lock's key was deleted by someone else");
                shared.held.forget(&lock);
                lock.lost.fire(LostReason::NotHeld);
                return;
            }
            () = tokio::time::sleep_until(state.deadline) => {
                if Instant::now() < lock.state().deadline {
                    continue;
                }
                tracing::debug!(lock = %lock.name, "lease not extended before its TTL; freeing it");
                shared.held.forget(&lock);
                lock.lost.fire(LostReason::Expired);
                shared
                    .delete_eventually(lock.key.clone(), Some(lock.token), state.session)
                    .await;
                return;
            }
        }
    }
}

/// Completes when the lock's key (with the lock's create revision) is
/// deleted. Watches from the revision after the key's creation, so no
/// deletion is missed; a broken watch is reopened after a pause (the
/// `extend` check still catches a deletion meanwhile).
async fn key_deleted(shared: &Shared, lock: &HeldLock) {
    let mut from = lock.token + 1;
    let mut backoff = PollPolicy::new(Duration::from_millis(50), Duration::from_secs(2)).backoff();
    loop {
        let options = WatchOptions::new()
            .with_start_revision(from)
            .with_filters([WatchFilterType::NoPut]);
        let mut watch_client = shared.client.watch_client();
        let opened = tokio::time::timeout(
            shared.request_timeout,
            watch_client.watch(lock.key.as_str(), Some(options)),
        )
        .await;
        if let Ok(Ok(mut stream)) = opened {
            while let Ok(Some(resp)) = stream.message().await {
                if resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return;
                }
                if resp.canceled() {
                    // Compacted history: look at the key itself.
                    if resp.compact_revision() > 0 {
                        match still_there(shared, lock).await {
                            Some(false) => return,
                            Some(true) => from = resp.compact_revision(),
                            None => {}
                        }
                    }
                    break;
                }
                backoff.reset();
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Whether the lock's key still exists with its create revision (`None`
/// when etcd cannot be asked).
async fn still_there(shared: &Shared, lock: &HeldLock) -> Option<bool> {
    let resp = shared
        .get(&lock.key, GetOptions::new(), "checking a held key")
        .await
        .ok()?;
    Some(
        resp.kvs()
            .iter()
            .any(|kv| kv.create_revision() == lock.token),
    )
}

/// Registers a granted lock, starts its watchdog and builds the lease.
pub(crate) fn grant(
    shared: &Arc<Shared>,
    req: &AcquireRequest,
    key: String,
    revision: i64,
    session: Arc<Session>,
    sent_at: Instant,
) -> Result<Lease> {
    let token = token_of(revision)?;
    let ttl = session.ttl();
    let lock = HeldLock::new(
        req.name.clone(),
        key.clone(),
        revision,
        HeldState {
            session: Arc::clone(&session),
            ttl_secs: ttl_secs(req.ttl),
            deadline: sent_at + ttl,
        },
    );
    shared.held.insert(Arc::clone(&lock));
    tokio::spawn(watchdog(Arc::clone(shared), lock));
    let lease = Lease::granted(req, token, sent_at)
        .with_effective_ttl(ttl)
        .with_handle(key);
    Ok(capped(lease, &session))
}
