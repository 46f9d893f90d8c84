//! Per-acquisition settings: TTL, how long to wait, renewal, maximum hold.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::ttl::validate_ttl;

/// How a held lease is kept alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Renewal {
    /// No renewal: the lease ends after its TTL; the guard reports it lost
    /// when the local deadline passes.
    Off,
    /// Renew at about a third of the TTL (the default), retrying transient
    /// errors until the local deadline.
    #[default]
    EveryThirdOfTtl,
    /// Renew at this interval, which must be shorter than the TTL.
    Every(Duration),
}

impl Renewal {
    /// The renewal interval for a lease of `ttl`, if any: a third of it,
    /// or the fixed interval capped at half the TTL (so that a shorter
    /// explicit extend is still renewed in time).
    pub fn interval(&self, ttl: Duration) -> Option<Duration> {
        match self {
            Self::Off => None,
            Self::EveryThirdOfTtl => Some(ttl / 3),
            Self::Every(every) => Some((*every).min(ttl / 2)),
        }
    }
}

/// Settings for one acquisition; a [`Locker`](crate::Locker) holds defaults.
///
/// ```
/// use std::time::Duration;
/// use lockkit_core::{LockOptions, Renewal};
///
/// let opts = LockOptions::new()
///     .ttl(Duration::from_secs(600))          // the seed's "lock_duration: 10 mins"
///     .wait_timeout(Duration::from_secs(30))
///     .renewal(Renewal::EveryThirdOfTtl)
///     .max_hold(Duration::from_secs(3600));
/// assert!(opts.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LockOptions {
    /// Lease TTL. Default 30 s.
    pub ttl: Duration,
    /// How long `acquire` waits; `None` waits without limit. Default 60 s.
    pub wait: Option<Duration>,
    /// How the lease is kept alive. Default: renew every TTL/3.
    pub renewal: Renewal,
    /// After this long, counted from the grant (not from when waiting
    /// began), the guard gives the lock up and reports
    /// [`LostReason::MaxHoldExceeded`](crate::LostReason::MaxHoldExceeded).
    /// Default: no limit.
    pub max_hold: Option<Duration>,
    /// How many holders the name admits at once: 1 (the default) is a
    /// lock, N a semaphore of N permits. Every holder of a name must use
    /// the same count ([`Error::PermitsMismatch`] otherwise).
    pub permits: u32,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            wait: Some(Duration::from_secs(60)),
            renewal: Renewal::default(),
            max_hold: None,
            permits: 1,
        }
    }
}

impl LockOptions {
    /// The defaults (TTL 30 s, wait 60 s, renew every TTL/3, no max hold).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the lease TTL.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Waits at most `wait` in `acquire`.
    #[must_use]
    pub fn wait_timeout(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Waits without limit in `acquire`.
    #[must_use]
    pub fn wait_forever(mut self) -> Self {
        self.wait = None;
        self
    }

    /// Sets the renewal policy.
    #[must_use]
    pub fn renewal(mut self, renewal: Renewal) -> Self {
        self.renewal = renewal;
        self
    }

    /// Gives the lock up after `max_hold`.
    #[must_use]
    pub fn max_hold(mut self, max_hold: Duration) -> Self {
        self.max_hold = Some(max_hold);
        self
    }

    /// Makes the name a semaphore of `permits` permits: at most that many
    /// holders at once (1 is a lock). Validated by
    /// [`validate`](Self::validate).
    ///
    /// ```
    /// use lockkit_core::LockOptions;
    ///
    /// // "at most two loads into the warehouse at once"
    /// let opts = LockOptions::new().permits(2);
    /// assert!(opts.validate().is_ok());
    /// assert!(LockOptions::new().permits(0).validate().is_err());
    /// ```
    #[must_use]
    pub fn permits(mut self, permits: u32) -> Self {
        self.permits = permits;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidTtl`] for a TTL out of bounds, [`Error::InvalidInput`]
    /// for a renewal interval not shorter than the TTL, a zero max hold or
    /// a permit count outside `1..=`[`MAX_PERMITS`](crate::MAX_PERMITS).
    pub fn validate(&self) -> Result<()> {
        validate_ttl(self.ttl)?;
        crate::permits::validate_permits(self.permits)?;
        if let Renewal::Every(every) = self.renewal
            && (every.is_zero() || every >= self.ttl)
        {
            return Err(Error::invalid_input(format!(
                "renewal interval {every:?} must be above zero and shorter than the TTL {:?}",
                self.ttl
            )));
        }
        if self.max_hold.is_some_and(|m| m.is_zero()) {
            return Err(Error::invalid_input(
                "max hold must be above zero".to_owned(),
            ));
        }
        Ok(())
    }

    /// The renewal interval in effect for a lease of `ttl`, if any (see
    /// [`Renewal::interval`]).
    pub fn renew_interval(&self, ttl: Duration) -> Option<Duration> {
        self.renewal.interval(ttl)
    }
}
