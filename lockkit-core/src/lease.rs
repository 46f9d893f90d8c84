//! Leases, fencing tokens and what backends report about holders.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::name::{LockName, validate_label};
use crate::permits::validate_permits;
use crate::ttl::validate_ttl;

/// A fencing token: a number the backend attaches to every grant of a lock.
///
/// For one lock name a later grant always carries a strictly larger token,
/// so a storage system that remembers the largest token it has seen can
/// refuse writes from a holder whose lease has since been lost.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(u64);

impl FencingToken {
    /// Wraps a raw token.
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The raw token.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FencingToken({})", self.0)
    }
}

impl From<FencingToken> for u64 {
    fn from(token: FencingToken) -> u64 {
        token.0
    }
}

/// The unique id of one acquisition. Extending and releasing match on it, so
/// a holder whose lease expired and was granted to someone else cannot touch
/// the new lease.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(Arc<str>);

impl LeaseId {
    /// A fresh random id: 32 lowercase hex digits (128 random bits).
    pub fn random() -> Self {
        let value = fastrand::u128(..);
        Self(format!("{value:032x}").into())
    }

    /// Wraps an id read back from a backend.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty id, one over 255 bytes, or one
    /// with control characters.
    pub fn parse(value: &str) -> Result<Self> {
        validate_label(value, "lease id").map_err(Error::invalid_input)?;
        Ok(Self(value.into()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// One request for a lock: what a [`LockBackend`](crate::LockBackend) is
/// asked to grant. Built (and validated) by [`AcquireRequest::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AcquireRequest {
    /// The lock.
    pub name: LockName,
    /// Who asks: a label such as `pipeline_1`, stored as the holder's owner.
    pub owner: String,
    /// The unique id this acquisition will carry if granted.
    pub lease_id: LeaseId,
    /// How long the lease lasts without renewal.
    pub ttl: Duration,
    /// How many holders the name admits at once: 1 for a lock, N for a
    /// semaphore (see [`with_permits`](Self::with_permits)).
    pub permits: u32,
}

impl AcquireRequest {
    /// A request for `name` by `owner` with a fresh lease id.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid owner label (same rules as lock
    /// names) and [`Error::InvalidTtl`] for a TTL out of bounds.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockkit_core::LockName;
    /// use lockkit_core::spi::AcquireRequest;
    ///
    /// let req = AcquireRequest::new(LockName::new("node_b")?, "pipeline_1", Duration::from_secs(10))?;
    /// assert_eq!(req.owner, "pipeline_1");
    /// # Ok::<(), lockkit_core::Error>(())
    /// ```
    pub fn new(name: LockName, owner: impl Into<String>, ttl: Duration) -> Result<Self> {
        let owner = owner.into();
        validate_owner(&owner)?;
        Ok(Self {
            name,
            owner,
            lease_id: LeaseId::random(),
            ttl: validate_ttl(ttl)?,
            permits: 1,
        })
    }

    /// The same request for one of `permits` permits (a semaphore; 1 is a
    /// lock). Every holder of a name must ask with the same count: a
    /// request whose count differs from a live holder's fails with
    /// [`Error::PermitsMismatch`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for 0 or more than
    /// [`MAX_PERMITS`](crate::MAX_PERMITS).
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockkit_core::LockName;
    /// use lockkit_core::spi::AcquireRequest;
    ///
    /// let req = AcquireRequest::new(LockName::new("warehouse")?, "load_7", Duration::from_secs(60))?
    ///     .with_permits(2)?;
    /// assert_eq!(req.permits, 2);
    /// # Ok::<(), lockkit_core::Error>(())
    /// ```
    pub fn with_permits(mut self, permits: u32) -> Result<Self> {
        self.permits = validate_permits(permits)?;
        Ok(self)
    }
}

/// Checks an owner label: 1..=255 bytes, no control characters.
///
/// # Errors
/// [`Error::InvalidInput`] saying what is wrong.
pub fn validate_owner(owner: &str) -> Result<()> {
    validate_label(owner, "owner label").map_err(Error::invalid_input)
}

/// One grant of a lock to one owner, as the holder sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Lease {
    /// The lock.
    pub name: LockName,
    /// The owner label of the holder.
    pub owner: String,
    /// The unique id of this acquisition.
    pub lease_id: LeaseId,
    /// The fencing token of this grant.
    pub token: FencingToken,
    /// The permit count the lease was granted under (1 for a lock).
    pub permits: u32,
    /// The TTL in effect (after any rounding the backend does, e.g. etcd's
    /// whole seconds).
    pub ttl: Duration,
    /// Until when the holder may assume it still holds the lock: the
    /// monotonic instant taken *before* the granting (or last renewing)
    /// request was sent, plus the TTL. Conservative by construction; a
    /// backend may cap it further (etcd: by what its session keep-alive
    /// proves).
    pub deadline: Instant,
    /// The instant taken before the granting (or last renewing) request was
    /// sent: what renewal is scheduled from.
    pub sent_at: Instant,
    /// Backend-specific handle of the grant (the etcd key, the znode path);
    /// `None` for backends that find the lease by name and id alone.
    pub handle: Option<Arc<str>>,
}

impl Lease {
    /// The lease granted for `req`, with `token`, where the granting request
    /// was sent at `sent_at` (taken before the request left).
    pub fn granted(req: &AcquireRequest, token: FencingToken, sent_at: Instant) -> Self {
        Self {
            name: req.name.clone(),
            owner: req.owner.clone(),
            lease_id: req.lease_id.clone(),
            token,
            permits: req.permits,
            ttl: req.ttl,
            deadline: sent_at + req.ttl,
            sent_at,
            handle: None,
        }
    }

    /// The same lease with a different effective TTL (and deadline moved to
    /// match), for backends that round the TTL.
    pub fn with_effective_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self.deadline = self.sent_at + ttl;
        self
    }

    /// The same lease with a backend handle attached.
    pub fn with_handle(mut self, handle: impl Into<Arc<str>>) -> Self {
        self.handle = Some(handle.into());
        self
    }

    /// The lease after a successful renewal whose request was sent at
    /// `sent_at`, for `ttl`.
    pub fn renewed(&self, ttl: Duration, sent_at: Instant) -> Self {
        Self {
            ttl,
            deadline: sent_at + ttl,
            sent_at,
            ..self.clone()
        }
    }

    /// How long the holder may still assume it holds the lock (zero once the
    /// deadline has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// What a backend reports about one current holder of a lock (`holders`,
/// `current`, `list`): one record per held permit. Times are by the
/// backend's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock.
    pub name: LockName,
    /// The holder's owner label.
    pub owner: String,
    /// The holder's lease id.
    pub lease_id: LeaseId,
    /// The holder's fencing token.
    pub token: FencingToken,
    /// The permit count the holder asked with (1 for a lock).
    pub permits: u32,
    /// When the lease was granted, by the backend's clock.
    pub acquired_at: SystemTime,
    /// When it expires unless renewed, by the backend's clock; `None` for
    /// session-bound leases (etcd, ZooKeeper) that last as long as the session.
    pub expires_at: Option<SystemTime>,
}

impl LockInfo {
    /// Builds a record; for backend implementations.
    pub fn new(
        name: LockName,
        owner: impl Into<String>,
        lease_id: LeaseId,
        token: FencingToken,
        acquired_at: SystemTime,
        expires_at: Option<SystemTime>,
    ) -> Self {
        Self {
            name,
            owner: owner.into(),
            lease_id,
            token,
            permits: 1,
            acquired_at,
            expires_at,
        }
    }

    /// The same record with the permit count its holder asked with.
    pub fn with_permits(mut self, permits: u32) -> Self {
        self.permits = permits;
        self
    }
}

/// Converts milliseconds since the Unix epoch (as SQL and Redis store them)
/// to a [`SystemTime`]; negative values clamp to the epoch.
pub fn system_time_from_millis(ms: i64) -> SystemTime {
    let ms = u64::try_from(ms).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}
