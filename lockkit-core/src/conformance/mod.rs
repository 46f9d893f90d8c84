//! The public conformance kit: the contract as executable properties.
//!
//! Every property is a plain `pub async fn` taking a [`Harness`] — a factory
//! of independent clients of one backend (separate connections, as separate
//! processes would have) plus fault hooks. Third-party backend authors run
//! the whole kit with [`conformance_suite!`](crate::conformance_suite):
//!
//! ```ignore
//! lockkit_core::conformance_suite! {
//!     harness: MyHarness::start().await,
//!     except: [fifo_order => "rows have no queue; waiters poll"],
//! }
//! ```
//!
//! The macro stamps one `#[tokio::test]` per property in [`PROPERTIES`]
//! (the calling crate needs `tokio` with the `macros` and
//! `rt-multi-thread` features) — all of them, except those listed with a
//! reason. Exceptions are derived from, and checked against, the backend's
//! [`Capabilities`]: a property whose capability the backend lacks (see
//! [`requirement`]) must be excepted, and one it has may not be. A
//! `conformance_suite_is_complete` test checks the list itself.
//!
//! Properties panic (like `assert!`) when the backend breaks the contract.
//! Lock names are unique per run, so suites can share one server.

mod counting;
mod exclusion;
mod expiry;
mod input;
mod ownership;
mod permits;
mod waiting;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use self::counting::{CountingBackend, InjectedFailure};
pub use self::exclusion::{
    fencing_tokens_increase, fifo_order, mutual_exclusion, names_independent_and_case_sensitive,
    refused_attempts_write_nothing, try_acquire_single_winner,
};
pub use self::expiry::{
    crash_releases_after_ttl, drop_after_loss_releases_at_once, expiry_frees_after_ttl_not_before,
    lost_fires_on_expiry, lost_fires_on_force_release, max_hold_counts_from_grant,
    renewal_follows_a_shorter_extend, renewal_keeps_lease_alive, renewals_are_batched,
    run_exclusive_stops_on_loss,
};
pub use self::input::{
    hostile_names_work, invalid_names_rejected_before_io, invalid_ttl_and_owner_rejected_before_io,
};
pub use self::ownership::{
    cleanup_expired_removes_only_expired, current_and_list_report_holder, extend_moves_expiry,
    force_release_frees_lock, only_owner_can_extend_or_release, release_is_idempotent,
    release_retries_transient_failures,
};
pub use self::permits::{
    PERMITS, permits_admit_n_holders, permits_cancelled_wait_leaves_nothing,
    permits_expired_and_crashed_free_their_permits, permits_fifo_order,
    permits_force_release_fires_every_holder, permits_mismatch_rejected,
    permits_never_over_admitted, permits_only_owner_can_extend_or_release,
    permits_race_admits_exactly_n, permits_tokens_increase, permits_waiter_admitted_on_release,
};
pub use self::waiting::{
    acquire_timeout_leaves_nothing, cancelled_acquire_leaves_nothing,
    cancelled_mid_request_leaves_nothing, lost_reply_acquire_is_idempotent, release_wakes_waiter,
    would_deadlock_on_reentry,
};
use crate::backend::{Capabilities, LockBackend};
use crate::lease::AcquireRequest;
use crate::name::LockName;

/// Every property of the kit, by function name.
pub const PROPERTIES: &[&str] = &[
    "mutual_exclusion",
    "try_acquire_single_winner",
    "fencing_tokens_increase",
    "refused_attempts_write_nothing",
    "names_independent_and_case_sensitive",
    "fifo_order",
    "only_owner_can_extend_or_release",
    "expiry_frees_after_ttl_not_before",
    "crash_releases_after_ttl",
    "lost_fires_on_expiry",
    "lost_fires_on_force_release",
    "renewal_keeps_lease_alive",
    "renewal_follows_a_shorter_extend",
    "renewals_are_batched",
    "max_hold_counts_from_grant",
    "drop_after_loss_releases_at_once",
    "run_exclusive_stops_on_loss",
    "release_wakes_waiter",
    "acquire_timeout_leaves_nothing",
    "cancelled_acquire_leaves_nothing",
    "cancelled_mid_request_leaves_nothing",
    "lost_reply_acquire_is_idempotent",
    "would_deadlock_on_reentry",
    "current_and_list_report_holder",
    "force_release_frees_lock",
    "cleanup_expired_removes_only_expired",
    "extend_moves_expiry",
    "release_is_idempotent",
    "release_retries_transient_failures",
    "hostile_names_work",
    "invalid_names_rejected_before_io",
    "invalid_ttl_and_owner_rejected_before_io",
    "permits_admit_n_holders",
    "permits_race_admits_exactly_n",
    "permits_never_over_admitted",
    "permits_waiter_admitted_on_release",
    "permits_expired_and_crashed_free_their_permits",
    "permits_only_owner_can_extend_or_release",
    "permits_cancelled_wait_leaves_nothing",
    "permits_tokens_increase",
    "permits_mismatch_rejected",
    "permits_force_release_fires_every_holder",
    "permits_fifo_order",
];

