//! # lockkit-sql
//!
//! Leases as rows of a SQL table — the seed's `locks` table, done right
//! (DESIGN §3). SQLite is the embedded default (feature `sqlite`); Postgres
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
//! | `created_at`, `expires_at` | by the **database's** clock |
//!
//! A companion table `<table>_fence (lock_name, fence)` keeps each name's
//! highest token when its row is deleted (by release, force-release or
//! clean-up), filled by an `AFTER DELETE` trigger, so tokens never restart.
//! One small row stays per name ever released, like Redis's fence keys.
//!
//! ## The statements
//!
//! - **acquire** is one statement: insert the row, or — if a row exists and
//!   the database clock says it has expired — take it over with `fence + 1`.
//!   It returns the new fence, or no row when the lock is held. (The seed's
//!   check query compared `expires_at < CURRENT_TIMESTAMP`, which selects
//!   *expired* holders, and its release lacked `DELETE FROM`; neither is
//!   copied.)
//! - **extend** moves `expires_at` only for the row with this `lease_id`
//!   that is still unexpired; otherwise the lease is lost.
//! - **release** deletes the row with this `lease_id` and says whether it
//!   was still unexpired.
//! - **cleanup** deletes expired rows (the seed's periodic clean-up).
//!
//! Names and owners are always bound parameters; the table name is a
//! validated identifier ([`TableName`]) quoted into the statement text.
//!
//! ## Schema for DBAs (SQLite)
//!
//! With `create_schema: false` in [`SqlOptions`], create the objects by hand
//! (replace `locks` by your table name):
//!
//! ```sql
//! CREATE TABLE locks (
//!   lock_name  TEXT    NOT NULL PRIMARY KEY,
//!   owner_id   TEXT    NOT NULL,
//!   lease_id   TEXT    NOT NULL,
//!   fence      INTEGER NOT NULL,
//!   created_at INTEGER NOT NULL,  -- ms since the Unix epoch, database clock
//!   expires_at INTEGER NOT NULL
//! );
//! CREATE INDEX locks_expires_at ON locks (expires_at);
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
//! texts, bind order, schema and transient error codes. Postgres and MySQL
//! are added as dialects, not as copies of the backend.

pub mod backend;
pub mod dialect;
mod error;
pub mod table;

#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use crate::backend::{SqlBackend, SqlOptions};
pub use crate::dialect::Dialect;
pub use crate::table::TableName;
