//! Permit counts: how many holders a name admits at once.
//!
//! A lock is a semaphore with one permit. Every request carries its permit
//! count N; backends admit a request while fewer than N live leases of the
//! name exist, with the same lease ids, TTLs, renewal, loss signals and
//! fencing as a lock (`ARCHITECTURE.md` §13).

use crate::backend::LockBackend;
use crate::error::{Error, Result};
use crate::lease::AcquireRequest;

/// The largest permit count lockkit accepts. Backends count or list the
/// live permits of a name on every admission, so the count stays small.
pub const MAX_PERMITS: u32 = 1024;

/// Checks that `permits` is within `1..=`[`MAX_PERMITS`].
///
/// # Errors
/// [`Error::InvalidInput`] saying what is wrong.
///
/// ```
/// use lockkit_core::validate_permits;
///
/// assert_eq!(validate_permits(3).unwrap(), 3);
/// assert!(validate_permits(0).is_err());
/// ```
pub fn validate_permits(permits: u32) -> Result<u32> {
    if permits == 0 {
        return Err(Error::invalid_input(
            "a permit count must be at least 1 (1 is a lock)",
        ));
    }
    if permits > MAX_PERMITS {
        return Err(Error::invalid_input(format!(
            "a permit count must be at most {MAX_PERMITS}, not {permits}"
        )));
    }
    Ok(permits)
}

/// Refuses, before any I/O, a request for more permits than `backend`
/// admits natively ([`Capabilities::max_permits`](crate::Capabilities::max_permits)).
///
/// # Errors
/// [`Error::InvalidInput`] naming the backend and its limit.
pub(crate) fn check_supported<B: LockBackend + ?Sized>(
    backend: &B,
    req: &AcquireRequest,
) -> Result<()> {
    let max = backend.capabilities().max_permits;
    if req.permits > max {
        return Err(Error::invalid_input(format!(
            "the {} backend admits at most {max} permit(s) per name; {} were asked for {:?}",
            backend.kind(),
            req.permits,
            req.name
        )));
    }
    Ok(())
}
