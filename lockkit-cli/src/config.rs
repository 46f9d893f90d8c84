//! The optional TOML file of defaults.
//!
//! Read from `--config PATH` (or `LOCKKIT_CONFIG`), else from
//! `$XDG_CONFIG_HOME/lockkit/config.toml` (`~/.config/lockkit/config.toml`)
//! if it exists. Flags and environment variables win over the file; the
//! file wins over the built-in defaults. Unknown keys are errors.
//!
//! ```toml
//! backend = "postgres://etl@db.internal/ops"
//! catalog = "postgres://etl@db.internal/ops"
//!
//! [run]
//! ttl = "2m"
//! wait = "30m"
//! owner = "etl-host-7"
//! conflict_exit_code = 99
//! grace = "30s"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockkit::Error;
use serde::Deserialize;

/// The file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The backend URL.
    pub backend: Option<String>,
    /// The pipeline catalog's URL (`lockkit dag`).
    pub catalog: Option<String>,
    /// Defaults of `lockkit run`.
    #[serde(default)]
    pub run: RunDefaults,
}

/// Defaults of `lockkit run` (durations as `30s`, `10m`, `1h30m`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunDefaults {
    pub ttl: Option<String>,
    pub wait: Option<String>,
    pub owner: Option<String>,
    pub conflict_exit_code: Option<u8>,
    pub grace: Option<String>,
}

/// Where the file is looked for when `--config` is not given.
pub fn default_path() -> Option<PathBuf> {
    crate::backend::user_file("XDG_CONFIG_HOME", ".config", "config.toml")
}

/// Loads `explicit` (which must exist), else the default file if there is
/// one, else the empty configuration.
///
/// # Errors
/// A configuration error naming the file for an unreadable file, bad TOML
/// or an unknown key.
pub fn load(explicit: Option<&Path>) -> Result<Config, Error> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => match default_path().filter(|p| p.is_file()) {
            Some(path) => path,
            None => return Ok(Config::default()),
        },
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::configuration(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let message = e.message().to_owned();
        Error::configuration(format!("{}: {message}", path.display()))
    })
}

/// A duration from the file.
///
/// # Errors
/// [`Error::InvalidInput`] naming the key.
pub fn duration(key: &str, text: &str) -> Result<Duration, Error> {
    humantime::parse_duration(text)
        .map_err(|e| Error::invalid_input(format!("config `{key}` = {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_and_unknown_keys_are_refused() {
        let config: Config = toml::from_str(
            "backend = \"redis://h\"\n[run]\nttl = \"2m\"\nconflict_exit_code = 99\n",
        )
        .expect("parse");
        assert_eq!(config.backend.as_deref(), Some("redis://h"));
        assert_eq!(config.run.ttl.as_deref(), Some("2m"));
        assert_eq!(config.run.conflict_exit_code, Some(99));
        assert!(toml::from_str::<Config>("[run]\nttll = \"2m\"\n").is_err());
    }
}
