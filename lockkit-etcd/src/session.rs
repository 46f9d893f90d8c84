//! Sessions: etcd leases shared by every lock key of a backend instance,
//! kept alive by one background task each.
//!
//! A session knows until when it is *certainly* alive on the server:
//! the instant taken before the last keep-alive (or grant) that etcd
//! answered, plus the TTL etcd reported. Lock deadlines are capped by it, so
//! a holder never believes in a lock whose lease etcd may already have
//! expired. When keep-alives fail until that instant, or etcd says the lease
//! is gone, the session is lost: its token is cancelled and every lock on it
//! reports the loss.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use lockkit_core::spi::PollPolicy;
use lockkit_core::{Error, Result};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{KIND, bounded, classify, retrying};

/// One etcd lease and its keep-alive task.
#[derive(Debug)]
pub(crate) struct Session {
    /// The etcd lease id.
    id: i64,
    /// The TTL etcd granted (whole seconds, at least etcd's minimum).
    ttl: Duration,
    /// Until when the lease is certainly alive on the server.
    safe_until: Mutex<Instant>,
    /// Cancelled when the session is lost (or closed).
    lost: CancellationToken,
    lost_reason: OnceLock<String>,
    /// Stops the keep-alive task without marking the session lost.
    stop: CancellationToken,
}

impl Session {
    /// Grants a lease of `ttl_secs` seconds and starts keeping it alive.
    /// The task stops when `shutdown` is cancelled (the backend is gone);
    /// the lease then expires on the server after its TTL.
    pub(crate) async fn grant(
        client: &Client,
        ttl_secs: i64,
        request_timeout: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Arc<Self>> {
        let sent = Instant::now();
        // A retried grant may leave an unused lease behind; it holds no
        // keys and expires after its TTL.
        let granted = retrying(request_timeout, "granting the session lease", || {
            let mut lease = client.lease_client();
            async move { lease.grant(ttl_secs, None).await }
        })
        .await?;
        if granted.ttl() <= 0 || !granted.error().is_empty() {
            return Err(Error::backend(
                KIND,
                format!(
                    "etcd refused a lease of {ttl_secs} s: {:?}",
                    granted.error()
                ),
                None,
            ));
        }
        let ttl = Duration::from_secs(granted.ttl().unsigned_abs());
        let session = Arc::new(Self {
            id: granted.id(),
            ttl,
            safe_until: Mutex::new(sent + ttl),
            lost: CancellationToken::new(),
            lost_reason: OnceLock::new(),
            stop: shutdown.child_token(),
        });
        tracing::debug!(lease = session.id, ?ttl, "etcd session lease granted");
        tokio::spawn(keep_alive(
            client.clone(),
            Arc::clone(&session),
            request_timeout,
        ));
        Ok(session)
    }

    /// The etcd lease id.
    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    /// The TTL etcd granted.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Until when the lease is certainly alive on the server.
    pub(crate) fn safe_until(&self) -> Instant {
        *self
            .safe_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Cancelled when the session is lost.
    pub(crate) fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Whether the session is lost.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Why the session was lost, once it is.
    pub(crate) fn lost_reason(&self) -> String {
        self.lost_reason
            .get()
            .cloned()
            .unwrap_or_else(|| "the etcd session ended".to_owned())
    }

    /// Marks the session lost (first reason wins) and stops its keep-alive.
    pub(crate) fn lose(&self, reason: impl Into<String>) {
        let reason = reason.into();
        if self.lost_reason.set(reason.clone()).is_ok() {
            tracing::warn!(lease = self.id, %reason, "etcd session lost");
        }
        self.lost.cancel();
        self.stop.cancel();
    }

    fn renewed(&self, sent: Instant, ttl_secs: i64) {
        let until = sent + Duration::from_secs(ttl_secs.unsigned_abs());
        let mut safe = self
            .safe_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if until > *safe {
            *safe = until;
        }
    }
}

/// Keeps `session` alive: a keep-alive every TTL/3 on one stream, reopened
/// on errors, until the session is lost or stopped.
async fn keep_alive(client: Client, session: Arc<Session>, request_timeout: Duration) {
    let interval = (session.ttl / 3).max(Duration::from_millis(100));
    let mut lease = client.lease_client();
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut backoff = PollPolicy::new(Duration::from_millis(50), interval).backoff();
    let mut next_at = Instant::now() + interval;
    loop {
        tokio::select! {
            biased;
            () = session.stop.cancelled() => return,
            () = tokio::time::sleep_until(next_at) => {}
        }
        let safe_until = session.safe_until();
        if Instant::now() >= safe_until {
            session.lose("no keep-alive succeeded before the lease's safe deadline");
            // The lease may still live on the server (etcd heard us but we
            // did not hear back): revoke it if etcd is reachable again, so
            // its keys do not block others for a whole TTL.
            let _ = bounded(
                request_timeout,
                "revoking a lost session",
                lease.revoke(session.id),
            )
            .await;
            return;
        }
        let sent = Instant::now();
        let limit = request_timeout.min(safe_until.saturating_duration_since(sent));
        let outcome = match stream.as_mut() {
            None => match tokio::time::timeout(limit, lease.keep_alive(session.id)).await {
                // Opening the stream sends a keep-alive and checks its answer.
                Ok(Ok(pair)) => {
                    stream = Some(pair);
                    Ok(Some(
                        i64::try_from(session.ttl.as_secs()).unwrap_or(i64::MAX),
                    ))
                }
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(msg)))
                    if msg.contains("not found") =>
                {
                    Ok(None)
                }
                Ok(Err(err)) => Err(classify(err, "opening the keep-alive stream").to_string()),
                Err(_) => Err(format!("no keep-alive answer within {limit:?}")),
            },
            Some((keeper, responses)) => {
                let round = async {
                    keeper.keep_alive().await?;
                    responses.message().await
                };
                match tokio::time::timeout(limit, round).await {
                    Ok(Ok(Some(resp))) if resp.ttl() > 0 => Ok(Some(resp.ttl())),
                    Ok(Ok(Some(_))) => Ok(None),
                    Ok(Ok(None)) => Err("the keep-alive stream ended".to_owned()),
                    Ok(Err(err)) => Err(classify(err, "keep-alive").to_string()),
                    Err(_) => Err(format!("no keep-alive answer within {limit:?}")),
                }
            }
        };
        match outcome {
            Ok(Some(ttl)) => {
                session.renewed(sent, ttl);
                backoff.reset();
                next_at = sent + interval;
            }
            Ok(None) => {
                session.lose("etcd says the session lease expired or was revoked");
                return;
            }
            Err(why) => {
                tracing::debug!(lease = session.id, %why, "etcd keep-alive failed; retrying");
                stream = None;
                next_at = (Instant::now() + backoff.next_delay()).min(session.safe_until());
            }
        }
    }
}
