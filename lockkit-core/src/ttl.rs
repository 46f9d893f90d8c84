//! TTL bounds shared by every backend.

use std::time::Duration;

use crate::error::{Error, Result};

/// The shortest TTL lockkit accepts: one millisecond, the finest granularity
/// any backend stores.
pub const MIN_TTL: Duration = Duration::from_millis(1);

/// The longest TTL lockkit accepts: 24 hours. Work that runs longer keeps
/// its lease with renewal, not with a huge TTL that would block everyone for
/// a day after a crash.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Checks that `ttl` is within [`MIN_TTL`]..=[`MAX_TTL`].
///
/// # Errors
/// [`Error::InvalidTtl`] when it is not.
///
/// ```
/// use std::time::Duration;
/// use lockkit_core::validate_ttl;
///
/// assert!(validate_ttl(Duration::from_secs(30)).is_ok());
/// assert!(validate_ttl(Duration::ZERO).is_err());
/// ```
pub fn validate_ttl(ttl: Duration) -> Result<Duration> {
    if ttl < MIN_TTL {
        return Err(Error::InvalidTtl {
            ttl,
            reason: format!("a TTL must be at least {MIN_TTL:?}"),
        });
    }
    if ttl > MAX_TTL {
        return Err(Error::InvalidTtl {
            ttl,
            reason: format!("a TTL must be at most {MAX_TTL:?}; use renewal for long work"),
        });
    }
    Ok(ttl)
}

/// Rounds `ttl` up to a whole multiple of `granularity` (e.g. etcd's whole
/// seconds). A zero granularity returns `ttl` unchanged.
pub fn round_up_ttl(ttl: Duration, granularity: Duration) -> Duration {
    let g = granularity.as_nanos();
    if g == 0 {
        return ttl;
    }
    let t = ttl.as_nanos();
    let rounded = t.div_ceil(g).saturating_mul(g);
    Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

/// A duration in whole milliseconds, rounded up, for backends that store
/// milliseconds (`PX`, SQL intervals).
pub fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(round_up_ttl(ttl, Duration::from_millis(1)).as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert!(validate_ttl(Duration::ZERO).is_err());
        assert!(validate_ttl(Duration::from_micros(999)).is_err());
        assert!(validate_ttl(MIN_TTL).is_ok());
        assert!(validate_ttl(MAX_TTL).is_ok());
        assert!(validate_ttl(MAX_TTL + Duration::from_nanos(1)).is_err());
    }

    #[test]
    fn rounding() {
        let s = Duration::from_secs(1);
        assert_eq!(
            round_up_ttl(Duration::from_millis(1500), s),
            Duration::from_secs(2)
        );
        assert_eq!(
            round_up_ttl(Duration::from_secs(2), s),
            Duration::from_secs(2)
        );
        assert_eq!(ttl_millis(Duration::from_micros(1001)), 2);
    }
}
