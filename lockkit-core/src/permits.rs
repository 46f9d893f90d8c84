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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::Locker;
    use crate::backend::Capabilities;
    use crate::lease::{Lease, LockInfo};
    use crate::memory::MemoryBackend;
    use crate::name::LockName;
    use crate::options::LockOptions;

    /// The memory backend reporting that it admits one permit per name,
    /// as a third-party backend without semaphores would.
    #[derive(Debug)]
    struct LocksOnly(MemoryBackend);

    #[async_trait]
    impl LockBackend for LocksOnly {
        fn kind(&self) -> &'static str {
            "locks-only"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                max_permits: 1,
                ..self.0.capabilities()
            }
        }
        async fn try_acquire(&self, req: &AcquireRequest) -> Result<Option<Lease>> {
            self.0.try_acquire(req).await
        }
        async fn abandon(&self, req: &AcquireRequest) -> Result<()> {
            self.0.abandon(req).await
        }
        fn abandon_in_background(&self, req: AcquireRequest) {
            self.0.abandon_in_background(req);
        }
        async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
            self.0.extend(lease, ttl).await
        }
        async fn release(&self, lease: &Lease) -> Result<bool> {
            self.0.release(lease).await
        }
        async fn holders(&self, name: &LockName) -> Result<Vec<LockInfo>> {
            self.0.holders(name).await
        }
        async fn list(&self) -> Result<Vec<LockInfo>> {
            self.0.list().await
        }
        async fn force_release(&self, name: &LockName) -> Result<bool> {
            self.0.force_release(name).await
        }
        async fn cleanup_expired(&self) -> Result<u64> {
            self.0.cleanup_expired().await
        }
    }

    #[tokio::test]
    async fn more_permits_than_the_backend_admits_are_refused_before_any_io() {
        let memory = MemoryBackend::new();
        let locker = Locker::new(Arc::new(LocksOnly(memory.client())), "o").expect("locker");
        let opts = LockOptions::new().permits(2);
        for wait in [false, true] {
            let err = if wait {
                locker.acquire_with("sem", &opts).await.err()
            } else {
                locker.try_acquire_with("sem", &opts).await.err()
            }
            .expect("refused");
            assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
            assert!(err.to_string().contains("at most 1 permit"), "{err}");
        }
        assert_eq!(memory.records(), 0, "nothing was written");
        let guard = locker.acquire("sem").await.expect("a lock still works");
        guard.release().await.expect("release");
    }
}
