//! From a URL to a connected backend: URL checks before any I/O (shared
//! with every backend through [`BackendUrl`]), lockkit's own `table`
//! parameter, and one probe connection whose failure keeps its cause.

use std::time::Duration;

#[cfg(feature = "sqlite")]
use lockkit_core::Error;
use lockkit_core::Result;

use crate::backend::SqlOptions;
use crate::table::TableName;

#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) use self::server::{server_pool, server_url};

/// How long connecting to a database server may take before it fails as
/// transient.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// lockkit's own URL parameters, taken out before the driver sees the URL.
pub const LOCKKIT_PARAMS: &[&str] = &["table"];

/// A checked URL: what the driver gets, and the settings lockkit takes.
#[derive(Debug, Clone)]
pub(crate) struct SqlUrl {
    /// The URL for sqlx, lockkit's parameters removed.
    pub(crate) driver: String,
    /// The URL with its password replaced, for messages.
    pub(crate) redacted: String,
    /// `?table=…`, if given.
    pub(crate) table: Option<TableName>,
}

impl SqlUrl {
    /// `options` with the URL's `table` (the URL wins).
    pub(crate) fn apply(&self, mut options: SqlOptions) -> SqlOptions {
        if let Some(table) = &self.table {
            options.table = table.clone();
        }
        options
    }
}

/// Checks a SQLite URL (`sqlite:path`, `sqlite:///abs`, `sqlite::memory:`):
/// takes lockkit's `table` out; sqlx rejects unknown parameters itself.
///
/// # Errors
/// [`Error::Configuration`] for another scheme; [`Error::InvalidInput`]
/// for an invalid table name.
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite_url(url: &str) -> Result<SqlUrl> {
    let redacted = lockkit_core::redact_url(url);
    if lockkit_core::spi::url_scheme(url).as_deref() != Some("sqlite") {
        return Err(Error::configuration(format!(
            "malformed SQLite URL {redacted:?}: expected sqlite:path, sqlite:///absolute/path or sqlite::memory:"
        )));
    }
    Ok(SqlUrl {
        driver: lockkit_core::spi::without_params(url, LOCKKIT_PARAMS),
        redacted,
        table: table_param(&lockkit_core::spi::url_params(url))?,
    })
}

fn table_param(params: &[(String, String)]) -> Result<Option<TableName>> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == "table")
        .map(|(_, v)| TableName::new(v))
        .transpose()
}

/// Server dialects (Postgres, MySQL): URL checks and the probed pool.
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod server {
    use std::str::FromStr;

    use lockkit_core::spi::BackendUrl;
    use lockkit_core::{Error, Result};
    use sqlx::pool::PoolOptions;
    use sqlx::{ConnectOptions, Connection, Database};

    use super::{CONNECT_TIMEOUT, LOCKKIT_PARAMS, SqlUrl, table_param};
    use crate::dialect::Dialect;
    use crate::error::classify;

    /// Checks a server URL (`postgres://…`, `mysql://…`) for dialect `D`:
    /// its shape, its parameters (lockkit's and the driver's, nothing else),
    /// and the table name. The driver URL gets `driver_scheme`.
    ///
    /// # Errors
    /// [`Error::Configuration`] for a malformed URL or an unknown parameter;
    /// [`Error::InvalidInput`] for an invalid table name.
    pub(crate) fn server_url<D: Dialect>(url: &str, driver_scheme: &str) -> Result<SqlUrl> {
        let parsed = BackendUrl::parse(url, D::KIND, D::SCHEMES)?;
        let mut known: Vec<&str> = LOCKKIT_PARAMS.to_vec();
        known.extend_from_slice(D::DRIVER_PARAMS);
        parsed.check_params(&known)?;
        let table = table_param(&parsed.params())?;
        let without = parsed.without_params(LOCKKIT_PARAMS);
        let rest = without
            .split_once("://")
            .map_or(without.as_str(), |(_, rest)| rest);
        Ok(SqlUrl {
            driver: format!("{driver_scheme}://{rest}"),
            redacted: parsed.redacted().to_owned(),
            table,
        })
    }

    /// Opens a pool for a server database after one probe connection, so that
    /// an unreachable server is reported at once as [`Error::Transient`] with
    /// its cause ("connection refused"), and wrong credentials or a missing
    /// database as [`Error::Configuration`] — not as a pool timeout after
    /// [`CONNECT_TIMEOUT`].
    ///
    /// # Errors
    /// As described; [`Error::Configuration`] for a URL the driver rejects.
    pub(crate) async fn server_pool<D: Dialect>(
        url: &SqlUrl,
        max_connections: u32,
    ) -> Result<sqlx::Pool<D::Db>>
    where
        <<D::Db as Database>::Connection as Connection>::Options: FromStr<Err = sqlx::Error>,
    {
        let options =
            <<D::Db as Database>::Connection as Connection>::Options::from_str(&url.driver)
                .map_err(|e| Error::Configuration {
                    message: format!("invalid {} URL {:?}: {e}", D::KIND, url.redacted),
                    source: Some(Box::new(e)),
                })?;
        let doing = format!("connecting to {} at {:?}", D::KIND, url.redacted);
        match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
            Ok(Ok(probe)) => {
                let _ = probe.close().await;
            }
            Ok(Err(e)) => return Err(classify::<D>(e, &doing)),
            Err(_) => {
                return Err(Error::transient(
                    D::KIND,
                    format!("{doing}: no answer within {CONNECT_TIMEOUT:?}"),
                    None,
                ));
            }
        }
        // No ping before each statement (`test_before_acquire`): it cost
        // one more round trip per statement. A connection that died while idle fails its
        // statement instead, which is classified transient and retried by
        // the core like any other transient failure.
        Ok(PoolOptions::<D::Db>::new()
            .max_connections(max_connections)
            .acquire_timeout(CONNECT_TIMEOUT)
            .test_before_acquire(false)
            .connect_lazy_with(options))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_table_parameter_is_taken_out() {
        let url = super::sqlite_url("sqlite:///tmp/x.db?table=ops.locks&mode=rwc").unwrap();
        assert_eq!(url.driver, "sqlite:///tmp/x.db?mode=rwc");
        assert_eq!(url.table.unwrap().to_string(), "ops.locks");
        let url = super::sqlite_url("sqlite::memory:").unwrap();
        assert_eq!(url.driver, "sqlite::memory:");
        assert!(url.table.is_none());
        assert!(super::sqlite_url("sqlite::memory:?table=bad-name").is_err());
    }
}
