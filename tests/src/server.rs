//! Running real servers for tests: free ports, binaries from `PATH`, child
//! processes that die with the test process, readiness checks.
//!
//! Every backend fixture builds on this module; none re-implements it.
//! A missing binary is a panic whose message says which package provides
//! it — never a skipped test.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// A random hex suffix for names that must not collide between tests and
/// runs (tables, application names, cluster tokens).
pub fn random_suffix() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The URL in environment variable `var`, if set and not empty
/// (`LOCKKIT_TEST_POSTGRES_URL`, …): use an existing server instead of
/// starting one.
pub fn env_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// Finds `name` on `PATH` or in `extra_dirs`.
///
/// # Panics
/// With `install_hint` (e.g. "apt-get install -y etcd-server") when it is
/// nowhere to be found.
pub fn require_binary(name: &str, extra_dirs: &[&str], install_hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `{name}` binary is needed for this test but is not on PATH (nor in {extra_dirs:?}). \
                 Install it with `{install_hint}`, or point the test at a running server with the \
                 LOCKKIT_TEST_<BACKEND>_URL variable. `.ci/run` installs everything the suites need."
            )
        })
}

/// A server child process with its output in a log file. Killed (SIGKILL)
/// when dropped, and — through a watchdog — when the test process exits,
/// even for servers kept in a `static`.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `command`, sending its stdout and stderr to `log`.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Self {
        let out = File::create(log).expect("create the server log");
        let err = out.try_clone().expect("clone the log handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        watch_parent(child.id());
        Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until `port` on 127.0.0.1 accepts connections.
    ///
    /// # Panics
    /// When the process exits first or `timeout` passes; the message
    /// carries the end of the server's log.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) {
        self.wait_until(timeout, || {
            TcpStream::connect_timeout(
                &(Ipv4Addr::LOCALHOST, port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
        });
    }

    /// Waits until `ready()` returns true, checking that the process is
    /// still alive.
    ///
    /// # Panics
    /// When the process exits first or `timeout` passes.
    pub fn wait_until(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let give_up = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited early ({status}); log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if ready() {
                return;
            }
            assert!(
                Instant::now() < give_up,
                "{} was not ready after {timeout:?}; log:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`) with `kill(1)`.
    ///
    /// # Panics
    /// When `kill` cannot be run.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a tiny shell loop that kills `pid` once this test process is
/// gone, so servers kept in statics do not outlive the test binary.
fn watch_parent(pid: u32) {
    after_this_process(&format!(
        "kill -9 {pid} 2>/dev/null; pkill -9 -P {pid} 2>/dev/null"
    ));
}

/// Runs the shell commands `script` once this test process has exited
/// (a watchdog `sh` polling every 0.5 s), for clean-ups of what statics
/// and crashed tests leave: servers, directories, network namespaces.
pub fn after_this_process(script: &str) {
    let parent = std::process::id();
    let script = format!("while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; {script}; true");
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Runs a set-up command to completion.
///
/// # Panics
/// When it cannot start or exits unsuccessfully; the message carries its
/// output.
pub fn run_to_completion(what: &str, command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({command:?}): {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Files of a throw-away certificate authority and a server certificate
/// it signed (for `127.0.0.1` and `localhost`), made by [`test_certificates`].
#[derive(Debug, Clone)]
pub struct TestCertificates {
    /// The CA certificate (`ca.crt`): trust it to verify the server.
    pub ca: PathBuf,
    /// The server certificate (`server.crt`).
    pub cert: PathBuf,
    /// The server key (`server.key`, mode 0600).
    pub key: PathBuf,
}

/// Writes a private CA (`ca.crt`, `ca.key`) and a server certificate it
/// signed (`server.crt`, `server.key`, valid for `127.0.0.1` and
/// `localhost`) into `dir`, with the `openssl` command, for servers that
/// tests reach over TLS.
///
/// # Panics
/// When `openssl` is missing (the message says how to get it) or fails.
pub fn test_certificates(dir: &Path) -> TestCertificates {
    let openssl = require_binary("openssl", &[], "apt-get install -y openssl");
    let run = |what: &str, args: &[&str]| {
        run_to_completion(what, Command::new(&openssl).current_dir(dir).args(args));
    };
    run(
        "openssl: CA",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=lockkit test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    run(
        "openssl: server key",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write the certificate extensions");
    run(
        "openssl: sign the server certificate",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    run_to_completion(
        "chmod of the test key",
        Command::new("chmod").arg("600").arg(dir.join("server.key")),
    );
    TestCertificates {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
}