/// Time bounds a backend is held to. Derive them from its capabilities with
/// [`Timing::for_capabilities`] and loosen only with a documented reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// TTL used by expiry properties (a multiple of the TTL granularity).
    pub short_ttl: Duration,
    /// How late after the TTL an abandoned lock may be freed.
    pub expiry_slack: Duration,
    /// How soon after a release a waiter must hold the lock (a push, or the
    /// longest poll interval, plus scheduling margin).
    pub wake_latency: Duration,
}

impl Timing {
    /// Bounds derived from what a backend says about itself: a one-second
    /// (or one-granule) short TTL, the backend's expiry slack plus 250 ms of
    /// scheduling margin, and a wake latency of 1 s with push wake-ups or
    /// the longest poll interval plus 1 s without.
    pub fn for_capabilities(caps: &Capabilities, max_poll: Duration) -> Self {
        let short_ttl = crate::ttl::round_up_ttl(Duration::from_secs(1), caps.ttl_granularity);
        let margin = Duration::from_millis(250);
        let wake_latency = if caps.push_wakeup {
            Duration::from_secs(1)
        } else {
            max_poll + Duration::from_secs(1)
        };
        Self {
            short_ttl,
            expiry_slack: caps.expiry_slack + margin,
            wake_latency,
        }
    }
}

/// What a property needs from a backend under test.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A new, independent client: its own connections/session, as a
    /// separate process would have.
    async fn client(&self) -> Arc<dyn LockBackend>;

    /// The time bounds for this backend.
    async fn timing(&self) -> Timing {
        let client = self.client().await;
        Timing::for_capabilities(&client.capabilities(), client.poll_policy().max)
    }

    /// Raw records the backend still stores for `name` (rows, keys, znodes,
    /// queue entries), described for an assertion message. Empty means
    /// nothing is left. The default inspects nothing.
    async fn leftovers(&self, name: &LockName) -> Vec<String> {
        let _ = name;
        Vec::new()
    }

    /// How many waiters are queued behind the holder of `name`, if the
    /// backend can tell (FIFO backends). Properties that need a waiter to be
    /// queued before they go on await this instead of sleeping; `None` (the
    /// default) falls back to a fixed pause.
    async fn queued(&self, name: &LockName) -> Option<usize> {
        let _ = name;
        None
    }

    /// The stored fence counter (or high-water mark) of `name`, for
    /// backends that keep one: a refused acquire attempt must not move it.
    /// `None` (the default) skips that check.
    async fn stored_fence(&self, name: &LockName) -> Option<u64> {
        let _ = name;
        None
    }

    /// Fault hook: the process owning `client` dies without releasing
    /// anything. The default drops the client; backends with sessions
    /// should kill the session without a clean close.
    async fn crash(&self, client: Arc<dyn LockBackend>) {
        drop(client);
    }
}

