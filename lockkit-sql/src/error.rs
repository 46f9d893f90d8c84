//! Turning sqlx errors into lockkit errors of the right kind.

use lockkit_core::Error;

use crate::dialect::Dialect;

/// Classifies a sqlx error: connection trouble, pool timeouts and the
/// dialect's transient codes (busy, deadlock, serialization) are
/// [`Error::Transient`]; bad configuration is [`Error::Configuration`];
/// everything else is a permanent [`Error::Backend`] failure. `doing` says
/// what was being done, for the message.
pub(crate) fn classify<D: Dialect>(err: sqlx::Error, doing: &str) -> Error {
    let kind = D::KIND;
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => {
            Error::transient(kind, format!("{doing}: {err}"), Some(Box::new(err) as _))
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|c| D::is_transient_code(&c)) => {
            Error::transient(kind, format!("{doing}: {err}"), Some(Box::new(err) as _))
        }
        sqlx::Error::Database(db) if db.code().is_some_and(|c| D::is_configuration_code(&c)) => {
            Error::Configuration {
                message: format!("{kind}: {doing}: {err}"),
                source: Some(Box::new(err)),
            }
        }
        sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) => Error::Configuration {
            message: format!("{kind}: {doing}: {err}"),
            source: Some(Box::new(err)),
        },
        _ => Error::backend(kind, format!("{doing}: {err}"), Some(Box::new(err) as _)),
    }
}

/// The SQLSTATE of the database error behind `err`, if it came from one.
pub(crate) fn sqlstate(err: &Error) -> Option<String> {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<sqlx::Error>())
        .and_then(|sqlx| match sqlx {
            sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
            _ => None,
        })
}

/// Whether `err` is a transaction the server rolled back to resolve a
/// conflict — a deadlock or a serialization failure (SQLSTATE `40001`,
/// which MySQL and MariaDB also give their deadlock 1213, or Postgres'
/// `40P01`). Running the same transaction again is the documented remedy;
/// nothing of the failed one was kept.
pub(crate) fn is_conflict(err: &Error) -> bool {
    matches!(err, Error::Transient { .. })
        && sqlstate(err).is_some_and(|code| code == "40001" || code == "40P01")
}
