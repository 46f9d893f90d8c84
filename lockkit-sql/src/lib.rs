//! # lockkit-sql
//!
//! Leases as rows of a SQL table — the seed's `locks` table, done right
//! (`ARCHITECTURE.md` §6). SQLite is the embedded default (feature `sqlite`); Postgres
//! and MySQL join as sibling dialects of the same backend.
//!
//! ## The table
//!
//! One row per held permit (a lock is a semaphore of one permit,
//! `ARCHITECTURE.md` §6 and §13):
//!
//! | column | meaning |
//! |---|---|
//! | `lock_name` | the lock, byte-exact, case-sensitive |
//! | `lease_id` | the unique id of this acquisition; extend and release match it |
//! | `owner_id` | the holder's owner label (`pipeline_1`) |
//! | `fence` | the fencing token of this grant |
//! | `permits` | the permit count N the holder asked with (1 for a lock) |
//! | `created_at`, `expires_at` | by the **database's** clock (SQLite: see below) |
//!
//! The primary key is `(lock_name, lease_id)`. A companion table
//! `<table>_fence (lock_name, fence)` keeps each name's tokens rising
//! across deleted rows (release, force-release, clean-up), so tokens never
//! restart. One small row stays per name ever used, like Redis's fence
//! keys:
//! - **SQLite** records the high-water mark from an `AFTER DELETE` trigger;
//!   a grant takes one more than the highest fence of the name's rows and
//!   that mark, inside its one writing statement (SQLite runs one writer
//!   at a time and the statement reads the latest data — a stale WAL
//!   snapshot fails with `SQLITE_BUSY_SNAPSHOT`, which is retried).
//! - **Postgres** and **MySQL** use it as a per-name counter that every
//!   grant increments first, under its row lock, before it counts the
//!   permits. A high-water mark read by the grant statement would come
//!   from its snapshot, which can miss a grant committed while the
//!   statement waited — and hand out a token twice. Tokens rise strictly in
//!   commit order, with gaps.
//!
//! ## The statements
//!
//! - **acquire** counts the name's live permits under a lock on the name
//!   and inserts this lease's row when fewer than N are held (below). A
//!   row of this very lease id (a retry after a lost reply) is renewed with
//!   its token; expired rows of the name are deleted on the way. It
//!   returns the new fence, or nothing when every permit is held. (SQLite
//!   has no server, so its "database clock" is the host's boot clock,
//!   bound by the client; see [`sqlite`].) (The seed's check query
//!   compared `expires_at < CURRENT_TIMESTAMP`, which selects *expired*
//!   holders, and its release lacked `DELETE FROM`; neither is copied.)
//! - **extend** moves `expires_at` only for the row with this `lease_id`
//!   that is still unexpired; otherwise the lease is lost.
//! - **release** deletes the row with this `lease_id` and says whether it
//!   was still unexpired; other permits of the name are never touched.
//! - **holders** / **list** read the unexpired rows, one per permit, by
//!   token; **force-release** deletes every row of the name.
//! - **cleanup** deletes expired rows (the seed's periodic clean-up).
//!
//! Waiters on SQLite and MySQL poll (woken early by SQLite's wake file) and
//! race for a released permit. **Postgres queues them** (`<table>_queue`,
//! see `postgres`): free permits go to the first waiters of the queue, and
//! a release wakes them ([`SqlOptions::queue_entry_ttl`] bounds how long a
//! waiter that died holds its place).
//!
//! Names and owners are always bound parameters (or, in the one-round-trip
//! grant batches, MySQL hex literals, which need no escaping, and Postgres
//! escape string constants with `\` and `'` doubled); the table name is a validated identifier ([`TableName`])
//! quoted into the statement text.
//!
//! ## Semaphores
//!
//! A request carries its permit count N
//! ([`AcquireRequest::with_permits`](lockkit_core::spi::AcquireRequest::with_permits));
//! every dialect admits up to [`lockkit_core::MAX_PERMITS`] natively
//! (`Capabilities::max_permits`), with the same statements for N = 1 and
//! N > 1:
//!
//! - **Rows**: one per held permit, keyed `(lock_name, lease_id)`, each
//!   with its own fence and the N it was granted under.
//! - **Admission**, atomic across clients and processes:
//!   - *SQLite*: one `INSERT … SELECT … WHERE (live rows of others) < N
//!     AND none of them has another N … ON CONFLICT (lock_name, lease_id)
//!     DO UPDATE` — one statement under SQLite's single writer, so no
//!     stale read can admit; a read before it refuses a full semaphore
//!     without taking the write lock.
//!   - *Postgres*: one implicit transaction of two statements, sent as one
//!     simple-protocol request: the first decides from its snapshot
//!     whether a permit may be free (and writes nothing if not), then
//!     increments the name's counter — its row lock serialises the name's
//!     admissions; the second runs on a fresh snapshot taken under that
//!     lock, so it sees every committed grant, deletes expired rows of
//!     others (waiting for, and then keeping, a row whose renewal is in
//!     flight), counts the rest and inserts the row if fewer than N remain.
//!   - *MySQL/MariaDB*: a read first (refusals stop there, writing
//!     nothing), then one batch `START TRANSACTION; counter; delete
//!     expired rows; INSERT … SELECT … WHERE count < N; read back; COMMIT`,
//!     the counter's row lock taken by its first statement.
//! - **Waiting**: Postgres keeps its FIFO queue: with k free permits the
//!   first k live queue entries may take one, and a try (which does not
//!   queue) never takes a permit while anyone queues. A release of a lock
//!   (N = 1) wakes the head by name; a release of a semaphore wakes every
//!   waiter of the name to re-check its place (`<name>\n`). SQLite wakes
//!   through its wake file, MySQL polls.
//! - **Tokens** come from the per-name counter (SQLite: the high-water
//!   mark), so concurrent grants of different permits never share a token
//!   and every grant's token is above every earlier grant of the name.
//! - **Mismatched N**: a request whose N differs from a live holder's (or,
//!   on Postgres, from the first queued waiter's when nobody holds) fails
//!   with [`Error::PermitsMismatch`](lockkit_core::Error::PermitsMismatch)
//!   and writes nothing; once the old holders are gone, a new N works.
//! - **Fenced stores** with N > 1: tokens are unique and ordered, but N
//!   holders are live at once, so a single high-water mark in the store
//!   would refuse live holders. Check the lease id against
//!   [`holders`](lockkit_core::LockBackend::holders) or fence per resource
//!   each holder writes.
//!
//! ## Migration from the single-row table
//!
//! Tables created by lockkit before semaphores keyed rows by `lock_name`
//! alone. At start-up (with `create_schema: true`) each dialect finds the
//! missing `permits` column and upgrades the table in place; existing rows
//! become locks of one permit and keep their tokens:
//!
//! - SQLite rebuilds the table (it cannot change a primary key): create
//!   `<table>_upgrade` in the new layout, copy the rows, drop the old table,
//!   rename, then recreate the index and the fence trigger — all in one
//!   transaction.
//! - Postgres: `ALTER TABLE locks ADD COLUMN permits INTEGER NOT NULL
//!   DEFAULT 1`, drop the old primary key, `ALTER TABLE locks ADD PRIMARY
//!   KEY (lock_name, lease_id)`, and `ALTER TABLE locks_queue ADD COLUMN
//!   permits INTEGER NOT NULL DEFAULT 1` — in the schema transaction, under
//!   its advisory lock. Postgres also drops the `locks_expires_at` index of
//!   earlier releases (whatever their age; see the `postgres` module).
//! - MySQL: `ALTER TABLE locks ADD COLUMN permits INT NOT NULL DEFAULT 1,
//!   DROP PRIMARY KEY, ADD PRIMARY KEY (lock_name, lease_id)`.
//!
//! Stop processes running an older lockkit on the table before upgrading:
//! they would refuse to share a name with N rows. With `create_schema:
//! false`, run the statements above by hand.
//!
//! ## Schema for DBAs (SQLite)
//!
//! With `create_schema: false` in [`SqlOptions`], create the objects by hand
//! (replace `locks` by your table name). Expiry is decided by `boot_id` and
//! `boot_expires_ms` (the host's boot clock, see [`sqlite`]):
//!
//! ```sql
//! CREATE TABLE locks (
//!   lock_name       TEXT    NOT NULL,
//!   owner_id        TEXT    NOT NULL,
//!   lease_id        TEXT    NOT NULL,
//!   fence           INTEGER NOT NULL,
//!   created_at      INTEGER NOT NULL,  -- ms since the Unix epoch, granter's wall clock (informational)
//!   expires_at      INTEGER NOT NULL,  -- likewise
//!   boot_id         TEXT    NOT NULL DEFAULT '',  -- the host's boot id
//!   boot_expires_ms INTEGER NOT NULL DEFAULT 0,   -- expiry on that boot's CLOCK_BOOTTIME
//!   permits         INTEGER NOT NULL DEFAULT 1,   -- the N the holder asked with
//!   PRIMARY KEY (lock_name, lease_id)
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
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod grant_batch;
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
