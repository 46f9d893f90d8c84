//! How the fixtures get their servers: `LOCKKIT_TEST_PROVISION`.
//!
//! - `process` (the default, also when the variable is unset or empty):
//!   child processes from the binaries on `PATH` ([`crate::server`]).
//! - `docker`: the shared single servers of the suites — Redis standalone,
//!   Postgres, MariaDB, etcd (one member), ZooKeeper (standalone) — start
//!   as containers through `testcontainers` (module `docker`, cargo
//!   feature `docker`), from the images `docker/build-images.sh` builds.
//!   Clusters and ensembles, and the private servers that tests stop, kill
//!   or restart (the fault suite, `start_private`, `RedisServer::start`,
//!   `ZkServer::start`, `EtcdCluster::start`), stay child processes.
//!
//! `LOCKKIT_TEST_<BACKEND>_URL` still wins over both. Any other value, or
//! `docker` in a build without the `docker` feature, fails the test that
//! asks, saying why: never a silent fall-back to processes.

/// The environment variable that chooses the mode.
pub const PROVISION_VAR: &str = "LOCKKIT_TEST_PROVISION";

/// Where the shared servers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provision {
    /// Child processes from the binaries on `PATH`.
    Process,
    /// Containers started through `testcontainers`.
    Docker,
}

impl Provision {
    /// Reads a value of [`PROVISION_VAR`]: `None`, empty or `process` is
    /// [`Process`](Self::Process), `docker` is [`Docker`](Self::Docker)
    /// (surrounding blanks and case are ignored).
    ///
    /// # Errors
    /// Any other value, with a message naming the accepted ones.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        let value = value.map(str::trim).unwrap_or_default();
        if value.is_empty() || value.eq_ignore_ascii_case("process") {
            Ok(Self::Process)
        } else if value.eq_ignore_ascii_case("docker") {
            Ok(Self::Docker)
        } else {
            Err(format!(
                "{PROVISION_VAR}={value:?} is not a provisioning mode: use `process` (the default: \
                 servers as child processes) or `docker` (servers as containers, cargo feature \
                 `docker` of lockkit-tests)"
            ))
        }
    }
}

/// The mode this test process runs in.
///
/// # Panics
/// When [`PROVISION_VAR`] has an unknown value, or says `docker` in a
/// build without the `docker` feature.
pub fn provision() -> Provision {
    let value = std::env::var(PROVISION_VAR).ok();
    let mode = Provision::parse(value.as_deref()).unwrap_or_else(|e| panic!("{e}"));
    if mode == Provision::Docker && !cfg!(feature = "docker") {
        panic!(
            "{PROVISION_VAR}=docker, but lockkit-tests was built without its `docker` feature: \
             run with `--features docker` (or `--all-features`), or unset {PROVISION_VAR} to \
             start the servers as child processes"
        );
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_modes() {
        assert_eq!(Provision::parse(None), Ok(Provision::Process));
        assert_eq!(Provision::parse(Some("")), Ok(Provision::Process));
        assert_eq!(Provision::parse(Some(" process ")), Ok(Provision::Process));
        assert_eq!(Provision::parse(Some("Docker")), Ok(Provision::Docker));
        let err = Provision::parse(Some("podman")).expect_err("an unknown mode");
        assert!(
            err.contains("\"podman\"") && err.contains("`docker`"),
            "{err}"
        );
    }
}