/// A capability a property needs: its name, and whether a backend has it.
pub type Requirement = (&'static str, fn(&Capabilities) -> bool);

/// The capability a property needs, if any: a backend without it must
/// list the property under `except`, and a backend with it must run it.
pub fn requirement(property: &str) -> Option<Requirement> {
    match property {
        "fifo_order" => Some(("fifo", |caps| caps.fifo)),
        "permits_fifo_order" => Some(("fifo and max_permits >= 3", |caps| {
            caps.fifo && caps.max_permits >= PERMITS
        })),
        p if p.starts_with("permits_") => {
            Some(("max_permits >= 3", |caps| caps.max_permits >= PERMITS))
        }
        _ => None,
    }
}

/// Checks a suite's `except` list (the macro calls it): every name is a
/// property, none twice, and `stamped` is exactly [`PROPERTIES`].
///
/// # Panics
/// When the lists are inconsistent.
pub fn assert_complete(stamped: &[&str], except: &[(&str, &str)]) {
    let mut problems = Vec::new();
    if stamped != PROPERTIES {
        problems.push(format!(
            "the stamped properties {stamped:?} differ from PROPERTIES {PROPERTIES:?}"
        ));
    }
    for (i, (name, why)) in except.iter().enumerate() {
        if !PROPERTIES.contains(name) {
            problems.push(format!("`{name}` is not a conformance property"));
        }
        if except[..i].iter().any(|(other, _)| other == name) {
            problems.push(format!("`{name}` is listed twice"));
        }
        if why.trim().is_empty() {
            problems.push(format!("`{name}` is excepted without a reason"));
        }
    }
    assert!(
        problems.is_empty(),
        "the conformance suite is inconsistent:\n  {}",
        problems.join("\n  ")
    );
}

/// Decides whether `property` runs on this backend (the macro calls it
/// first in every test): a property in `except` is skipped — with its
/// reason printed — but only if the backend's [`Capabilities`] lack what
/// the property needs; a property the capabilities cannot support must be
/// in `except`.
///
/// # Panics
/// When `except` and the capabilities disagree.
pub async fn skip<H: Harness + ?Sized>(property: &str, except: &[(&str, &str)], h: &H) -> bool {
    let caps = h.client().await.capabilities();
    let excepted = except.iter().find(|(name, _)| *name == property);
    match (excepted, requirement(property)) {
        (Some((_, why)), Some((needs, has))) => {
            assert!(
                !has(&caps),
                "`{property}` is excepted ({why}), but the backend declares `{needs}`: run it"
            );
            eprintln!("conformance: `{property}` skipped: {why}");
            true
        }
        (Some((_, why)), None) => {
            eprintln!("conformance: `{property}` skipped: {why}");
            true
        }
        (None, Some((needs, has))) => {
            assert!(
                has(&caps),
                "the backend does not declare `{needs}`, which `{property}` needs: list it \
                 under `except` with the reason"
            );
            false
        }
        (None, None) => false,
    }
}

/// Stamps the whole conformance kit into tests for one backend; see the
/// [module docs](crate::conformance).
///
/// `harness` is an expression (it may `.await`) evaluated afresh in each
/// test. Every property in [`PROPERTIES`] becomes a test; `except` lists
/// the ones the backend cannot support, each with the reason. Exceptions
/// are checked against the backend's [`Capabilities`] (see [`skip`]), and
/// `conformance_suite_is_complete` checks the list itself.
///
/// ```ignore
/// lockkit_core::conformance_suite! {
///     harness: MyHarness::start().await,
///     except: [fifo_order => "rows have no queue; waiters poll"],
/// }
/// ```
#[macro_export]
macro_rules! conformance_suite {
    (
        harness: $harness:expr
        $(, except: [$($skip:ident => $why:literal),* $(,)?])?
        $(,)?
    ) => {
        $crate::__conformance_tests! {
            harness: $harness;
            except: [$($((stringify!($skip), $why)),*)?];
            properties: [
                mutual_exclusion,
                try_acquire_single_winner,
                fencing_tokens_increase,
                refused_attempts_write_nothing,
                names_independent_and_case_sensitive,
                fifo_order,
                only_owner_can_extend_or_release,
                expiry_frees_after_ttl_not_before,
                crash_releases_after_ttl,
                lost_fires_on_expiry,
                lost_fires_on_force_release,
                renewal_keeps_lease_alive,
                renewal_follows_a_shorter_extend,
                renewals_are_batched,
                max_hold_counts_from_grant,
                drop_after_loss_releases_at_once,
                run_exclusive_stops_on_loss,
                release_wakes_waiter,
                acquire_timeout_leaves_nothing,
                cancelled_acquire_leaves_nothing,
                cancelled_mid_request_leaves_nothing,
                lost_reply_acquire_is_idempotent,
                would_deadlock_on_reentry,
                current_and_list_report_holder,
                force_release_frees_lock,
                cleanup_expired_removes_only_expired,
                extend_moves_expiry,
                release_is_idempotent,
                release_retries_transient_failures,
                hostile_names_work,
                invalid_names_rejected_before_io,
                invalid_ttl_and_owner_rejected_before_io,
                permits_admit_n_holders,
                permits_race_admits_exactly_n,
                permits_never_over_admitted,
                permits_waiter_admitted_on_release,
                permits_expired_and_crashed_free_their_permits,
                permits_only_owner_can_extend_or_release,
                permits_cancelled_wait_leaves_nothing,
                permits_tokens_increase,
                permits_mismatch_rejected,
                permits_force_release_fires_every_holder,
                permits_fifo_order,
            ]
        }
    };
}

/// The test stamping behind [`conformance_suite!`]; not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (
        harness: $harness:expr;
        except: [$($except:expr),*];
        properties: [$($prop:ident),* $(,)?]
    ) => {
        const __LOCKKIT_EXCEPT: &[(&str, &str)] = &[$($except),*];
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $prop() {
                let harness = $harness;
                if $crate::conformance::skip(stringify!($prop), __LOCKKIT_EXCEPT, &harness).await {
                    return;
                }
                $crate::conformance::$prop(&harness).await;
            }
        )*
        #[test]
        fn conformance_suite_is_complete() {
            $crate::conformance::assert_complete(
                &[$(stringify!($prop)),*],
                __LOCKKIT_EXCEPT,
            );
        }
    };
}

