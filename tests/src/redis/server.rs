//! A private `redis-server` on a free port, with its own data directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::server::{ServerProcess, free_port, require_binary};

/// How to reach `redis-server` when it is missing.
pub const INSTALL_HINT: &str = "apt-get install -y redis-server";

/// How a private server is configured.
#[derive(Debug, Clone, Default)]
pub struct RedisConfig {
    /// `requirepass`: the password of the `default` user.
    pub password: Option<String>,
    /// An ACL user `(name, password)` with full rights; the `default` user
    /// is switched off when this is set.
    pub acl_user: Option<(String, String)>,
    /// `appendonly yes` + `appendfsync always` (otherwise no persistence
    /// at all: no RDB snapshots, no AOF).
    pub aof_always: bool,
    /// Serve TLS only (`--port 0 --tls-port P`) with a fresh private CA;
    /// see [`RedisServer::ca_file`].
    pub tls: bool,
}

/// A `redis-server` child process on 127.0.0.1, killed on drop (and by the
/// watchdog when the test process exits).
#[derive(Debug)]
pub struct RedisServer {
    process: ServerProcess,
    port: u16,
    config: RedisConfig,
    dir: TempDir,
    binary: PathBuf,
}

impl RedisServer {
    /// Starts a server with `config` and waits until it answers.
    ///
    /// # Panics
    /// When `redis-server` is not installed (the message says how to get
    /// it) or does not come up.
    pub fn start(config: RedisConfig) -> Self {
        Self::start_in(config, data_dir("lockkit-redis-"))
    }

    /// Like [`start`](Self::start), for a server kept in a `static` (never
    /// dropped): its data directory is named after this process, and
    /// directories of such servers whose process is gone are removed.
    pub fn start_shared(config: RedisConfig) -> Self {
        Self::start_in(config, shared_data_dir())
    }

    fn start_in(config: RedisConfig, dir: TempDir) -> Self {
        let binary = require_binary("redis-server", &[], INSTALL_HINT);
        if config.tls {
            super::tls::write_certificates(dir.path());
        }
        let port = free_port();
        let process = spawn(&binary, dir.path(), port, &config, 0);
        let mut server = Self {
            process,
            port,
            config,
            dir,
            binary,
        };
        server.wait_ready();
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the server, with the configured credentials (and the CA
    /// file for TLS).
    pub fn url(&self) -> String {
        let auth = match (&self.config.acl_user, &self.config.password) {
            (Some((user, password)), _) => format!("{user}:{password}@"),
            (None, Some(password)) => format!(":{password}@"),
            (None, None) => String::new(),
        };
        if self.config.tls {
            format!(
                "rediss://{auth}127.0.0.1:{}/?tls_ca_file={}",
                self.port,
                self.ca_file().display()
            )
        } else {
            format!("redis://{auth}127.0.0.1:{}/", self.port)
        }
    }

    /// The URL with other credentials (for negative tests).
    pub fn url_with_auth(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}/", self.port)
    }

    /// The private CA certificate (TLS servers).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server process (to kill, stop or read its log).
    pub fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }

    /// Kills the server with SIGKILL (no shutdown save, no final fsync).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port and data directory (after
    /// [`kill`](Self::kill)) and waits until it has loaded its data.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn(&self.binary, self.dir.path(), self.port, &self.config, 1);
        self.wait_ready();
    }

    /// A plain synchronous connection for inspecting or changing raw state.
    ///
    /// # Panics
    /// When the server cannot be reached (TLS servers are not supported
    /// here).
    pub fn raw(&self) -> redis::Connection {
        assert!(!self.config.tls, "raw() does not speak TLS");
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to the private redis-server")
    }

    fn wait_ready(&mut self) {
        let port = self.port;
        self.process.wait_for_port(port, Duration::from_secs(20));
        if self.config.tls {
            return;
        }
        let url = self.url();
        self.process.wait_until(Duration::from_secs(20), || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }
}

/// A fresh temporary directory with `prefix`.
pub(crate) fn data_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a data directory for redis-server")
}

/// A data directory for a server kept in a `static`: such servers are
/// killed by the watchdog but never dropped, so their directories are
/// named `lockkit-redis-shared-<pid>-…` and swept here once `<pid>` is gone.
pub(crate) fn shared_data_dir() -> TempDir {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("lockkit-redis-shared-") else {
                continue;
            };
            let pid = rest.split('-').next().unwrap_or_default();
            if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    data_dir(&format!("lockkit-redis-shared-{}-", std::process::id()))
}

fn spawn(binary: &Path, dir: &Path, port: u16, config: &RedisConfig, run: u32) -> ServerProcess {
    let mut command = Command::new(binary);
    command.args([
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
    ]);
    command.arg("--dir").arg(dir);
    command.args(["--save", ""]);
    if config.aof_always {
        command.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        command.args(["--appendonly", "no"]);
    }
    if config.tls {
        command.args(["--port", "0", "--tls-port", &port.to_string()]);
        command.arg("--tls-cert-file").arg(dir.join("server.crt"));
        command.arg("--tls-key-file").arg(dir.join("server.key"));
        command.arg("--tls-ca-cert-file").arg(dir.join("ca.crt"));
        command.args(["--tls-auth-clients", "no"]);
    } else {
        command.args(["--port", &port.to_string()]);
    }
    if let Some(password) = &config.password {
        command.args(["--requirepass", password]);
    }
    if let Some((user, password)) = &config.acl_user {
        // One argument per ACL rule: redis-server joins them into one line.
        command.args([
            "--user",
            user,
            "on",
            &format!(">{password}"),
            "~*",
            "&*",
            "+@all",
        ]);
        command.args(["--user", "default", "off"]);
    }
    ServerProcess::spawn(
        "redis-server",
        command,
        &dir.join(format!("redis-{run}.log")),
    )
}

/// The URL of this test binary's standalone server in a container
/// (`LOCKKIT_TEST_PROVISION=docker`), started on first use: the image
/// `lockkit-test/redis:latest` (or `LOCKKIT_TEST_REDIS_IMAGE`) with host
/// networking, `redis-server` on 127.0.0.1 at a free port, no persistence,
/// no password; kept until the test process exits. Returns
/// `redis://127.0.0.1:<port>/` once the server answers `PING`.
///
/// # Panics
/// As [`ServerContainer::start`](crate::docker::ServerContainer::start),
/// or when the server does not answer within 20 s.
#[cfg(feature = "docker")]
pub fn shared_container_url() -> String {
    use crate::docker::{ContainerSpec, Ready, ServerContainer};
    static SHARED: std::sync::OnceLock<(ServerContainer, String)> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let port = free_port().to_string();
            let spec = ContainerSpec::new(
                "redis",
                "LOCKKIT_TEST_REDIS_IMAGE",
                Ready::Stdout("Ready to accept connections"),
            )
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port,
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--dir",
                "/var/lib/lockkit",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
            let container = ServerContainer::start(&spec);
            let url = format!("redis://127.0.0.1:{port}/");
            container.wait_until(Duration::from_secs(20), || {
                redis::Client::open(url.as_str())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            });
            (container, url)
        })
        .1
        .clone()
}
