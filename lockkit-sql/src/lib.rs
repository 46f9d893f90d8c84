//! # lockkit-sql
//!
//! Leases as rows of a SQL table — the seed's `locks` table, done right
//! (`ARCHITECTURE.md` §6). SQLite is the embedded default (feature `sqlite`); Postgres
//! and MySQL join as sibling dialects of the same backend.
//!
//! ## The table
//!
//! | column | meaning |
//! |---|---|
//! | `lock_name` (primary key) | the lock, byte-exact, case-sensitive |
//! | `owner_id` | the holder's owner label (`pipeline_1`) |
//! | `lease_id` | the unique id of this acquisition; extend and release match it |
//! | `fence` | the fencing token of this grant |
//! | `created_at`, `expires_at` | by the **database's** clock (SQLite: see below) |
//!
//! A companion table `<table>_fence (lock_name, fence)` keeps each name's
//! tokens rising across deleted rows (release, force-release, clean-up), so
//! tokens never restart. One small row stays per name ever used, like
//! Redis's fence keys:
//! - **SQLite** records the high-water mark from an `AFTER DELETE` trigger;
//!   its one-writer-at-a-time statements read it without any chance of a
//!   stale view (a stale WAL snapshot fails with `SQLITE_BUSY_SNAPSHOT`,
//!   which is retried).
//! - **Postgres** and **MySQL** use it as a per-name counter that every
//!   acquire increments first, under its row lock, before it touches the
//!   lock row. A high-water mark read by the acquire statement would come
//!   from its snapshot, which can miss a release committed while the
//!   statement waited — and hand out a token twice. Tokens rise strictly in
//!   commit order, with gaps.
//!
//! ## The statements
//!
//! - **acquire** is one statement (MySQL: one transaction of two): insert
//!   the row, or — if a row exists and the database clock says it has
//!   expired — take it over with a new fence.
//!   It returns the new fence, or no row when the lock is held. (SQLite has
//!   no server, so its "database clock" is the host's boot clock, bound by
//!   the client; see [`sqlite`].) (The seed's
//!   check query compared `expires_at < CURRENT_TIMESTAMP`, which selects
//!   *expired* holders, and its release lacked `DELETE FROM`; neither is
//!   copied.)
//! - **extend** moves `expires_at` only for the row with this `lease_id`
//!   that is still unexpired; otherwise the lease is lost.
//! - **release** deletes the row with this `lease_id` and says whether it
//!   was still unexpired.
//! - **cleanup** deletes expired rows (the seed's periodic clean-up).
//!
//! Waiters on SQLite and MySQL poll (woken early by SQLite's wake file) and
//! race for a released lock. **Postgres queues them** (`<table>_queue`, see
//! `postgres`): a free lock goes to the head of the queue, and a release
//! wakes only that waiter ([`SqlOptions::queue_entry_ttl`] bounds how long
//! a waiter that died holds its place).
//!
//! Names and owners are always bound parameters; the table name is a
//! validated identifier ([`TableName`]) quoted into the statement text.
//!
//! ## Schema for DBAs (SQLite)
//!
//! With `create_schema: false` in [`SqlOptions`], create the objects by hand
//! (replace `locks` by your table name). Expiry is decided by `boot_id` and
//! `boot_expires_ms` (the host's boot clock, see [`sqlite`]):
//!
//! ```sql
//! CREATE TABLE locks (
//!   lock_name       TEXT    NOT NULL PRIMARY KEY,
//!   owner_id        TEXT    NOT NULL,
//!   lease_id        TEXT    NOT NULL,
//!   fence           INTEGER NOT NULL,
//!   created_at      INTEGER NOT NULL,  -- ms since the Unix epoch, granter's wall clock (informational)
//!   expires_at      INTEGER NOT NULL,  -- likewise
//!   boot_id         TEXT    NOT NULL DEFAULT '',  -- the host's boot id
//!   boot_expires_ms INTEGER NOT NULL DEFAULT 0    -- expiry on that boot's CLOCK_BOOTTIME
//! );
//! CREATE INDEX locks_boot_expires ON locks (boot_expires_ms);
//! CREATE TABLE locks_fence (lock_name TEXT NOT NULL PRIMARY KEY, fence INTEGER NOT NULL);
//! CREATE TRIGGER locks_keep_fence AFTER DELETE ON locks BEGIN
//!   INSERT INTO locks_fence (lock_name, fence) VALUES (OLD.lock_name, OLD.fence)
//!   ON CONFLICT (lock_name) DO UPDATE SET fence = MAX(fence, excluded.fence);
//! END;
//! ```
//!
//! ## Layout
//!
//! [`backend::SqlBackend`] is written once; a [`Dialect`] supplies statement
//! texts, bind order, how each statement reports its outcome, the schema,
//! transient error codes and a push channel (Postgres `LISTEN/NOTIFY`,
//! SQLite's wake file). The dialects are [`sqlite`] (feature `sqlite`, with
//! wake-ups through a watched file), `postgres` (feature `postgres`, with
//! `LISTEN/NOTIFY` wake-ups) and `mysql` (feature `mysql`, MySQL 8 and
//! MariaDB 10.6+); each module documents its SQL for DBAs.
//!
//! Expired rows stay until a takeover or [`LockBackend::cleanup_expired`]
//! (run it periodically with [`lockkit_core::spawn_cleanup`]).
//!
//! [`LockBackend::cleanup_expired`]: lockkit_core::LockBackend::cleanup_expired

pub mod backend;
mod connect;
pub mod dialect;
mod error;
mod host_clock;
mod lanes;
mod queue;
pub mod table;

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "sqlite")]
mod wake_file;

pub use crate::backend::{SqlBackend, SqlOptions};
pub use crate::connect::{CONNECT_TIMEOUT, LOCKKIT_PARAMS};
pub use crate::dialect::Dialect;
pub use crate::table::TableName;
