//! The one error type of the lockkit contract.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::name::LockName;

/// A boxed error kept as the source of a backend failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for `Result<T, lockkit_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a lock, by kind.
///
/// The kinds tell a caller what to do: fix the input ([`InvalidName`],
/// [`InvalidTtl`], [`InvalidInput`], [`Configuration`]), try later
/// ([`Timeout`], [`Transient`]), stop the protected work ([`Lost`]), or give
/// up ([`Backend`]). [`Error::is_retryable`] sums that up.
///
/// Messages never contain passwords: URLs are passed through
/// [`redact_url`](crate::redact_url) before they reach an error.
///
/// [`InvalidName`]: Error::InvalidName
/// [`InvalidTtl`]: Error::InvalidTtl
/// [`InvalidInput`]: Error::InvalidInput
/// [`Configuration`]: Error::Configuration
/// [`Timeout`]: Error::Timeout
/// [`Transient`]: Error::Transient
/// [`Lost`]: Error::Lost
/// [`Backend`]: Error::Backend
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock name is empty, too long or contains a control character.
    #[error("invalid lock name: {reason}")]
    InvalidName {
        /// What is wrong with it.
        reason: String,
    },

    /// The TTL is zero, below the minimum or above the maximum.
    #[error("invalid TTL {ttl:?}: {reason}")]
    InvalidTtl {
        /// The TTL that was asked for.
        ttl: Duration,
        /// What is wrong with it.
        reason: String,
    },

    /// Some other argument is invalid (an owner label, a table name, an option).
    #[error("invalid input: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
        /// The underlying error (a number that did not parse), if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The lock was not granted before the deadline.
    #[error("timed out after {waited:?} waiting for lock {name:?}")]
    Timeout {
        /// The lock that was asked for.
        name: LockName,
        /// How long the caller waited.
        waited: Duration,
    },

    /// The lease is gone: it expired, was force-released, or the backend
    /// session that carried it died. Work protected by it must stop.
    #[error("lease on {name:?} was lost: {reason}")]
    Lost {
        /// The lock whose lease was lost.
        name: LockName,
        /// Why it was lost.
        reason: LostReason,
    },

    /// This [`Locker`](crate::Locker) already holds the lock; waiting for it
    /// would wait for ourselves.
    #[error("this locker already holds {name:?}; acquiring it again would deadlock")]
    WouldDeadlock {
        /// The lock that is already held.
        name: LockName,
    },

    /// The request's permit count differs from the count the name's live
    /// holders asked with. Holders of one name must agree on N; a new count
    /// takes effect once every lease of the old one is gone.
    #[error(
        "lock {name:?} is held with {held} permit(s); a request for {asked} permit(s) disagrees"
    )]
    PermitsMismatch {
        /// The lock (semaphore).
        name: LockName,
        /// The count its live holders asked with.
        held: u32,
        /// The count this request asked with.
        asked: u32,
    },

    /// A backend failure that may go away by itself (connection reset,
    /// timeout, busy database). Safe to retry.
    #[error("transient {backend} failure: {message}")]
    Transient {
        /// Which backend (`"sqlite"`, `"redis"`, …).
        backend: &'static str,
        /// What happened.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A backend failure that retrying will not fix (permission denied,
    /// malformed schema, protocol error).
    #[error("{backend} failure: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What happened.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The backend could not be set up: bad URL, unknown scheme, a feature
    /// that is not compiled in, wrong credentials.
    #[error("configuration error: {message}")]
    Configuration {
        /// What is wrong (passwords redacted).
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// A [`Error::Transient`] failure of `backend`.
    pub fn transient(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<Option<BoxError>>,
    ) -> Self {
        Self::Transient {
            backend,
            message: message.into(),
            source: source.into(),
        }
    }

    /// A permanent [`Error::Backend`] failure of `backend`.
    pub fn backend(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<Option<BoxError>>,
    ) -> Self {
        Self::Backend {
            backend,
            message: message.into(),
            source: source.into(),
        }
    }

    /// [`Error::Lost`] for `name` with `reason` — what backends return when
    /// an extend finds the lease gone (`LostReason::NotHeld`).
    pub fn lost(name: &LockName, reason: LostReason) -> Self {
        Self::Lost {
            name: name.clone(),
            reason,
        }
    }

    /// An [`Error::InvalidInput`] without a source.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput {
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::InvalidInput`] caused by `source`.
    pub fn invalid_input_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::InvalidInput {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// [`Error::PermitsMismatch`]: `name`'s holders asked with `held`
    /// permits, the request with `asked`.
    pub fn permits_mismatch(name: &LockName, held: u32, asked: u32) -> Self {
        Self::PermitsMismatch {
            name: name.clone(),
            held,
            asked,
        }
    }

    /// A [`Error::Configuration`] error without a source.
    pub fn configuration(message: impl Into<String>) -> Self {
        Self::Configuration {
            message: message.into(),
            source: None,
        }
    }

    /// `true` when trying again later may succeed: [`Error::Transient`] and
    /// [`Error::Timeout`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::Timeout { .. })
    }

    /// `true` for [`Error::Lost`].
    pub fn is_lost(&self) -> bool {
        matches!(self, Self::Lost { .. })
    }

    /// A short, stable label for metrics and logs (`"timeout"`, `"lost"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "invalid_name",
            Self::InvalidTtl { .. } => "invalid_ttl",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Timeout { .. } => "timeout",
            Self::Lost { .. } => "lost",
            Self::WouldDeadlock { .. } => "would_deadlock",
            Self::PermitsMismatch { .. } => "permits_mismatch",
            Self::Transient { .. } => "transient",
            Self::Backend { .. } => "backend",
            Self::Configuration { .. } => "configuration",
        }
    }
}

/// Why a lease was lost.
///
/// Two reasons are equal when they are the same kind; for
/// [`RenewalFailed`](Self::RenewalFailed) and
/// [`SessionLost`](Self::SessionLost) their messages must match too.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LostReason {
    /// The local safe deadline passed without a successful renewal.
    Expired,
    /// The backend says the lease is no longer ours (it expired there and
    /// was taken over, or an admin force-released it).
    NotHeld,
    /// Renewal failed with an error that retrying cannot fix (kept as the
    /// error itself, with its source chain).
    RenewalFailed(Arc<Error>),
    /// The backend session that carried the lease (etcd lease, ZooKeeper
    /// session, connection) ended.
    SessionLost(String),
    /// The configured maximum hold time passed.
    MaxHoldExceeded,
}

impl LostReason {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::NotHeld => "not_held",
            Self::RenewalFailed(_) => "renewal_failed",
            Self::SessionLost(_) => "session_lost",
            Self::MaxHoldExceeded => "max_hold",
        }
    }
}

impl PartialEq for LostReason {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::RenewalFailed(a), Self::RenewalFailed(b)) => {
                a.kind() == b.kind() && a.to_string() == b.to_string()
            }
            (Self::SessionLost(a), Self::SessionLost(b)) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Eq for LostReason {}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Expired => f.write_str("the local safe deadline passed without a renewal"),
            Self::NotHeld => f.write_str("the backend no longer holds it for this lease"),
            Self::RenewalFailed(why) => write!(f, "renewal failed: {why}"),
            Self::SessionLost(why) => write!(f, "backend session lost: {why}"),
            Self::MaxHoldExceeded => f.write_str("the maximum hold time passed"),
        }
    }
}
