//! Connections kept checked out of the sqlx pool for lockkit's statements.
//!
//! A sqlx pool pings every connection it gets back: dropping a
//! `PoolConnection` spawns a task that sends a ping (a full round trip)
//! before the connection is idle again. Run through the pool, every lockkit
//! statement therefore cost two round trips, and while the ping was in
//! flight the next statement found no idle connection and opened another,
//! up to the pool's limit (16 backends of 8 connections each ran into
//! Postgres' default limit of 100). Measured with one task per backend
//! acquiring and releasing its own lock on a local Postgres: 2 350
//! grants/s with 16 tasks through the pool, 7 200/s with connections kept
//! out of it.
//!
//! A [`Lanes`] holds up to `max_connections - 1` connections taken from
//! the pool once and reused directly; the pool stays the factory (and keeps
//! one connection for others, such as users of `SqlBackend::pool`). A
//! statement takes a free lane (a semaphore counts them, so waiting is
//! fair), preferring one whose connection is already open.
//!
//! A lane whose statement did not complete — its future was dropped, or it
//! failed with anything but a database error (I/O, protocol, a batch that
//! stopped half-way) — closes its connection instead of keeping it, so no
//! connection with a half-read reply or an open transaction is reused; the
//! next user of the lane opens a fresh one.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};
use tokio::sync::{Mutex, MutexGuard, Semaphore, SemaphorePermit};

/// Connections kept out of a pool (see the [module docs](self)).
pub(crate) struct Lanes<DB: Database> {
    pool: Pool<DB>,
    slots: Box<[Mutex<Option<PoolConnection<DB>>>]>,
    free: Semaphore,
    next: AtomicUsize,
}

impl<DB: Database> Lanes<DB> {
    /// Lanes over `pool`: one fewer than its connection limit, at least one.
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        let max = usize::try_from(pool.options().get_max_connections()).unwrap_or(1);
        let lanes = max.saturating_sub(1).max(1);
        Self {
            pool,
            slots: (0..lanes).map(|_| Mutex::new(None)).collect(),
            free: Semaphore::new(lanes),
            next: AtomicUsize::new(0),
        }
    }

    /// A free lane with an open connection, waiting for one if all are in
    /// use.
    ///
    /// # Errors
    /// The pool's error opening a connection (or `PoolClosed`).
    ///
    /// # Cancel safety
    /// Dropping the future gives up the place in line; a connection being
    /// opened for the lane goes back to the pool.
    pub(crate) async fn get(&self) -> Result<Lane<'_, DB>, sqlx::Error> {
        let permit = self
            .free
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let mut slot = self.free_slot();
        while slot.is_none() {
            // Another task is between two slots of its scan: look again.
            tokio::task::yield_now().await;
            slot = self.free_slot();
        }
        let Some(mut slot) = slot else {
            return Err(sqlx::Error::PoolClosed);
        };
        if slot.is_none() {
            *slot = Some(self.pool.acquire().await?);
        }
        Ok(Lane {
            slot,
            _permit: permit,
            done: false,
        })
    }

    /// An unlocked slot, preferring one with an open connection.
    fn free_slot(&self) -> Option<MutexGuard<'_, Option<PoolConnection<DB>>>> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut empty = None;
        for i in 0..n {
            if let Ok(slot) = self.slots[(start + i) % n].try_lock() {
                if slot.is_some() {
                    return Some(slot);
                }
                if empty.is_none() {
                    empty = Some(slot);
                }
            }
        }
        empty
    }
}

/// One lane in use: its connection, kept for the next statement only if
/// [`done`](Self::done) is called.
pub(crate) struct Lane<'a, DB: Database> {
    slot: MutexGuard<'a, Option<PoolConnection<DB>>>,
    _permit: SemaphorePermit<'a>,
    done: bool,
}

impl<DB: Database> Lane<'_, DB> {
    /// The lane's connection.
    ///
    /// # Errors
    /// `PoolClosed` if the lane has none (it always has one after `get`).
    pub(crate) fn conn(&mut self) -> Result<&mut DB::Connection, sqlx::Error> {
        match self.slot.as_mut() {
            Some(conn) => Ok(&mut **conn),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// The work on the connection completed: keep it for the next user.
    pub(crate) fn done(mut self) {
        self.done = true;
    }

    /// Keeps the connection after `result` when it completed, or failed
    /// with a database error (the server answered; a single statement
    /// leaves nothing open); closes it otherwise.
    pub(crate) fn finish<T>(self, result: &Result<T, sqlx::Error>) {
        if matches!(result, Ok(_) | Err(sqlx::Error::Database(_))) {
            self.done();
        }
    }
}

impl<DB: Database> Drop for Lane<'_, DB> {
    fn drop(&mut self) {
        if !self.done
            && let Some(mut conn) = self.slot.take()
        {
            conn.close_on_drop();
        }
    }
}
