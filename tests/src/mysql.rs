//! A private MariaDB (or MySQL) server for the suites:
//! `mariadb-install-db` into a temporary directory, `mariadbd` on a free
//! port with TLS (a self-signed certificate), a root password and a
//! `lockkit` database, started once per test
//! binary. `LOCKKIT_TEST_MYSQL_URL` points the suites at an existing server.
//!
//! With `LOCKKIT_TEST_PROVISION=docker` the shared server is a container
//! of `lockkit-test/mariadb:latest` (or `LOCKKIT_TEST_MYSQL_IMAGE`) on a
//! free loopback port, with the same root password, `lockkit` database and
//! TLS (made when the image is built) and the same settings.
//! [`MySqlServer::start_private`] always starts a child process.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use crate::provision::{Provision, provision};
use crate::server::{
    ServerProcess, env_url, free_port, require_binary, run_to_completion, test_certificates,
};

/// The root password of the private server.
pub const PASSWORD: &str = "lockkit-test-pw";

/// A running MariaDB server (private, or the one named by the environment).
#[derive(Debug)]
pub struct MySqlServer {
    url: String,
    port: Option<u16>,
    process: Option<ServerProcess>,
    /// The program and arguments the private server was started with.
    respawn: Option<(
        std::ffi::OsString,
        Vec<std::ffi::OsString>,
        std::path::PathBuf,
    )>,
    _dir: Option<TempDir>,
    /// The container of the shared server in docker mode.
    #[cfg(feature = "docker")]
    _container: Option<crate::docker::ServerContainer>,
}

impl MySqlServer {
    /// `mysql://root:<password>@127.0.0.1:<port>/lockkit`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port of the private server (`None` with an external URL).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// A private server for one test alone, which the test may stop, kill
    /// and restart (the fault suite); always started from the binaries on
    /// `PATH`, whatever `LOCKKIT_TEST_MYSQL_URL` says.
    ///
    /// # Panics
    /// As [`server`].
    pub fn start_private() -> Self {
        start()
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server process.
    ///
    /// # Panics
    /// For a server this fixture did not start.
    pub fn signal(&self, signal: &str) {
        self.process
            .as_ref()
            .expect("a private server")
            .signal(signal);
    }

    /// Kills the server (SIGKILL) and starts it again on the same data
    /// directory and port; returns once it accepts connections (after
    /// InnoDB crash recovery).
    ///
    /// # Panics
    /// For a server this fixture did not start, or when it does not come
    /// back within 60 s.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        let (program, args, log) = self.respawn.as_ref().expect("a private server");
        let mut command = Command::new(program);
        command.args(args);
        let mut process = ServerProcess::spawn("mariadbd", command, log);
        process.wait_for_port(
            self.port.expect("a private server"),
            Duration::from_secs(60),
        );
        self.process = Some(process);
    }
}

/// The server shared by every test of this binary, started on first use:
/// `LOCKKIT_TEST_MYSQL_URL`, else a child process, or a container with
/// `LOCKKIT_TEST_PROVISION=docker` ([`provision`]).
///
/// # Panics
/// When the MariaDB binaries are missing (with the package to install),
/// the docker-mode image or daemon is missing (with what to do), or the
/// server does not start.
pub fn server() -> &'static MySqlServer {
    static SERVER: OnceLock<MySqlServer> = OnceLock::new();
    SERVER.get_or_init(|| match env_url("LOCKKIT_TEST_MYSQL_URL") {
        Some(url) => MySqlServer {
            url,
            port: None,
            process: None,
            respawn: None,
            _dir: None,
            #[cfg(feature = "docker")]
            _container: None,
        },
        None => match provision() {
            Provision::Process => start(),
            #[cfg(feature = "docker")]
            Provision::Docker => start_container(),
            #[cfg(not(feature = "docker"))]
            Provision::Docker => unreachable!("provision() refuses docker without the feature"),
        },
    })
}

/// The shared server as a container: `mariadbd --port=<free port>` on
/// 127.0.0.1 with the settings of the process-mode server; ready once it
/// logs that it is ready for connections and its port answers.
#[cfg(feature = "docker")]
fn start_container() -> MySqlServer {
    use crate::docker::{ContainerSpec, Ready, ServerContainer};
    let port = free_port();
    let spec = ContainerSpec::new(
        "mariadb",
        "LOCKKIT_TEST_MYSQL_IMAGE",
        Ready::Stderr("ready for connections"),
    )
    .args([format!("--port={port}")])
    .args([
        "--bind-address=127.0.0.1",
        "--skip-log-bin",
        "--innodb-buffer-pool-size=64M",
        "--innodb-flush-log-at-trx-commit=2",
        "--max-connections=600",
    ]);
    let container = ServerContainer::start(&spec);
    container.wait_for_port(port, Duration::from_secs(60));
    MySqlServer {
        url: format!("mysql://root:{PASSWORD}@127.0.0.1:{port}/lockkit"),
        port: Some(port),
        process: None,
        respawn: None,
        _dir: None,
        _container: Some(container),
    }
}

fn start() -> MySqlServer {
    let hint = "apt-get install -y mariadb-server mariadb-client";
    let sbin = ["/usr/sbin", "/usr/bin"];
    let install_db = require_binary("mariadb-install-db", &sbin, hint);
    let mariadbd = require_binary("mariadbd", &sbin, hint);
    let client = require_binary("mariadb", &sbin, hint);

    let dir = tempfile::tempdir().expect("create a temporary directory for MariaDB");
    let data = dir.path().join("data");
    run_to_completion(
        "mariadb-install-db",
        Command::new(&install_db)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ]),
    );
    let certs = test_certificates(dir.path());
    let (crt, key) = (certs.cert, certs.key);
    let port = free_port();
    let mut command = Command::new(&mariadbd);
    command
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!(
            "--socket={}",
            dir.path().join("mysqld.sock").display()
        ))
        .arg(format!(
            "--pid-file={}",
            dir.path().join("mysqld.pid").display()
        ))
        .arg(format!("--port={port}"))
        .args([
            "--bind-address=127.0.0.1",
            "--user=root",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=600",
        ])
        .arg(format!("--ssl-cert={}", crt.display()))
        .arg(format!("--ssl-key={}", key.display()));
    let log = dir.path().join("mariadbd.log");
    let respawn = (
        command.get_program().to_owned(),
        command.get_args().map(|a| a.to_owned()).collect(),
        log.clone(),
    );
    let mut process = ServerProcess::spawn("mariadbd", command, &log);
    process.wait_for_port(port, Duration::from_secs(60));
    let setup = format!(
        "ALTER USER root@localhost IDENTIFIED BY '{PASSWORD}'; CREATE DATABASE IF NOT EXISTS lockkit;"
    );
    process.wait_until(Duration::from_secs(30), || {
        Command::new(&client)
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                &port.to_string(),
                "-uroot",
                "-e",
                &setup,
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    MySqlServer {
        url: format!("mysql://root:{PASSWORD}@127.0.0.1:{port}/lockkit"),
        port: Some(port),
        process: Some(process),
        respawn: Some(respawn),
        _dir: Some(dir),
        #[cfg(feature = "docker")]
        _container: None,
    }
}