/// A lock name unique to this run, under `lockkit-conformance/<tag>/`.
pub fn unique_name(tag: &str) -> LockName {
    LockName::new(format!(
        "lockkit-conformance/{tag}/{:016x}",
        fastrand::u64(..)
    ))
    .expect("generated names are valid")
}

/// A request for `name` by `owner` with `ttl`.
pub(crate) fn request(name: &LockName, owner: &str, ttl: Duration) -> AcquireRequest {
    AcquireRequest::new(name.clone(), owner, ttl).expect("valid request")
}

/// A long TTL for holders that must not expire during a property.
pub(crate) const LONG_TTL: Duration = Duration::from_secs(30);

/// Waits until `n` waiters are queued for `name` (per
/// [`Harness::queued`]), or — for backends that cannot tell — pauses long
/// enough for a waiter to have made its first request.
pub(crate) async fn await_queued<H: Harness + ?Sized>(h: &H, name: &LockName, n: usize) {
    if h.queued(name).await.is_none() {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        return;
    }
    let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.queued(name).await.is_some_and(|q| q < n) {
        assert!(
            tokio::time::Instant::now() < give_up,
            "{n} waiter(s) for {name:?} never showed up in the queue"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Waits (observing, not sleeping blindly) until no waiter is queued for
/// `name`, failing after `within`; returns at once for backends that
/// cannot tell ([`Harness::queued`] is `None`).
pub(crate) async fn await_queue_drained<H: Harness + ?Sized>(
    h: &H,
    name: &LockName,
    within: std::time::Duration,
) {
    let give_up = tokio::time::Instant::now() + within;
    while let Some(queued) = h.queued(name).await
        && queued > 0
    {
        assert!(
            tokio::time::Instant::now() < give_up,
            "{queued} waiter(s) for {name:?} still queued {within:?} after being cancelled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Asserts that nothing is held or stored for `name` any more.
pub(crate) async fn assert_clean<H: Harness + ?Sized>(
    h: &H,
    client: &dyn LockBackend,
    name: &LockName,
) {
    assert_eq!(
        client.current(name).await.expect("current"),
        None,
        "{name:?} should be free"
    );
    let listed = client.list().await.expect("list");
    assert!(
        listed.iter().all(|info| &info.name != name),
        "{name:?} should not be listed"
    );
    let left = h.leftovers(name).await;
    assert!(
        left.is_empty(),
        "records left behind for {name:?}: {left:?}"
    );
}
