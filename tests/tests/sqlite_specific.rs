//! SQLite-specific behaviour: the stored row, the fence high-water mark,
//! custom table names, concurrent schema creation, validation before I/O.

use std::time::Duration;

use lockkit_core::conformance::unique_name;
use lockkit_core::{AcquireRequest, Error, LockBackend};
use lockkit_sql::{SqlOptions, TableName};
use lockkit_tests::sqlite::SqliteHarness;
use sqlx::Row;

#[tokio::test]
async fn the_row_holds_what_the_lease_says_by_the_database_clock() {
    let harness = SqliteHarness::start().await;
    let backend = lockkit_sql::sqlite::connect(harness.url())
        .await
        .expect("connect");
    let name = unique_name("row");
    let req =
        AcquireRequest::new(name.clone(), "pipeline_1", Duration::from_secs(600)).expect("request");
    let lease = backend.try_acquire(&req).await.expect("try").expect("free");
    let row = sqlx::query(
        "SELECT owner_id, lease_id, fence, created_at, expires_at FROM locks WHERE lock_name = ?1",
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
        "expires_at = created_at + TTL, both by the database clock"
    );
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_millis(),
    )
    .expect("fits");
    assert!(
        (now_ms - created).abs() < 5_000,
        "created_at is the database's current time"
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
async fn an_expired_row_is_taken_over_by_the_database_clock_only() {
    let harness = SqliteHarness::start().await;
    let backend = lockkit_sql::sqlite::connect(harness.url())
        .await
        .expect("connect");
    let name = unique_name("db-clock");
    let a = AcquireRequest::new(name.clone(), "a", Duration::from_secs(600)).expect("request");
    let held = backend.try_acquire(&a).await.expect("try").expect("free");
    let b = AcquireRequest::new(name.clone(), "b", Duration::from_secs(600)).expect("request");
    assert!(backend.try_acquire(&b).await.expect("try").is_none());
    // Age the row in the database itself: the next acquire takes it over.
    sqlx::query("UPDATE locks SET expires_at = expires_at - 600001 WHERE lock_name = ?1")
        .bind(name.as_str())
        .execute(harness.inspector())
        .await
        .expect("age the row");
    let taken = backend
        .try_acquire(&b)
        .await
        .expect("try")
        .expect("expired by the database clock");
    assert_eq!(taken.token.get(), held.token.get() + 1);
    assert!(
        backend
            .current(&name)
            .await
            .expect("current")
            .is_some_and(|i| i.owner == "b")
    );
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
        assert!(matches!(err, Error::InvalidInput(_)), "{table:?}: {err}");
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
