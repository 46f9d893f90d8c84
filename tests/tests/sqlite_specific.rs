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
