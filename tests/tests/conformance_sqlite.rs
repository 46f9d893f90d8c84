//! The conformance kit against SQLite (a database file per test).

use lockkit_tests::sqlite::SqliteHarness;

lockkit_core::conformance_suite! {
    harness: SqliteHarness::start().await,
    run: [
        mutual_exclusion,
        try_acquire_single_winner,
        fencing_tokens_increase,
        refused_attempts_write_nothing,
        names_independent_and_case_sensitive,
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
    ],
    unsupported: [
        fifo_order => "unsupported on SQLite: rows have no queue of waiters; they poll and the first to retry after a release wins",
    ],
}
