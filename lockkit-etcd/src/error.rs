//! Turning etcd client errors into lockkit errors of the right kind.

use std::future::Future;
use std::time::Duration;

use lockkit_core::{Error, Result};

/// The backend label in errors and metrics.
pub(crate) const KIND: &str = "etcd";

/// gRPC status codes (stable numbers from the gRPC specification).
mod code {
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const INVALID_ARGUMENT: i32 = 3;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const PERMISSION_DENIED: i32 = 7;
    pub(super) const FAILED_PRECONDITION: i32 = 9;
    pub(super) const RESOURCE_EXHAUSTED: i32 = 8;
    pub(super) const ABORTED: i32 = 10;
    pub(super) const INTERNAL: i32 = 13;
    pub(super) const UNAVAILABLE: i32 = 14;
    pub(super) const UNAUTHENTICATED: i32 = 16;
}

/// Classifies an etcd client error: connection trouble, leader elections,
/// timeouts and overload are [`Error::Transient`]; failed authentication
/// and permissions are [`Error::Configuration`]; everything else is a
/// permanent [`Error::Backend`] failure. `doing` says what was being done.
pub(crate) fn classify(err: etcd_client::Error, doing: &str) -> Error {
    use etcd_client::Error as E;
    let message = format!("{doing}: {err}");
    match &err {
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => {
            Error::transient(KIND, message, Some(Box::new(err) as _))
        }
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) | E::EndpointError(_) => {
            Error::Configuration {
                message: format!("{KIND}: {message}"),
                source: Some(Box::new(err)),
            }
        }
        E::GRpcStatus(status) => {
            let code = i32::from(status.code());
            let text = status.message().to_ascii_lowercase();
            if is_auth_failure(code, &text) {
                Error::Configuration {
                    message: format!("{KIND}: {message}"),
                    source: Some(Box::new(err)),
                }
            } else if is_transient(code, &text) {
                Error::transient(KIND, message, Some(Box::new(err) as _))
            } else {
                Error::backend(KIND, message, Some(Box::new(err) as _))
            }
        }
        _ => Error::backend(KIND, message, Some(Box::new(err) as _)),
    }
}

fn is_auth_failure(code: i32, text: &str) -> bool {
    matches!(code, code::UNAUTHENTICATED | code::PERMISSION_DENIED)
        || (code == code::INVALID_ARGUMENT
            && (text.contains("authentication failed")
                || text.contains("user name is empty")
                || text.contains("user name not found")
                || text.contains("invalid auth token")))
        || (code == code::FAILED_PRECONDITION && text.contains("auth"))
}

fn is_transient(code: i32, text: &str) -> bool {
    match code {
        code::UNAVAILABLE
        | code::DEADLINE_EXCEEDED
        | code::ABORTED
        | code::RESOURCE_EXHAUSTED
        | code::CANCELLED => true,
        code::UNKNOWN | code::INTERNAL => {
            text.contains("leader")
                || text.contains("timed out")
                || text.contains("timeout")
                || text.contains("too many requests")
                || text.contains("transport")
                || text.contains("connection")
                || text.contains("h2 protocol")
                || text.contains("broken pipe")
        }
        _ => false,
    }
}

/// Runs one etcd request with a time limit; a request that takes longer is
/// a transient failure.
pub(crate) async fn bounded<T>(
    limit: Duration,
    doing: &str,
    request: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(classify(err, doing)),
        Err(_) => Err(Error::transient(
            KIND,
            format!("{doing}: no answer from etcd within {limit:?}"),
            None,
        )),
    }
}

/// Runs an idempotent etcd request, retrying transient failures on a fresh
/// attempt (the client's balancer picks a member again, so a dead member is
/// skipped) until `limit` is spent. One attempt gets at most a third of the
/// budget: a request stuck on a member that forwarded it to a leader that
/// just died is retried elsewhere instead of waiting out the whole budget.
///
/// Only for requests whose repetition is harmless (conditional
/// transactions, reads, puts of a key only its owner writes).
pub(crate) async fn retrying<T, F, Fut>(limit: Duration, doing: &str, mut request: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let give_up = tokio::time::Instant::now() + limit;
    let per_attempt = (limit / 3).max(Duration::from_millis(500));
    let mut pause = Duration::from_millis(10);
    loop {
        let now = tokio::time::Instant::now();
        let attempt_limit = per_attempt.min(give_up.saturating_duration_since(now));
        let err = match bounded(attempt_limit, doing, request()).await {
            Ok(value) => return Ok(value),
            Err(err) if err.is_retryable() => err,
            Err(err) => return Err(err),
        };
        let now = tokio::time::Instant::now();
        if now + pause >= give_up {
            return Err(err);
        }
        tracing::debug!(error = %err, "etcd request failed; retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A response that lacks a part etcd always sends.
pub(crate) fn malformed(what: &str) -> Error {
    Error::backend(KIND, format!("malformed etcd response: {what}"), None)
}
