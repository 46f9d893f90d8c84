//! How a backend tells a guard that its lease is gone, and why.

use std::fmt;
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::error::LostReason;

/// A backend's "this lease is gone" signal for one lease, with the reason.
///
/// Backends that learn of a loss by themselves (a session that expired, a
/// node deleted by an admin, a lease observed expired) return one from
/// [`LockBackend::loss_signal`](crate::LockBackend::loss_signal); the guard
/// waits on it besides its own renewal and deadline, and reports the reason
/// the backend gave — not a generic one.
///
/// The signal fires once: the first [`fire`](Self::fire) wins. A signal can
/// also follow a parent token (a session's), whose firing means
/// `on_parent` unless a reason was recorded first.
///
/// ```
/// use lockkit_core::LostReason;
/// use lockkit_core::spi::LossSignal;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let signal = LossSignal::new();
/// let watching = signal.clone();
/// signal.fire(LostReason::NotHeld);
/// signal.fire(LostReason::Expired); // too late: the first reason stays
/// assert_eq!(watching.fired().await, LostReason::NotHeld);
/// # }
/// ```
#[derive(Clone)]
pub struct LossSignal {
    token: CancellationToken,
    reason: Arc<OnceLock<LostReason>>,
    on_parent: Option<Arc<dyn Fn() -> LostReason + Send + Sync>>,
}

impl fmt::Debug for LossSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LossSignal")
            .field("fired", &self.is_fired())
            .field("reason", &self.reason.get())
            .finish_non_exhaustive()
    }
}

impl Default for LossSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl LossSignal {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self {
            token: CancellationToken::new(),
            reason: Arc::new(OnceLock::new()),
            on_parent: None,
        }
    }

    /// A signal that also fires when `parent` is cancelled (a session's
    /// token), with the reason `on_parent` gives then.
    pub fn child_of(
        parent: &CancellationToken,
        on_parent: impl Fn() -> LostReason + Send + Sync + 'static,
    ) -> Self {
        Self {
            token: parent.child_token(),
            reason: Arc::new(OnceLock::new()),
            on_parent: Some(Arc::new(on_parent)),
        }
    }

    /// Fires the signal with `reason`, unless it already fired.
    pub fn fire(&self, reason: LostReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Whether the signal has fired.
    pub fn is_fired(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The reason, once fired.
    pub fn reason(&self) -> Option<LostReason> {
        if !self.is_fired() {
            return None;
        }
        Some(match (self.reason.get(), &self.on_parent) {
            (Some(reason), _) => reason.clone(),
            (None, Some(on_parent)) => on_parent(),
            (None, None) => LostReason::NotHeld,
        })
    }

    /// Waits until the signal fires and returns the reason.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting.
    pub async fn fired(&self) -> LostReason {
        self.token.cancelled().await;
        self.reason().unwrap_or(LostReason::NotHeld)
    }
}
