//! Checking fencing tokens where the data lives (`ARCHITECTURE.md` §12).
//!
//! A lease alone cannot keep two holders apart: a holder that pauses (a GC
//! pause, `SIGSTOP`, a slow disk) past its TTL still believes it holds the
//! lock when it resumes, and a write it sent before its guard noticed the
//! loss may arrive after the next holder's. What makes the write safe is the
//! store refusing it: every grant carries a [`FencingToken`] that is larger
//! than any earlier grant's, so the store remembers the largest token it has
//! accepted and refuses smaller ones.
//!
//! [`Fence`] is that check for data kept in the process (a file, a map, a
//! service that fronts a resource). For data in a database the same check
//! belongs in the write statement itself, so the test and the write are one
//! atomic step. With a `fence` and a `fence_lease` column beside the data:
//!
//! ```sql
//! UPDATE reports
//!    SET body = $body, fence = $token, fence_lease = $lease_id
//!  WHERE id = $id
//!    AND (fence < $token OR (fence = $token AND fence_lease = $lease_id));
//! -- 0 rows updated: a newer holder has written; this holder lost the lock.
//! ```
//!
//! The lease id makes an equal token count only for the same grant: after a
//! Redis failover lost an acknowledged grant, the next grant may reuse its
//! token, and the second writer with that token is refused. The `lockkit`
//! crate's `fenced_write` example runs this statement on SQLite.

use std::sync::Mutex;

use crate::lease::{FencingToken, LeaseId};

/// Why a [`Fence`] refused a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// A newer grant has already passed the fence: the caller's lease is
    /// gone, whatever its guard believes.
    #[error("fencing token {token} is stale: {highest} has already been accepted")]
    Stale {
        /// The refused token.
        token: FencingToken,
        /// The largest token accepted so far.
        highest: FencingToken,
    },
    /// Another lease already passed with the same token: the backend granted
    /// one token twice (possible only where tokens are not durable, e.g. a
    /// Redis failover that lost the grant). The first one keeps the fence.
    #[error("fencing token {token} was already used by another lease")]
    Reused {
        /// The refused token.
        token: FencingToken,
    },
}

/// The largest fencing token accepted so far, and the lease it came with.
///
/// Call [`check`](Self::check) before every read or write of the protected
/// data, with the guard's token and lease id. Checking reads too matters for
/// read-modify-write: a read admitted for a newer holder moves the fence, so
/// the older holder's write that follows is refused and no update is lost.
///
/// ```
/// use lockkit_core::{FencingToken, LeaseId, fence::{Fence, FenceError}};
///
/// let fence = Fence::new();
/// let (old, new) = (LeaseId::random(), LeaseId::random());
/// assert!(fence.check(FencingToken::new(7), &old).is_ok());
/// assert!(fence.check(FencingToken::new(7), &old).is_ok()); // same grant again
/// assert!(fence.check(FencingToken::new(9), &new).is_ok()); // a newer grant
/// assert_eq!(
///     fence.check(FencingToken::new(7), &old),
///     Err(FenceError::Stale { token: FencingToken::new(7), highest: FencingToken::new(9) })
/// );
/// ```
#[derive(Debug, Default)]
pub struct Fence {
    highest: Mutex<Option<(FencingToken, LeaseId)>>,
}

impl Fence {
    /// A fence that has accepted nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits `token` of lease `lease` when it is larger than every token
    /// accepted so far, or equal to the largest and from the same lease;
    /// the fence then remembers it.
    ///
    /// # Errors
    /// [`FenceError::Stale`] for a smaller token, [`FenceError::Reused`]
    /// for the largest token coming with another lease.
    pub fn check(&self, token: FencingToken, lease: &LeaseId) -> Result<(), FenceError> {
        // A panic while holding this lock cannot leave the pair half-written.
        let mut highest = self
            .highest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*highest {
            Some((seen, _)) if token < *seen => Err(FenceError::Stale {
                token,
                highest: *seen,
            }),
            Some((seen, seen_lease)) if token == *seen && seen_lease != lease => {
                Err(FenceError::Reused { token })
            }
            _ => {
                *highest = Some((token, lease.clone()));
                Ok(())
            }
        }
    }

    /// The largest token accepted so far.
    pub fn highest(&self) -> Option<FencingToken> {
        self.highest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|(token, _)| *token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_older_and_reused_tokens() {
        let fence = Fence::new();
        let (a, b) = (LeaseId::random(), LeaseId::random());
        assert_eq!(fence.highest(), None);
        fence.check(FencingToken::new(3), &a).expect("first grant");
        assert_eq!(
            fence.check(FencingToken::new(3), &b),
            Err(FenceError::Reused {
                token: FencingToken::new(3)
            })
        );
        fence.check(FencingToken::new(4), &b).expect("newer grant");
        assert_eq!(
            fence.check(FencingToken::new(3), &a),
            Err(FenceError::Stale {
                token: FencingToken::new(3),
                highest: FencingToken::new(4)
            })
        );
        assert_eq!(fence.highest(), Some(FencingToken::new(4)));
    }
}
