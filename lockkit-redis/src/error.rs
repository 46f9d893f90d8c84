//! Mapping Redis errors to lockkit error kinds.

use lockkit_core::Error;
use redis::{ErrorKind, RedisError, RetryMethod, ServerErrorKind};

/// The backend label used in errors and metrics.
pub(crate) const KIND: &str = "redis";

/// Sorts a Redis error into transient (retry later), configuration (wrong
/// credentials or permissions) or permanent backend failure.
///
/// A transient error after a request was sent is ambiguous: the script may
/// have run. That is safe for every operation here: an acquire whose reply
/// was lost leaves a lease nobody knows about, which expires after its TTL;
/// a lost extend or release reply is retried or reported.
pub(crate) fn classify(err: RedisError, doing: &str) -> Error {
    let message = format!("{doing}: {err}");
    if is_auth_error(&err) {
        return Error::Configuration {
            message: format!("{doing}: Redis refused the credentials or permissions: {err}"),
            source: Some(Box::new(err)),
        };
    }
    if is_transient(&err) {
        Error::transient(KIND, message, Some(Box::new(err) as _))
    } else {
        Error::backend(KIND, message, Some(Box::new(err) as _))
    }
}

/// Wrong password, unknown user, missing `AUTH`, or an ACL denial.
pub(crate) fn is_auth_error(err: &RedisError) -> bool {
    if matches!(
        err.kind(),
        ErrorKind::AuthenticationFailed | ErrorKind::Server(ServerErrorKind::NoPerm)
    ) {
        return true;
    }
    matches!(err.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

fn is_transient(err: &RedisError) -> bool {
    if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
        return true;
    }
    if matches!(err.kind(), ErrorKind::ClusterConnectionNotFound) {
        return true;
    }
    if matches!(err.code(), Some("LOADING" | "BUSY" | "MASTERDOWN")) {
        return true;
    }
    matches!(
        err.retry_method(),
        RetryMethod::Reconnect
            | RetryMethod::ReconnectFromInitialConnections
            | RetryMethod::RetryImmediately
            | RetryMethod::WaitAndRetry
            | RetryMethod::AskRedirect
            | RetryMethod::MovedRedirect
            | RetryMethod::RefreshSlotsAndRetry
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let io = RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert!(classify(io, "x").is_retryable());
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "WRONGPASS"));
        assert!(matches!(classify(auth, "x"), Error::Configuration { .. }));
        let typ = RedisError::from((ErrorKind::UnexpectedReturnType, "bad"));
        assert!(matches!(classify(typ, "x"), Error::Backend { .. }));
    }
}
