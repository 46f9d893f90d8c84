//! The relational catalog: tasks, pipelines, pipeline nodes, dependencies,
//! runs and task runs, in an SQLite file (the default) or a Postgres
//! database, reached by the same URLs as the locks (`sqlite:///path.db`,
//! `postgres://…`). The tables are in [`schema`]; the queries the CLI runs
//! are public constants ([`SHARED_TASKS`], [`LOCK_DURATION_CONFLICTS`],
//! [`SHARED_OUTPUTS`]), so they can be read and reused.
//!
//! One spec set lives in the catalog at a time: [`Catalog::load`] compares
//! the new spec with the stored one and, if they differ, replaces the
//! stored one in one transaction (runs are history and are kept).

mod queries;
mod runs;
pub mod schema;
mod spec_tables;

use crate::error::{DagError, Result};

pub use self::queries::{
    LOCK_DURATION_CONFLICTS, LintProblem, SHARED_OUTPUTS, SHARED_TASKS, SharedTask,
};
pub use self::spec_tables::LoadReport;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("lockkit-dag needs a catalog database: enable feature `sqlite` or `postgres`");

/// A connected catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    db: Db,
    redacted: String,
}

#[derive(Debug, Clone)]
enum Db {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

/// Runs `$body` (an async block returning `Result<_, sqlx::Error>`, in
/// which `$pool` is the database's pool) on whichever database the catalog
/// is, and classifies a failure as the lock library does.
macro_rules! on_db {
    ($catalog:expr, $doing:expr, |$pool:ident| $body:expr) => {{
        let catalog: &$crate::catalog::Catalog = $catalog;
        let result = match &catalog.db {
            #[cfg(feature = "sqlite")]
            $crate::catalog::Db::Sqlite($pool) => $body.await,
            #[cfg(feature = "postgres")]
            $crate::catalog::Db::Postgres($pool) => $body.await,
        };
        result.map_err(|e| catalog.classify(e, $doing))
    }};
}
pub(crate) use on_db;

impl Catalog {
    /// Opens the catalog at `url` and creates or upgrades its tables.
    ///
    /// `url` is an SQLite URL (`sqlite:///abs/path.db`, `sqlite:rel.db`;
    /// the file is created) or a Postgres URL; lockkit's lock-table
    /// parameter `table` is refused (it does not apply to the catalog).
    ///
    /// # Errors
    /// [`DagError::Catalog`] with [`lockkit_core::Error::Configuration`]
    /// for a bad URL (checked before any I/O), or an unknown scheme;
    /// `Transient` when the database cannot be reached. Passwords are
    /// never in the message.
    ///
    /// # Cancel safety
    /// Dropping it closes what was opened; a migration interrupted before
    /// it committed is run again by the next `open`.
    pub async fn open(url: &str) -> Result<Self> {
        let redacted = lockkit_core::redact_url(url);
        let scheme = lockkit_core::spi::url_scheme(url).unwrap_or_default();
        let db = match scheme.as_str() {
            #[cfg(feature = "sqlite")]
            "sqlite" => Db::Sqlite(lockkit_sql::sqlite::open_pool(url).await?),
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => {
                Db::Postgres(lockkit_sql::postgres::open_pool(url, 4).await?)
            }
            _ => {
                return Err(DagError::Catalog(lockkit_core::Error::configuration(
                    format!(
                        "the catalog needs an SQLite or Postgres URL (sqlite:///path.db, postgres://…), not {redacted:?}"
                    ),
                )));
            }
        };
        let catalog = Self { db, redacted };
        catalog.migrate().await?;
        Ok(catalog)
    }

    /// The catalog's URL, password redacted.
    pub fn url(&self) -> &str {
        &self.redacted
    }

    async fn migrate(&self) -> Result<()> {
        let result = match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(pool) => schema::sqlite().run(pool).await,
            #[cfg(feature = "postgres")]
            Db::Postgres(pool) => schema::postgres().run(pool).await,
        };
        result.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => {
                self.classify(inner, "creating the tables")
            }
            other => DagError::Catalog(lockkit_core::Error::configuration(format!(
                "the catalog {:?} cannot be migrated: {other}",
                self.redacted
            ))),
        })
    }

    fn classify(&self, err: sqlx::Error, doing: &str) -> DagError {
        let doing = format!("{doing} in the catalog {:?}", self.redacted);
        DagError::Catalog(match &self.db {
            #[cfg(feature = "sqlite")]
            Db::Sqlite(_) => lockkit_sql::sqlite::classify_error(err, &doing),
            #[cfg(feature = "postgres")]
            Db::Postgres(_) => lockkit_sql::postgres::classify_error(err, &doing),
        })
    }
}
