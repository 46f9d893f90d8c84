//! SQLite-specific behaviour: the stored row, the fence high-water mark,
//! custom table names, concurrent schema creation, validation before I/O.

use std::time::Duration;

use lockkit_core::conformance::unique_name;
use lockkit_core::spi::AcquireRequest;
use lockkit_core::{Error, LockBackend};
use lockkit_sql::{SqlOptions, TableName};
use lockkit_tests::sqlite::SqliteHarness;
use sqlx::Row;

/// The kernel's boot id and boot clock (ms), read the way `/proc` shows
/// them (`/proc/uptime` counts from boot, suspended time included, like
/// `CLOCK_BOOTTIME`).
fn host_boot() -> (String, i64) {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    let uptime = std::fs::read_to_string("/proc/uptime").expect("uptime");
    let secs: f64 = uptime
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("uptime seconds");
    (id.trim().to_owned(), (secs * 1000.0) as i64)
}

#[tokio::test]
async fn the_row_holds_what_the_lease_says_by_the_host_boot_clock() {
    let harness = SqliteHarness::start().await;
    let backend = lockkit_sql::sqlite::connect(harness.url())
        .await
        .expect("connect");
    let name = unique_name("row");
    let req =
        AcquireRequest::new(name.clone(), "pipeline_1", Duration::from_secs(600)).expect("request");
    let lease = backend.try_acquire(&req).await.expect("try").expect("free");
    let row = sqlx::query(
        "SELECT owner_id, lease_id, fence, created_at, expires_at, boot_id, boot_expires_ms \
         FROM locks WHERE lock_name = ?1",
    )
    .bind(name.as_str())
    .fetch_one(harness.inspector())
    .await
    .expect("the row exists");
    assert_eq!(row.get::<String, _>(0), "pipeline_1");
    assert_eq!(row.get::<String, _>(1), lease.lease_id.as_str());
    assert_eq!(
        row.get::<i64, _>(2),
        i64::try_from(lease.token.get()).expect("fits")
    );
    let created: i64 = row.get(3);
    let expires: i64 = row.get(4);
    assert_eq!(
        expires - created,
        600_000,
        "the informational wall-clock columns span the TTL"
    );
    let (boot_id, boot_now) = host_boot();
    assert_eq!(row.get::<String, _>(5), boot_id, "the row names this boot");
    let boot_expires: i64 = row.get(6);
    assert!(
        (boot_expires - boot_now - 600_000).abs() < 5_000,
        "expiry is on the boot clock: {boot_expires} vs uptime {boot_now} + 600 s"
    );
    let info = backend
        .current(&name)
        .await
        .expect("current")
        .expect("held");
    let shown = info
        .expires_at
        .expect("expiry")
        .duration_since(std::time::SystemTime::now())
        .expect("in the future");
    assert!(
        shown > Duration::from_secs(590) && shown <= Duration::from_secs(600),
        "current() shows the boot-clock expiry in wall time: {shown:?}"
    );

    assert!(backend.release(&lease).await.expect("release"));
    let left: i64 = sqlx::query("SELECT COUNT(*) FROM locks WHERE lock_name = ?1")
        .bind(name.as_str())
        .fetch_one(harness.inspector())
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "release deletes the row");
    let high_water: i64 = sqlx::query("SELECT fence FROM locks_fence WHERE lock_name = ?1")
        .bind(name.as_str())
        .fetch_one(harness.inspector())
        .await
        .expect("the fence high-water mark is kept")
        .get(0);
    assert_eq!(high_water, i64::try_from(lease.token.get()).expect("fits"));
}

