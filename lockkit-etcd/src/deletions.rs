//! One watch stream per backend instance that sees the deletion of any
//! held lock's key by someone else — an admin's force-release, or etcd
//! expiring the session lease — at once, not only at the next `extend`.
//!
//! etcd multiplexes watches on one gRPC stream, told apart by watch ids
//! that this side picks. Each held lock has one watch on its own key,
//! from the revision after its creation and for deletions only, so no
//! deletion is missed even if it happened before the watch was created.
//! A watch costs the client one map entry; a stream per lock cost about
//! 40 KiB. A watch is created [`ARM_DELAY`] after the grant, so that the
//! many short holds never cost the server a watch at all.
//!
//! One task owns the stream. It opens it (with an anchor watch that
//! never reports anything and is cancelled at once: etcd-client opens a
//! stream with a first request), sends creations and cancellations as locks come and go, and
//! reads the replies in the same `select!`, so a full send queue never
//! stops it from reading. When the stream breaks it is opened again and
//! every live watch is created again, from its lock's creation: history
//! replays any deletion that happened meanwhile. A watch cancelled
//! because history was compacted is answered by reading the key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use etcd_client::{
    Client, EventType, GetOptions, WatchFilterType, WatchOptions, WatchRequestSender, WatchResponse,
};
use lockkit_core::LostReason;
use lockkit_core::spi::PollPolicy;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::held::HeldLock;
use crate::shared::Shared;

/// The anchor watch's id; locks' ids start above it.
const ANCHOR: i64 = 1;

/// How long after the grant a lock's watch is created. A lock released
/// sooner never costs the server a watch creation and cancellation (most
/// short holds); a deletion made before the watch exists is still
/// reported once it does, since the watch starts from the lock's creation.
pub(crate) const ARM_DELAY: Duration = Duration::from_millis(100);

enum Command {
    /// Watch the lock's key from `from` (its creation + 1, or later after
    /// a compaction).
    Watch {
        id: i64,
        lock: Weak<HeldLock>,
        from: i64,
        at: Instant,
    },
    Unwatch(i64),
}

/// A watch the stream should have.
struct Watched {
    lock: Weak<HeldLock>,
    from: i64,
}

/// What is sent next on the stream.
#[derive(Clone, Copy)]
enum Outgoing {
    Create(i64),
    Cancel(i64),
}

/// The handle on the deletion watch (see the module docs).
pub(crate) struct Deletions {
    next_id: AtomicI64,
    commands: mpsc::UnboundedSender<Command>,
    /// Taken by the task when it starts (on the first watch).
    pending: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
}

impl std::fmt::Debug for Deletions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deletions")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl Deletions {
    pub(crate) fn new() -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        Self {
            next_id: AtomicI64::new(ANCHOR + 1),
            commands,
            pending: Mutex::new(Some(receiver)),
        }
    }

    /// A watch id for a new lock.
    pub(crate) fn next_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts watching `lock`'s key for deletion (and the task, if this is
    /// the first watch).
    pub(crate) fn watch(&self, shared: &Arc<Shared>, lock: &Arc<HeldLock>) {
        let receiver = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(receiver) = receiver {
            tokio::spawn(run(
                Arc::downgrade(shared),
                shared.client.clone(),
                shared.layout.root().to_owned(),
                shared.request_timeout,
                shared.shutdown.clone(),
                self.commands.clone(),
                receiver,
            ));
        }
        let _ = self.commands.send(Command::Watch {
            id: lock.watch_id,
            lock: Arc::downgrade(lock),
            from: lock.token + 1,
            at: Instant::now() + ARM_DELAY,
        });
    }

    /// Stops watching the lock with `id` (released, or lost).
    pub(crate) fn unwatch(&self, id: i64) {
        let _ = self.commands.send(Command::Unwatch(id));
    }
}

