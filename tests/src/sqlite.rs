//! Harness for SQLite: a database file in a temporary directory.

use std::sync::Arc;

use async_trait::async_trait;
use lockkit_core::conformance::Harness;
use lockkit_core::{LockBackend, LockName};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Row, SqlitePool};
use tempfile::TempDir;

/// A SQLite database file in its own temporary directory. Each
/// [`client`](Harness::client) is a separate connection pool on the file.
#[derive(Debug)]
pub struct SqliteHarness {
    dir: TempDir,
    url: String,
    inspector: SqlitePool,
}

impl SqliteHarness {
    /// Creates the directory and the schema.
    ///
    /// # Panics
    /// When the temporary directory or the database cannot be created.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite://{}/locks.db", dir.path().display());
        // Connecting once creates the file and the schema.
        lockkit_sql::sqlite::connect(&url)
            .await
            .expect("create the SQLite lock table");
        let inspector = SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .expect("open the SQLite file for inspection");
        Self {
            dir,
            url,
            inspector,
        }
    }

    /// The database URL (`sqlite:///…/locks.db`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The temporary directory holding the database.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A raw connection pool for inspecting the tables.
    pub fn inspector(&self) -> &SqlitePool {
        &self.inspector
    }
}

#[async_trait]
impl Harness for SqliteHarness {
    async fn client(&self) -> Arc<dyn LockBackend> {
        Arc::new(
            lockkit_sql::sqlite::connect(&self.url)
                .await
                .expect("connect a SQLite client"),
        )
    }

    /// One line per stored row of `name`: a row per held (or expired,
    /// not yet deleted) permit.
    async fn leftovers(&self, name: &LockName) -> Vec<String> {
        sqlx::query(
            "SELECT owner_id, lease_id, fence, boot_id, boot_expires_ms, permits FROM locks \
             WHERE lock_name = ?1 ORDER BY fence",
        )
        .bind(name.as_str())
        .fetch_all(&self.inspector)
        .await
        .expect("inspect the locks table")
        .iter()
        .map(|row| {
            format!(
                "row owner={:?} lease={:?} fence={} boot={} expires={} permits={}",
                row.get::<String, _>(0),
                row.get::<String, _>(1),
                row.get::<i64, _>(2),
                row.get::<String, _>(3),
                row.get::<i64, _>(4),
                row.get::<i64, _>(5)
            )
        })
        .collect()
    }

    /// The highest token handed out for `name`: the live row's fence or the
    /// high-water mark kept when rows are deleted.
    async fn stored_fence(&self, name: &LockName) -> Option<u64> {
        let fence: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(fence) FROM (SELECT fence FROM locks WHERE lock_name = ?1 \
             UNION ALL SELECT fence FROM locks_fence WHERE lock_name = ?1)",
        )
        .bind(name.as_str())
        .fetch_one(&self.inspector)
        .await
        .expect("inspect the fence");
        fence.and_then(|f| u64::try_from(f).ok())
    }
}
