//! Fencing where the data lives: the write statement itself refuses a
//! holder whose lease has been granted to someone else since
//! (`lockkit_core::fence` explains the pattern).
//!
//! Run with `cargo run -p lockkit --example fenced_write`. It takes a lock
//! on the embedded SQLite backend, writes a row with the guard's token,
//! lets a second holder take over, and shows the first holder's late write
//! being refused by the `WHERE` clause.

use std::time::Duration;

use lockkit::{FencingToken, LeaseId, LockOptions, Locker};
use sqlx::SqlitePool;

/// Updates report `id` only when `token` (with `lease`) is not older than
/// the last accepted write; returns whether the row was written.
async fn fenced_update(
    pool: &SqlitePool,
    id: i64,
    body: &str,
    token: FencingToken,
    lease: &LeaseId,
) -> sqlx::Result<bool> {
    // Tokens are u64; SQLite and Postgres integers are i64. Real tokens
    // stay far below 2^63.
    let token = i64::try_from(token.get()).unwrap_or(i64::MAX);
    let result = sqlx::query(
        "UPDATE reports SET body = ?1, fence = ?2, fence_lease = ?3 \
         WHERE id = ?4 AND (fence < ?2 OR (fence = ?2 AND fence_lease = ?3))",
    )
    .bind(body)
    .bind(token)
    .bind(lease.as_str())
    .bind(id)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let locks = lockkit::connect(&format!(
        "sqlite://{}",
        dir.path().join("locks.db").display()
    ))
    .await?;
    let data = SqlitePool::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("data.db").display()
    ))
    .await?;
    sqlx::query(
        "CREATE TABLE reports (id INTEGER PRIMARY KEY, body TEXT NOT NULL, \
         fence INTEGER NOT NULL DEFAULT 0, fence_lease TEXT NOT NULL DEFAULT '')",
    )
    .execute(&data)
    .await?;
    sqlx::query("INSERT INTO reports (id, body) VALUES (1, '')")
        .execute(&data)
        .await?;

    let options = LockOptions::new().ttl(Duration::from_secs(30));
    let first = Locker::new(locks.clone(), "pipeline_1")?.with_options(options.clone())?;
    let second = Locker::new(locks, "pipeline_2")?.with_options(options)?;

    let old = first.acquire("daily-report").await?;
    let (old_token, old_lease) = (old.token(), old.handle().lease().lease_id);
    assert!(fenced_update(&data, 1, "draft by pipeline_1", old_token, &old_lease).await?);
    println!("pipeline_1 wrote with token {old_token}");

    // pipeline_1 stalls past its TTL (here: gives the lock up) and
    // pipeline_2 takes it with a larger token.
    old.release().await?;
    let new = second.acquire("daily-report").await?;
    let new_lease = new.handle().lease().lease_id;
    assert!(fenced_update(&data, 1, "final by pipeline_2", new.token(), &new_lease).await?);
    println!("pipeline_2 wrote with token {}", new.token());

    // pipeline_1 wakes up and sends the write it had prepared.
    let accepted =
        fenced_update(&data, 1, "late draft by pipeline_1", old_token, &old_lease).await?;
    println!("pipeline_1's late write with token {old_token}: accepted = {accepted}");
    assert!(!accepted, "the fence must refuse the older token");
    new.release().await?;
    Ok(())
}
