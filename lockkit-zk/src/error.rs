//! Turning ZooKeeper client errors into lockkit error kinds.

use lockkit_core::Error;
use zookeeper_client::Error as ZkError;

/// The backend name in errors and metrics.
pub(crate) const KIND: &str = "zookeeper";

/// Whether the server certainly processed the request (any reply that is
/// not a connection or session failure): such a reply proves the session
/// was alive when the request was sent.
pub(crate) fn server_replied<T>(result: &Result<T, ZkError>) -> bool {
    match result {
        Ok(_) => true,
        Err(err) => !is_connection_problem(err),
    }
}

/// Connection loss, timeouts, an expired or closed session: the request may
/// or may not have been applied, and retrying (on a new session if needed)
/// may succeed.
pub(crate) fn is_connection_problem(err: &ZkError) -> bool {
    matches!(
        err,
        ZkError::ConnectionLoss
            | ZkError::Timeout
            | ZkError::NoHosts
            | ZkError::SessionExpired
            | ZkError::SessionMoved
            | ZkError::ClientClosed
            | ZkError::Throttled
            // The client reports broken connections ("no response from
            // connection in …", I/O errors) as custom errors.
            | ZkError::Custom(_)
    )
}

/// Maps a ZooKeeper error met while `doing` something.
pub(crate) fn classify(err: ZkError, doing: &str) -> Error {
    match err {
        ZkError::NoAuth | ZkError::AuthFailed | ZkError::InvalidAcl => Error::Configuration {
            message: format!(
                "ZooKeeper refused {doing}: {err} (check the credentials in the URL and the ACLs of lockkit's nodes)"
            ),
            source: Some(Box::new(err)),
        },
        ref e if is_connection_problem(e) => {
            Error::transient(KIND, format!("{doing}: {err}"), Some(Box::new(err) as _))
        }
        _ => Error::backend(KIND, format!("{doing}: {err}"), Some(Box::new(err) as _)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert!(classify(ZkError::ConnectionLoss, "x").is_retryable());
        assert!(classify(ZkError::SessionExpired, "x").is_retryable());
        assert!(matches!(
            classify(ZkError::NoAuth, "x"),
            Error::Configuration { .. }
        ));
        assert!(matches!(
            classify(ZkError::BadVersion, "x"),
            Error::Backend { .. }
        ));
        assert!(server_replied::<()>(&Err(ZkError::NoNode)));
        assert!(!server_replied::<()>(&Err(ZkError::ConnectionLoss)));
    }
}
