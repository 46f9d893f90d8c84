//! The FIFO queue of waiters, for dialects that have one (Postgres):
//! [`LockQueue`] on the row-lease backend (`ARCHITECTURE.md` §6).
//!
//! A waiter's step is the dialect's acquire with a queue-entry lifetime:
//! a free lock is granted only to the head of its queue, and a refused
//! attempt joins the queue or refreshes its entry. A release wakes only
//! the new head (its lease id travels in the notification); waiters also
//! step again at their poll interval and, at the latest, every third of
//! the entry's lifetime, which keeps the entry alive and covers a missed
//! notification.

use async_trait::async_trait;
use lockkit_core::spi::{
    AcquireRequest, Backoff, LockQueue, QueuePlace, TurnSubscription, wait_for_turn,
};
use lockkit_core::{Lease, Result};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use tokio::time::Instant;

use crate::backend::SqlBackend;
use crate::dialect::Dialect;

/// A queued waiter's state between the driver's steps.
struct Place {
    /// `None` without a push channel: then the waiter only polls.
    wake: Option<TurnSubscription>,
    backoff: Backoff,
}

#[async_trait]
impl<D> LockQueue for SqlBackend<D>
where
    D: Dialect,
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    for<'t> &'t str: Encode<'t, D::Db> + Type<D::Db>,
    for<'t> i64: Encode<'t, D::Db> + Type<D::Db>,
    for<'r> i64: Decode<'r, D::Db>,
    for<'r> String: Decode<'r, D::Db> + Type<D::Db>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
{
    async fn step(
        &self,
        req: &AcquireRequest,
        place: &mut Option<QueuePlace>,
    ) -> Result<Option<Lease>> {
        let (entry_ttl, poll) = self.queue_timing();
        if place.is_none() {
            // Subscribed before the first step, so a release between the
            // step and the wait is not missed.
            *place = Some(QueuePlace::new(Place {
                wake: self.subscribe_turn(req).await?,
                backoff: poll.backoff(),
            }));
        }
        // Idempotent per lease id: a retry refreshes the same entry or
        // returns the grant already made.
        self.attempt(req, lockkit_core::spi::ttl_millis(entry_ttl))
            .await
    }

    async fn wait_turn(
        &self,
        _req: &AcquireRequest,
        place: &mut QueuePlace,
        until: Option<Instant>,
    ) -> Result<()> {
        let (entry_ttl, _) = self.queue_timing();
        let Some(place) = place.get_mut::<Place>() else {
            return Ok(());
        };
        wait_for_turn(
            place.wake.as_mut(),
            &mut place.backoff,
            entry_ttl / 3,
            until,
        )
        .await;
        Ok(())
    }
}