#[tokio::test]
async fn an_expired_row_is_taken_over_by_the_boot_clock_only() {
    let harness = SqliteHarness::start().await;
    let backend = lockkit_sql::sqlite::connect(harness.url())
        .await
        .expect("connect");
    let name = unique_name("boot-clock");
    let a = AcquireRequest::new(name.clone(), "a", Duration::from_secs(600)).expect("request");
    let held = backend.try_acquire(&a).await.expect("try").expect("free");
    let b = AcquireRequest::new(name.clone(), "b", Duration::from_secs(600)).expect("request");
    assert!(backend.try_acquire(&b).await.expect("try").is_none());
    // The wall-clock columns say nothing: a row "expired" by them stays held.
    sqlx::query("UPDATE locks SET expires_at = expires_at - 86400000 WHERE lock_name = ?1")
        .bind(name.as_str())
        .execute(harness.inspector())
        .await
        .expect("age the wall-clock column");
    assert!(
        backend.try_acquire(&b).await.expect("try").is_none(),
        "the wall clock does not decide"
    );
    // Age the row on the boot clock: the next acquire takes it over.
    sqlx::query("UPDATE locks SET boot_expires_ms = boot_expires_ms - 600001 WHERE lock_name = ?1")
        .bind(name.as_str())
        .execute(harness.inspector())
        .await
        .expect("age the row");
    let taken = backend
        .try_acquire(&b)
        .await
        .expect("try")
        .expect("expired by the boot clock");
    assert_eq!(taken.token.get(), held.token.get() + 1);
    assert!(
        backend
            .current(&name)
            .await
            .expect("current")
            .is_some_and(|i| i.owner == "b")
    );
    // A row written during another boot is expired, whatever it says.
    sqlx::query("UPDATE locks SET boot_id = 'another-boot', boot_expires_ms = 9000000000000 WHERE lock_name = ?1")
        .bind(name.as_str())
        .execute(harness.inspector())
        .await
        .expect("move the row to another boot");
    assert!(backend.current(&name).await.expect("current").is_none());
    let c = AcquireRequest::new(name.clone(), "c", Duration::from_secs(600)).expect("request");
    let third = backend
        .try_acquire(&c)
        .await
        .expect("try")
        .expect("a row from another boot is expired");
    assert_eq!(third.token.get(), taken.token.get() + 1);
}

/// A table made by lockkit 0.1 (expiry by the wall clock, no boot columns)
/// is upgraded in place; its rows count as expired.
#[tokio::test]
async fn an_old_table_is_upgraded_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/old.db?mode=rwc", dir.path().display());
    let raw = sqlx::SqlitePool::connect(&url).await.expect("raw pool");
    for ddl in [
        "CREATE TABLE locks (lock_name TEXT NOT NULL PRIMARY KEY, owner_id TEXT NOT NULL, \
         lease_id TEXT NOT NULL, fence INTEGER NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL)",
        "INSERT INTO locks VALUES ('node_b', 'old', 'a1b2', 7, 0, 99999999999999)",
    ] {
        sqlx::query(ddl).execute(&raw).await.expect("old schema");
    }
    raw.close().await;
    let backend = lockkit_sql::sqlite::connect(&url).await.expect("upgrade");
    let name = lockkit_core::LockName::new("node_b").expect("name");
    assert!(backend.current(&name).await.expect("current").is_none());
    let req = AcquireRequest::new(name.clone(), "new", Duration::from_secs(60)).expect("request");
    let lease = backend
        .try_acquire(&req)
        .await
        .expect("try")
        .expect("taken over");
    assert_eq!(lease.token.get(), 8, "tokens continue from the old row");
    // Connecting again finds the table already upgraded.
    lockkit_sql::sqlite::connect(&url)
        .await
        .expect("second connect");
}

#[tokio::test]
async fn custom_tables_are_independent_and_created_by_the_library() {
    let harness = SqliteHarness::start().await;
    let url = format!("{}?table=pipeline_locks", harness.url());
    let custom = lockkit::connect(&url)
        .await
        .expect("connect with a custom table");
    let default = lockkit::connect(harness.url())
        .await
        .expect("connect with the default table");
    let name = unique_name("tables");
    let req = AcquireRequest::new(name.clone(), "a", Duration::from_secs(60)).expect("request");
    let lease = custom.try_acquire(&req).await.expect("try").expect("free");
    assert!(
        default.current(&name).await.expect("current").is_none(),
        "another table, another lock"
    );
    let rows: i64 = sqlx::query("SELECT COUNT(*) FROM pipeline_locks")
        .fetch_one(harness.inspector())
        .await
        .expect("the custom table exists")
        .get(0);
    assert_eq!(rows, 1);
    assert!(custom.release(&lease).await.expect("release"));
}

#[tokio::test]
async fn many_clients_creating_the_schema_at_once_all_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/fresh.db", dir.path().display());
    let connects: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { lockkit_sql::sqlite::connect(&url).await })
        })
        .collect();
    for connect in connects {
        connect
            .await
            .expect("task")
            .expect("schema creation is idempotent and concurrent-safe");
    }
}

