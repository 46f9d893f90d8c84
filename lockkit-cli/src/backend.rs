//! Which backend the command talks to: `--backend URL`, else
//! `LOCKKIT_BACKEND`, else an embedded SQLite file per user.

use std::path::PathBuf;
use std::sync::Arc;

use lockkit::{Error, LockBackend};

/// `$<xdg_var>/lockkit/<file>`, else `$HOME/<home_fallback>/lockkit/<file>`
/// (the XDG base directory rule).
pub fn user_file(xdg_var: &str, home_fallback: &str, file: &str) -> Option<PathBuf> {
    let base = std::env::var_os(xdg_var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(home_fallback))
        })?;
    Some(base.join("lockkit").join(file))
}

/// The default database when no backend is given:
/// `$XDG_DATA_HOME/lockkit/locks.db`, else `$HOME/.local/share/lockkit/locks.db`.
pub fn default_sqlite_path() -> Option<PathBuf> {
    user_file("XDG_DATA_HOME", ".local/share", "locks.db")
}

/// The URL to connect to (`url` from the flag or the environment, or the
/// default SQLite file, whose directory is created).
///
/// # Errors
/// A configuration error when there is no URL and no home directory, or
/// the directory cannot be created.
pub fn resolve(url: Option<String>) -> Result<String, Error> {
    if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
        return Ok(url);
    }
    let path = default_sqlite_path().ok_or_else(|| {
        Error::configuration(
            "no backend given and no home directory for the default SQLite file: pass --backend URL or set LOCKKIT_BACKEND",
        )
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::configuration(format!("cannot create {}: {e}", dir.display())))?;
    }
    Ok(format!("sqlite://{}", path.display()))
}

/// Connects to the backend `url` names.
///
/// # Errors
/// As [`lockkit::connect`]: configuration errors before any I/O, then
/// backend errors.
pub async fn connect(url: Option<String>) -> Result<Arc<dyn LockBackend>, Error> {
    lockkit::connect(&resolve(url)?).await
}