/// The stream's task (see the module docs).
async fn run(
    shared: Weak<Shared>,
    client: Client,
    anchor: String,
    request_timeout: Duration,
    shutdown: CancellationToken,
    commands_tx: mpsc::UnboundedSender<Command>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut watched: HashMap<i64, Watched> = HashMap::new();
    let mut outbox: VecDeque<Outgoing> = VecDeque::new();
    // Watches not created yet ([`ARM_DELAY`]), in the order they are due.
    let mut delayed: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut backoff = PollPolicy::new(Duration::from_millis(50), Duration::from_secs(2)).backoff();
    loop {
        let options = WatchOptions::new()
            .with_watch_id(ANCHOR)
            .with_filters([WatchFilterType::NoPut, WatchFilterType::NoDelete]);
        let mut watch_client = client.watch_client();
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            opened = tokio::time::timeout(
                request_timeout,
                watch_client.watch(anchor.as_str(), Some(options)),
            ) => opened,
        };
        if let Ok(Ok(stream)) = opened {
            let (mut sender, mut receiver) = stream.split();
            // The anchor has done its part (opening the stream); a new
            // stream has none of ours: create every live one again.
            outbox.clear();
            outbox.push_back(Outgoing::Cancel(ANCHOR));
            let waiting: HashSet<i64> = delayed.iter().map(|(_, id)| *id).collect();
            outbox.extend(
                watched
                    .keys()
                    .filter(|id| !waiting.contains(id))
                    .copied()
                    .map(Outgoing::Create),
            );
            loop {
                let next = next_request(&mut outbox, &watched);
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    message = receiver.message() => match message {
                        Ok(Some(resp)) => {
                            backoff.reset();
                            handle(&resp, &mut watched, &shared, &commands_tx);
                        }
                        Ok(None) | Err(_) => break,
                    },
                    command = commands.recv() => match command {
                        None => return,
                        Some(Command::Watch { id, lock, from, at }) => {
                            watched.insert(id, Watched { lock, from });
                            delayed.push_back((at, id));
                        }
                        Some(Command::Unwatch(id)) => {
                            if watched.remove(&id).is_some() {
                                outbox.push_back(Outgoing::Cancel(id));
                            }
                        }
                    },
                    () = sleep_until_first(&delayed), if !delayed.is_empty() => {
                        let now = Instant::now();
                        while delayed.front().is_some_and(|(at, _)| *at <= now) {
                            if let Some((_, id)) = delayed.pop_front()
                                && watched.contains_key(&id)
                            {
                                outbox.push_back(Outgoing::Create(id));
                            }
                        }
                    }
                    sent = send(&mut sender, next.clone()), if next.is_some() => {
                        if sent.is_err() {
                            break;
                        }
                        outbox.pop_front();
                    }
                }
            }
            tracing::debug!("the etcd deletion watch stream broke; opening it again");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Sleeps until the first delayed watch is due.
async fn sleep_until_first(delayed: &VecDeque<(Instant, i64)>) {
    if let Some((at, _)) = delayed.front() {
        tokio::time::sleep_until(*at).await;
    }
}

/// A request ready to send: the outbox's front, after dropping creations
/// whose lock is gone.
#[derive(Clone)]
enum Request {
    Create {
        key: Arc<str>,
        options: WatchOptions,
    },
    Cancel(i64),
}

fn next_request(
    outbox: &mut VecDeque<Outgoing>,
    watched: &HashMap<i64, Watched>,
) -> Option<Request> {
    while let Some(front) = outbox.front().copied() {
        match front {
            Outgoing::Cancel(id) => return Some(Request::Cancel(id)),
            Outgoing::Create(id) => {
                if let Some(w) = watched.get(&id)
                    && let Some(lock) = w.lock.upgrade()
                {
                    // History from `from` on: a deletion made before the
                    // watch existed is still reported.
                    let options = WatchOptions::new()
                        .with_watch_id(id)
                        .with_start_revision(w.from)
                        .with_filters([WatchFilterType::NoPut]);
                    return Some(Request::Create {
                        key: Arc::clone(&lock.key),
                        options,
                    });
                }
                outbox.pop_front();
            }
        }
    }
    None
}

async fn send(
    sender: &mut WatchRequestSender,
    request: Option<Request>,
) -> Result<(), etcd_client::Error> {
    match request {
        Some(Request::Create { key, options }) => sender.watch(key.as_bytes(), Some(options)).await,
        Some(Request::Cancel(id)) => sender.cancel(id).await,
        None => Ok(()),
    }
}

/// Acts on one reply of the stream.
fn handle(
    resp: &WatchResponse,
    watched: &mut HashMap<i64, Watched>,
    shared: &Weak<Shared>,
    commands: &mpsc::UnboundedSender<Command>,
) {
    let id = resp.watch_id();
    if resp
        .events()
        .iter()
        .any(|e| e.event_type() == EventType::Delete)
    {
        if let Some(w) = watched.remove(&id)
            && let Some(lock) = w.lock.upgrade()
        {
            tracing::debug!(key = %lock.key, "the lock's key was deleted by someone else");
            if let Some(shared) = shared.upgrade() {
                shared.held.forget(&lock);
            }
            lock.lost.fire(LostReason::NotHeld);
        }
        return;
    }
    if !resp.canceled() || id == ANCHOR {
        return;
    }
    // A watch of ours that etcd cancelled (ours cancelled by `unwatch`
    // are no longer in `watched`).
    let Some(w) = watched.remove(&id) else {
        return;
    };
    let Some(lock) = w.lock.upgrade() else {
        return;
    };
    let compacted = resp.compact_revision();
    tracing::debug!(key = %lock.key, compacted, reason = resp.cancel_reason(), "etcd cancelled a held lock's watch");
    let (shared, commands) = (shared.clone(), commands.clone());
    tokio::spawn(async move {
        let from = if compacted > 0 {
            // History from the lock's creation is gone: look at the key.
            match still_there(&shared, &lock).await {
                Some(false) => {
                    if let Some(shared) = shared.upgrade() {
                        shared.held.forget(&lock);
                    }
                    lock.lost.fire(LostReason::NotHeld);
                    return;
                }
                Some(true) | None => compacted,
            }
        } else {
            // Another reason: try again after a pause.
            tokio::time::sleep(Duration::from_millis(500)).await;
            w.from
        };
        // Released meanwhile: nothing to watch.
        let current = shared
            .upgrade()
            .and_then(|s| s.held.get(&lock.key))
            .is_some_and(|l| Arc::ptr_eq(&l, &lock));
        if !current {
            return;
        }
        let _ = commands.send(Command::Watch {
            id: lock.watch_id,
            lock: Arc::downgrade(&lock),
            from,
            at: Instant::now(),
        });
    });
}

/// Whether the lock's key still exists with its create revision (`None`
/// when etcd cannot be asked).
async fn still_there(shared: &Weak<Shared>, lock: &HeldLock) -> Option<bool> {
    let shared = shared.upgrade()?;
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