#[tokio::test]
async fn bad_table_names_fail_before_any_file_is_touched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("never.db");
    for table in ["bad-name", "x;DROP", "1abc", "a.b.c", ""] {
        let url = format!("sqlite://{}?table={table}", path.display());
        let err = lockkit::connect(&url)
            .await
            .expect_err("invalid table name");
        assert!(
            matches!(err, Error::InvalidInput { .. }),
            "{table:?}: {err}"
        );
        assert!(TableName::new(table).is_err());
    }
    assert!(!path.exists(), "validation must happen before I/O");
    let options = SqlOptions {
        table: TableName::new("ops_locks").expect("valid"),
        ..SqlOptions::default()
    };
    lockkit_sql::sqlite::connect_with(&format!("sqlite://{}", path.display()), options)
        .await
        .expect("a valid custom table works");
}

#[tokio::test]
async fn unreadable_database_is_a_configuration_error() {
    let err = lockkit_sql::sqlite::connect("sqlite:///nonexistent-dir/for/sure/locks.db")
        .await
        .expect_err("cannot create a file in a missing directory");
    assert!(matches!(err, Error::Configuration { .. }), "{err}");
}

/// A release reaches another backend instance on the same file (its own
/// pool and its own watch, as another process has) through the wake file
/// next to the database: its release subscription fires, where before it
/// had only its poll to learn of it. In-memory databases have no wake file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_reaches_another_instance_through_the_wake_file() {
    let harness = SqliteHarness::start().await;
    let holder = lockkit_sql::sqlite::connect(harness.url())
        .await
        .expect("holder");
    let waiter = lockkit_sql::sqlite::connect(harness.url())
        .await
        .expect("waiter");
    assert!(waiter.capabilities().push_wakeup);
    let name = unique_name("wake-file");
    let req = AcquireRequest::new(name.clone(), "holder", Duration::from_secs(60)).expect("req");
    let lease = holder.try_acquire(&req).await.expect("try").expect("free");
    let mut woken = waiter
        .subscribe_releases(&name)
        .await
        .expect("subscribe")
        .expect("file databases have push wake-ups");
    assert!(holder.release(&lease).await.expect("release"));
    tokio::time::timeout(Duration::from_secs(30), woken.changed())
        .await
        .expect("the wake file's change reached the other instance");
    assert!(
        harness.dir().read_dir().expect("dir").any(|e| e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .ends_with("-lockkit-wake")),
        "the wake file sits next to the database"
    );

    let memory = lockkit_sql::sqlite::connect("sqlite::memory:")
        .await
        .expect("in-memory");
    assert!(!memory.capabilities().push_wakeup);
    assert!(
        memory
            .subscribe_releases(&name)
            .await
            .expect("subscribe")
            .is_none()
    );
}

