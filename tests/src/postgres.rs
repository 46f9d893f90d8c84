//! A private Postgres server for the suites: `initdb` into a temporary
//! directory, `postgres` on a free port with password (SCRAM) auth and TLS
//! (a self-signed certificate) on TCP, started once per test binary. `LOCKKIT_TEST_POSTGRES_URL` points the
//! suites at an existing server instead.
//!
//! With `LOCKKIT_TEST_PROVISION=docker` the shared server is a container
//! of `lockkit-test/postgres:latest` (or `LOCKKIT_TEST_POSTGRES_IMAGE`) on
//! a free loopback port, with the same superuser, password, SCRAM and TLS
//! (its cluster and certificate are made when the image is built) and the
//! same non-durable settings. [`PostgresServer::start_private`] always
//! starts a child process.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use crate::provision::{Provision, provision};
use crate::server::{
    ServerProcess, env_url, free_port, require_binary, run_to_completion, test_certificates,
};

/// The superuser password of the private server.
pub const PASSWORD: &str = "lockkit-test-pw";

/// A running Postgres server (private, or the one named by the environment).
#[derive(Debug)]
pub struct PostgresServer {
    url: String,
    port: Option<u16>,
    process: Option<ServerProcess>,
    /// How the private server was started (program, arguments, readiness
    /// probe), to start it again.
    respawn: Option<Respawn>,
    _dir: Option<TempDir>,
    /// The container of the shared server in docker mode.
    #[cfg(feature = "docker")]
    _container: Option<crate::docker::ServerContainer>,
}

#[derive(Debug)]
struct Respawn {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    log: PathBuf,
    pg_isready: PathBuf,
}

