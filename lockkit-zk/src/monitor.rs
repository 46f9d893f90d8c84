//! Watches the backend's session: ends generations on expiry or silence,
//! keeps a quiet connection proven alive while leases are held (a cheap
//! read every 1/6 of the session timeout), and opens a new session after an
//! expiry.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zookeeper_client::SessionState;

use crate::held::Registry;
use crate::session::Sessions;

enum End {
    Terminated(SessionState),
    Silent(Duration),
}

/// Watches the session: ends generations on expiry or silence, keeps a
/// quiet connection proven alive while leases are held, and opens a new
/// session after an expiry. Returns when `shutdown` is cancelled.
pub(crate) async fn monitor(
    sessions: Arc<Sessions>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    loop {
        let generation = sessions.current();
        let mut states = generation.client.state_watcher();
        let heartbeat_every = (generation.session_timeout() / 6).max(Duration::from_millis(10));
        let safe = generation.safe_window();
        let mut next_heartbeat = Instant::now() + heartbeat_every;
        let end = loop {
            let state = generation.client.state();
            if state.is_terminated() {
                break End::Terminated(state);
            }
            let holding = registry.holds_in(generation.number);
            let silent_at = generation.last_ok() + safe;
            tokio::select! {
                () = shutdown.cancelled() => return,
                state = states.changed() => {
                    if state.is_terminated() {
                        break End::Terminated(state);
                    }
                }
                () = tokio::time::sleep_until(next_heartbeat) => {
                    next_heartbeat = Instant::now() + heartbeat_every;
                    if holding {
                        generation.spawn_heartbeat();
                    }
                }
                () = tokio::time::sleep_until(silent_at), if holding => {
                    let silent_for = generation.last_ok().elapsed();
                    if silent_for >= safe {
                        break End::Silent(silent_for);
                    }
                }
            }
        };
        match end {
            End::Silent(silent_for) => {
                generation.end(format!(
                    "no reply from ZooKeeper for {silent_for:?} (session timeout {:?}); the session may expire",
                    generation.session_timeout()
                ));
                sessions.install(generation.client.clone(), generation.last_ok());
            }
            End::Terminated(state) => {
                generation.end(format!(
                    "ZooKeeper session {} ended: {state}",
                    generation.client.session_id()
                ));
                let mut backoff = Duration::from_millis(50);
                loop {
                    let opened = tokio::select! {
                        () = shutdown.cancelled() => return,
                        opened = sessions.spec().open() => opened,
                    };
                    match opened {
                        Ok(client) => {
                            tracing::info!(session = %client.session_id(), "opened a new ZooKeeper session");
                            sessions.install(client, Instant::now());
                            break;
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot open a new ZooKeeper session; retrying");
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                () = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
        }
    }
}