/// The stored rows of a semaphore: one row per held permit, each with the
/// permit count and a token of its own; none after the releases (only the
/// fence high-water mark stays). A table from before semaphores (one row
/// per name, primary key `lock_name`, boot columns in place) is rebuilt
/// with one row per permit; its live row survives as a lock of one permit,
/// and tokens continue from it.
#[tokio::test]
async fn semaphore_rows_and_the_single_row_table_upgrade() {
    const N: u32 = 3;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/single.db?mode=rwc", dir.path().display());
    let raw = sqlx::SqlitePool::connect(&url).await.expect("raw pool");
    let (boot, now_ms) = host_boot();
    let single_row_layout = [
        "CREATE TABLE locks (lock_name TEXT NOT NULL PRIMARY KEY, owner_id TEXT NOT NULL, \
         lease_id TEXT NOT NULL, fence INTEGER NOT NULL, created_at INTEGER NOT NULL, \
         expires_at INTEGER NOT NULL, boot_id TEXT NOT NULL DEFAULT '', \
         boot_expires_ms INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX locks_boot_expires ON locks (boot_expires_ms)",
        "CREATE TABLE locks_fence (lock_name TEXT NOT NULL PRIMARY KEY, fence INTEGER NOT NULL)",
        "CREATE TRIGGER locks_keep_fence AFTER DELETE ON locks BEGIN \
         INSERT INTO locks_fence (lock_name, fence) VALUES (OLD.lock_name, OLD.fence) \
         ON CONFLICT (lock_name) DO UPDATE SET fence = MAX(fence, excluded.fence); END",
    ];
    for ddl in single_row_layout {
        sqlx::query(ddl).execute(&raw).await.expect("old schema");
    }
    // A live lock held under the old layout, for an hour by the boot clock.
    sqlx::query("INSERT INTO locks VALUES ('kept', 'old', 'c0ffee', 41, 0, 0, ?1, ?2)")
        .bind(&boot)
        .bind(now_ms + 3_600_000)
        .execute(&raw)
        .await
        .expect("old row");

    let backend = lockkit_sql::sqlite::connect(&url).await.expect("upgrade");
    let pk: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('locks') WHERE pk > 0 ORDER BY pk")
            .fetch_all(&raw)
            .await
            .expect("primary key");
    assert_eq!(pk, ["lock_name", "lease_id"], "one row per permit");
    let kept = lockkit_core::LockName::new("kept").expect("name");
    let holder = backend
        .current(&kept)
        .await
        .expect("current")
        .expect("the old live row survives the upgrade");
    assert_eq!(
        (holder.lease_id.as_str(), holder.token.get(), holder.permits),
        ("c0ffee", 41, 1)
    );
    let refused = AcquireRequest::new(kept.clone(), "new", Duration::from_secs(60)).expect("req");
    assert!(
        backend.try_acquire(&refused).await.expect("try").is_none(),
        "still held"
    );
    // The trigger came back with the rebuilt table: the high-water mark
    // keeps the old token after a force-release.
    assert!(backend.force_release(&kept).await.expect("force"));
    let after = backend
        .try_acquire(&refused)
        .await
        .expect("try")
        .expect("free");
    assert_eq!(after.token.get(), 42, "tokens continue from the old row");
    assert!(backend.release(&after).await.expect("release"));

    // N permits: N rows, distinct tokens, the permit count stored.
    let name = unique_name("semaphore-rows");
    let mut leases = Vec::new();
    for i in 0..N {
        let req = AcquireRequest::new(name.clone(), format!("holder-{i}"), Duration::from_secs(60))
            .and_then(|r| r.with_permits(N))
            .expect("request");
        leases.push(
            backend
                .try_acquire(&req)
                .await
                .expect("try")
                .expect("a permit is free"),
        );
    }
    let extra = AcquireRequest::new(name.clone(), "extra", Duration::from_secs(60))
        .and_then(|r| r.with_permits(N))
        .expect("request");
    assert!(
        backend.try_acquire(&extra).await.expect("try").is_none(),
        "N are held"
    );
    let lock = AcquireRequest::new(name.clone(), "lock", Duration::from_secs(60)).expect("req");
    assert!(
        matches!(
            backend.try_acquire(&lock).await,
            Err(Error::PermitsMismatch {
                held: 3,
                asked: 1,
                ..
            })
        ),
        "a lock request on a held semaphore is a mismatch"
    );
    let rows = sqlx::query(
        "SELECT lease_id, fence, permits FROM locks WHERE lock_name = ?1 ORDER BY fence",
    )
    .bind(name.as_str())
    .fetch_all(&raw)
    .await
    .expect("rows");
    assert_eq!(rows.len(), N as usize, "one row per held permit");
    let mut fences: Vec<i64> = rows.iter().map(|r| r.get::<i64, _>(1)).collect();
    let stored: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
    assert!(rows.iter().all(|r| r.get::<i64, _>(2) == i64::from(N)));
    let granted: Vec<i64> = leases.iter().map(|l| l.token.get() as i64).collect();
    assert_eq!(
        fences, granted,
        "the rows carry the granted tokens, in grant order"
    );
    fences.dedup();
    assert_eq!(fences.len(), N as usize, "tokens are distinct");
    let mut ids: Vec<String> = leases.iter().map(|l| l.lease_id.to_string()).collect();
    let mut stored_sorted = stored.clone();
    ids.sort();
    stored_sorted.sort();
    assert_eq!(stored_sorted, ids);
    for lease in &leases {
        assert!(backend.release(lease).await.expect("release"));
    }
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM locks WHERE lock_name = ?1")
        .bind(name.as_str())
        .fetch_one(&raw)
        .await
        .expect("count");
    assert_eq!(left, 0, "no rows after the releases");
    let high_water: i64 = sqlx::query_scalar("SELECT fence FROM locks_fence WHERE lock_name = ?1")
        .bind(name.as_str())
        .fetch_one(&raw)
        .await
        .expect("high-water mark");
    assert_eq!(high_water, *granted.last().expect("granted"));
    // A new count works once the old holders are gone.
    let again = backend
        .try_acquire(&lock)
        .await
        .expect("try")
        .expect("free");
    assert!(again.token.get() as i64 > high_water);
    assert!(backend.release(&again).await.expect("release"));
    // Connecting again finds the table already upgraded.
    lockkit_sql::sqlite::connect(&url)
        .await
        .expect("second connect");
}