impl PostgresServer {
    /// `postgres://postgres:<password>@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port of the private server (`None` with an external URL).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// A private server for one test alone, which the test may stop, kill
    /// and restart (the fault suite); always started from the binaries on
    /// `PATH`, whatever `LOCKKIT_TEST_POSTGRES_URL` says. Unlike the shared
    /// server it is durable (`fsync`, `synchronous_commit` and
    /// `full_page_writes` on): with `synchronous_commit=off` a killed
    /// server forgets commits it has acknowledged — grants, and the token
    /// counter with them (the fault suite saw a token handed out twice).
    ///
    /// # Panics
    /// As [`server`].
    pub fn start_private() -> Self {
        start_with(true)
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`) to the postmaster and every
    /// backend process it forked: stopping the postmaster alone would
    /// leave open connections served.
    ///
    /// # Panics
    /// For a server this fixture did not start.
    pub fn signal(&self, signal: &str) {
        let process = self.process.as_ref().expect("a private server");
        let pid = process.pid().to_string();
        let _ = Command::new("pkill")
            .args([format!("-{signal}"), "-P".into(), pid])
            .status();
        process.signal(signal);
    }

    /// Kills the server and its backends (SIGKILL) and starts it again on
    /// the same data directory and port; returns once it accepts
    /// connections (after crash recovery).
    ///
    /// # Panics
    /// For a server this fixture did not start, or when it does not come
    /// back within 60 s.
    pub fn kill_and_restart(&mut self) {
        self.signal("KILL");
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        let respawn = self.respawn.as_ref().expect("a private server");
        let port = self.port.expect("a private server");
        let mut command = Command::new(&respawn.program);
        command.args(&respawn.args);
        let mut process = ServerProcess::spawn("postgres", command, &respawn.log);
        wait_ready(&mut process, &respawn.pg_isready, port);
        self.process = Some(process);
    }
}

fn wait_ready(process: &mut ServerProcess, pg_isready: &PathBuf, port: u16) {
    process.wait_until(Duration::from_secs(60), || {
        Command::new(pg_isready)
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    });
}

/// The server shared by every test of this binary, started on first use:
/// `LOCKKIT_TEST_POSTGRES_URL`, else a child process, or a container with
/// `LOCKKIT_TEST_PROVISION=docker` ([`provision`]).
///
/// # Panics
/// When the Postgres binaries are missing (with the package to install),
/// the docker-mode image or daemon is missing (with what to do), or the
/// server does not start.
pub fn server() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(|| match env_url("LOCKKIT_TEST_POSTGRES_URL") {
        Some(url) => PostgresServer {
            url,
            port: None,
            process: None,
            respawn: None,
            _dir: None,
            #[cfg(feature = "docker")]
            _container: None,
        },
        None => match provision() {
            Provision::Process => start_with(false),
            #[cfg(feature = "docker")]
            Provision::Docker => start_container(),
            #[cfg(not(feature = "docker"))]
            Provision::Docker => unreachable!("provision() refuses docker without the feature"),
        },
    })
}

/// Where every test server listens, and how many connections it takes.
const LISTEN: [&str; 4] = [
    "-c",
    "listen_addresses=127.0.0.1",
    "-c",
    "max_connections=400",
];

/// Fast and forgetful: fine for the shared server, which no test crashes
/// (the fault suite's private servers stay durable).
const NOT_DURABLE: [&str; 6] = [
    "-c",
    "fsync=off",
    "-c",
    "synchronous_commit=off",
    "-c",
    "full_page_writes=off",
];

/// The shared server as a container: `postgres -p <free port>` on
/// 127.0.0.1 with the settings of the process-mode server (no fsync, up to
/// 400 connections); ready once it logs that it accepts connections and
/// its port answers.
#[cfg(feature = "docker")]
fn start_container() -> PostgresServer {
    use crate::docker::{ContainerSpec, Ready, ServerContainer};
    let port = free_port();
    let spec = ContainerSpec::new(
        "postgres",
        "LOCKKIT_TEST_POSTGRES_IMAGE",
        Ready::Stderr("database system is ready to accept connections"),
    )
    .args(["-p".to_owned(), port.to_string()])
    .args(LISTEN)
    .args(NOT_DURABLE)
    // Dynamic shared memory (parallel queries) lives in /dev/shm, which is
    // 64 MiB by default in a container.
    .shm_size(256 << 20);
    let container = ServerContainer::start(&spec);
    container.wait_for_port(port, Duration::from_secs(60));
    PostgresServer {
        url: format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"),
        port: Some(port),
        process: None,
        respawn: None,
        _dir: None,
        _container: Some(container),
    }
}

fn bin_dirs() -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin").display().to_string())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    dirs
}

/// `initdb` and `postgres` refuse to run as root: run them as the
/// `postgres` system user then (without a forking wrapper, so killing the
/// process kills the server).
fn as_server_user(program: &PathBuf, dir: &std::path::Path) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root {
        run_to_completion(
            "chown of the Postgres data directory",
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir),
        );
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn start_with(durable: bool) -> PostgresServer {
    let dirs = bin_dirs();
    let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
    let hint = "apt-get install -y postgresql";
    let initdb = require_binary("initdb", &dirs, hint);
    let postgres = require_binary("postgres", &dirs, hint);
    let pg_isready = require_binary("pg_isready", &dirs, hint);

    let dir = tempfile::tempdir().expect("create a temporary directory for Postgres");
    let data = dir.path().join("data");
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, PASSWORD).expect("write the password file");
    let certs = test_certificates(dir.path());
    let (crt, key) = (certs.cert, certs.key);
    let mut init = as_server_user(&initdb, dir.path());
    init.arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["--no-sync", "-E", "UTF8", "--locale=C"]);
    run_to_completion("initdb", &mut init);

    let port = free_port();
    let mut command = as_server_user(&postgres, dir.path());
    command
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string()])
        .arg("-k")
        .arg(dir.path())
        .args(LISTEN)
        .args(["-c", "ssl=on"]);
    if !durable {
        command.args(NOT_DURABLE);
    }
    command
        .arg("-c")
        .arg(format!("ssl_cert_file={}", crt.display()))
        .arg("-c")
        .arg(format!("ssl_key_file={}", key.display()));
    let log = dir.path().join("postgres.log");
    let respawn = Respawn {
        program: command.get_program().to_owned(),
        args: command.get_args().map(|a| a.to_owned()).collect(),
        log: log.clone(),
        pg_isready,
    };
    let mut process = ServerProcess::spawn("postgres", command, &log);
    wait_ready(&mut process, &respawn.pg_isready, port);
    PostgresServer {
        url: format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"),
        port: Some(port),
        process: Some(process),
        respawn: Some(respawn),
        _dir: Some(dir),
        #[cfg(feature = "docker")]
        _container: None,
    }
}
