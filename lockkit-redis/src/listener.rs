//! Release wake-ups: one pub/sub connection per backend instance.
//!
//! The listener `PSUBSCRIBE`s to `<prefix>{*}:released` once and feeds every
//! message (payload: the lock name, and the new FIFO head's lease id after
//! a `\n` when waiters are queued) into the backend's wake-up hubs
//! (`lockkit_core::spi::Wakes`): waiters of that name in the unfair mode, and only the new
//! head in FIFO mode. One pattern subscription serves every waiter, so waiting costs
//! no subscribe round trip and the number of Redis subscriptions does not
//! grow with the number of waiters or names.
//!
//! In a cluster, releases are published with classic `PUBLISH`, which the
//! cluster forwards to every node, so the listener connects to any seed
//! node (the next one after a failure).
//!
//! After a (re)connect the hub wakes every waiter, because messages sent
//! while the listener was away are lost; waiters also poll (jittered,
//! capped) as the fallback.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use lockkit_core::spi::PollPolicy;

use lockkit_core::spi::Wakes;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The lazily started pub/sub task of one backend instance.
pub(crate) struct Listener {
    clients: Vec<redis::Client>,
    pattern: String,
    wakes: Arc<Wakes>,
    connect_timeout: Duration,
    /// `true` while the pattern subscription is active; `None` until the
    /// task is first started. A closed channel means the task ended (its
    /// runtime shut down) and must be started again.
    state: Mutex<Option<Running>>,
}

struct Running {
    subscribed: watch::Receiver<bool>,
    _stop: DropGuard,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("pattern", &self.pattern)
            .field("nodes", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl Listener {
    pub(crate) fn new(
        clients: Vec<redis::Client>,
        pattern: String,
        wakes: Arc<Wakes>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            clients,
            pattern,
            wakes,
            connect_timeout,
            state: Mutex::new(None),
        }
    }

    /// Starts the task if it is not running and waits (at most the connect
    /// timeout) until the subscription is active, so a release published
    /// after this returns is not missed. If Redis is unreachable it returns
    /// anyway: waiters then poll until the listener is back.
    pub(crate) async fn ensure_subscribed(&self) {
        let mut subscribed = self.running();
        if *subscribed.borrow() {
            return;
        }
        let wait = subscribed.wait_for(|active| *active);
        if tokio::time::timeout(self.connect_timeout, wait)
            .await
            .is_err()
        {
            tracing::debug!(pattern = %self.pattern, "release listener not subscribed yet; waiters poll");
        }
    }

    /// Whether the subscription is active right now.
    pub(crate) fn is_subscribed(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .as_ref()
            .is_some_and(|r| r.subscribed.has_changed().is_ok() && *r.subscribed.borrow())
    }

    fn running(&self) -> watch::Receiver<bool> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(running) = state.as_ref()
            && running.subscribed.has_changed().is_ok()
        {
            return running.subscribed.clone();
        }
        let (tx, rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let task = run(
            self.clients.clone(),
            self.pattern.clone(),
            Arc::clone(&self.wakes),
            self.connect_timeout,
            tx,
            stop.clone(),
        );
        tokio::spawn(task);
        *state = Some(Running {
            subscribed: rx.clone(),
            _stop: stop.drop_guard(),
        });
        rx
    }
}

async fn run(
    clients: Vec<redis::Client>,
    pattern: String,
    wakes: Arc<Wakes>,
    connect_timeout: Duration,
    subscribed: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut backoff = PollPolicy::new(Duration::from_millis(50), Duration::from_secs(2)).backoff();
    let mut next = 0usize;
    loop {
        let Some(client) = clients.get(next % clients.len().max(1)) else {
            return;
        };
        next = next.wrapping_add(1);
        let connect = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let attempt = tokio::select! {
            () = stop.cancelled() => return,
            attempt = tokio::time::timeout(connect_timeout, connect) => attempt,
        };
        match attempt {
            Ok(Ok(pubsub)) => {
                backoff.reset();
                subscribed.send_replace(true);
                // Releases may have happened while we were away.
                wakes.notify_all();
                let (_sink, mut stream) = pubsub.split();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        message = stream.next() => match message {
                            Some(message) => {
                                if let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) {
                                    wakes.deliver(payload);
                                }
                            }
                            None => break,
                        },
                    }
                }
                subscribed.send_replace(false);
                tracing::debug!(pattern = %pattern, "release listener disconnected; reconnecting");
                wakes.notify_all();
            }
            Ok(Err(err)) => {
                tracing::debug!(pattern = %pattern, error = %err, "release listener cannot subscribe");
            }
            Err(_) => {
                tracing::debug!(pattern = %pattern, "release listener connect timed out");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
