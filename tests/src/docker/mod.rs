//! Servers as containers, through `testcontainers` (cargo feature
//! `docker`; chosen with `LOCKKIT_TEST_PROVISION=docker`, see
//! [`crate::provision`]).
//!
//! # The contract between images and fixtures
//!
//! `docker/build-images.sh` builds `lockkit-test/<server>:<version>` and
//! `lockkit-test/<server>:latest` from Debian packages; the fixtures use
//! `:latest`, or the image named by `LOCKKIT_TEST_<BACKEND>_IMAGE`
//! (`NAME[:TAG]`, e.g. `LOCKKIT_TEST_REDIS_IMAGE=myorg/redis-test:7`). An
//! image of one's own keeps the same contract as the one it replaces:
//!
//! - the entry point is the server, and takes the arguments the fixture
//!   appends (its port and settings; see each fixture);
//! - the server prints the fixture's ready line (stdout or stderr);
//! - users, passwords, databases and paths are those in
//!   `docker/<server>/Dockerfile` (e.g. Postgres' superuser `postgres` with
//!   password `lockkit-test-pw`).
//!
//! # Networking
//!
//! Containers run with **host networking**: each server listens on
//! 127.0.0.1 at a free port that the fixture chooses ([`free_port`]) and
//! passes on the server's command line, and clients connect to 127.0.0.1
//! — never to `get_host()`, which inside a container (`/.dockerenv`)
//! answers with a bridge address. No bridge network, no published ports.
//!
//! # Clean-up
//!
//! A [`ServerContainer`] removes its container when dropped. The fixtures
//! keep theirs in `static`s, which are never dropped: a watchdog
//! ([`after_this_process`]) runs `docker rm -f <name>` once the test
//! process has exited, registered before the container is created, so a
//! process that dies while its container starts leaves nothing either.
//! Every container carries the label `lockkit-test=<server>`, so leftovers
//! of a crashed run can be found (`docker ps -aq --filter
//! label=lockkit-test`).
//!
//! # Daemon
//!
//! `DOCKER_HOST` names the daemon (default: `/var/run/docker.sock`). Old
//! daemons serve too: bollard, under `testcontainers` 0.28, sends request
//! paths without an API version (`/containers/create`), which a daemon
//! answers in its own version — Debian bookworm's `docker.io` 20.10 (API
//! 1.41) does. The `docker` client is needed as well, for the clean-up.
//!
//! [`free_port`]: crate::server::free_port
//! [`after_this_process`]: crate::server::after_this_process

use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::server::{after_this_process, env_url, random_suffix, require_binary};

/// The repository prefix of the images `docker/build-images.sh` builds.
pub const IMAGE_PREFIX: &str = "lockkit-test/";

/// How long a container may take from `docker create` to its ready line
/// (a JVM on a loaded 2-core machine, crash recovery of a database).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

/// The line that says a server is ready, and where it is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// A line on the container's stdout containing this text.
    Stdout(&'static str),
    /// A line on the container's stderr containing this text.
    Stderr(&'static str),
}

/// What a fixture starts: a server image, its arguments and its ready line.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// The server's short name: `redis`, `postgres`, `mariadb`, `etcd`,
    /// `zookeeper`. The default image is `lockkit-test/<server>:latest`.
    pub server: &'static str,
    /// The environment variable that names another image
    /// (`LOCKKIT_TEST_REDIS_IMAGE`, …).
    pub image_var: &'static str,
    /// Arguments appended to the image's entry point.
    pub args: Vec<String>,
    /// Environment variables of the container.
    pub env: Vec<(String, String)>,
    /// The ready line.
    pub ready: Ready,
    /// The size of `/dev/shm` in bytes (Docker's default is 64 MiB).
    pub shm_size: Option<u64>,
}

impl ContainerSpec {
    /// A spec without arguments.
    pub fn new(server: &'static str, image_var: &'static str, ready: Ready) -> Self {
        Self {
            server,
            image_var,
            args: Vec::new(),
            env: Vec::new(),
            ready,
            shm_size: None,
        }
    }

    /// Appends arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Sets the size of `/dev/shm`.
    pub fn shm_size(mut self, bytes: u64) -> Self {
        self.shm_size = Some(bytes);
        self
    }

    /// The image to run: `$<image_var>` if set, else
    /// `lockkit-test/<server>:latest`.
    pub fn image(&self) -> String {
        env_url(self.image_var)
            .map(|image| image.trim().to_owned())
            .unwrap_or_else(|| format!("{IMAGE_PREFIX}{}:latest", self.server))
    }
}

/// Splits `NAME[:TAG]` (the name may hold a registry with a port,
/// `host:5000/repo`) into name and tag (`latest` when there is none).
pub fn split_image(image: &str) -> (&str, &str) {
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => (
            &image[..last_slash + colon],
            &image[last_slash + colon + 1..],
        ),
        None => (image, "latest"),
    }
}

/// A server running in a container started by `testcontainers`, with host
/// networking. Removed when dropped, and by a watchdog when the test
/// process exits (for containers kept in a `static`).
#[derive(Debug)]
pub struct ServerContainer {
    server: &'static str,
    image: String,
    id: String,
    docker: PathBuf,
    running: Option<Running>,
}

/// The container and the runtime its client lives on.
#[derive(Debug)]
struct Running {
    runtime: tokio::runtime::Runtime,
    container: ContainerAsync<GenericImage>,
}

/// Why a container did not start.
#[derive(Debug)]
enum Failure {
    /// The daemon did not answer or refused the request.
    Daemon(String),
    /// The image is not there.
    MissingImage,
    /// The container did not start or print its ready line in time.
    Start(String),
}

impl ServerContainer {
    /// Starts `spec`'s image and waits for its ready line (up to
    /// [`STARTUP_TIMEOUT`]).
    ///
    /// Works from synchronous code and from inside a Tokio runtime alike:
    /// the container is started, and later removed, on a runtime of its
    /// own, from a thread of its own.
    ///
    /// # Panics
    /// When the `docker` client is missing, the daemon cannot be reached,
    /// the image is
    /// missing (the message says to run `docker/build-images.sh`, or how to
    /// name another image), or the server does not print its ready line
    /// in time (the message carries the end of its output).
    pub fn start(spec: &ContainerSpec) -> Self {
        if let Some(earlier) = earlier_failure(spec.server) {
            panic!("{earlier}\n(an earlier test of this process could not start it either)");
        }
        let docker = require_binary(
            "docker",
            &[],
            "apt-get install -y docker.io (the docker-mode fixtures remove their containers with it)",
        );
        let image = spec.image();
        let name = format!(
            "lockkit-{}-{}-{}",
            spec.server,
            std::process::id(),
            &random_suffix()[..8]
        );
        // Registered before the container exists, by name: a test process
        // that dies while the container starts leaves nothing behind either.
        after_this_process(&format!(
            "'{}' rm -f {name} >/dev/null 2>&1",
            docker.display()
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lockkit-testcontainers")
            .enable_all()
            .build()
            .expect("build a Tokio runtime for testcontainers");
        // A thread of its own: the caller may be inside a runtime already,
        // where `block_on` is not allowed.
        let started = std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(run(spec, &image, &name)))
                .join()
        })
        .unwrap_or_else(|_| panic!("starting the {} container panicked", spec.server));
        match started {
            Ok(container) => {
                let id = container.id().to_owned();
                Self {
                    server: spec.server,
                    image,
                    id,
                    docker,
                    running: Some(Running { runtime, container }),
                }
            }
            Err(failure) => {
                let logs = container_logs(&docker, &name);
                let _ = Command::new(&docker).args(["rm", "-f", &name]).output();
                // Not on the caller's thread: dropping a runtime inside
                // another one panics.
                let _ = std::thread::spawn(move || drop(runtime)).join();
                fail(spec.server, failure_message(spec, &image, failure, &logs));
            }
        }
    }

    /// The server's short name (`redis`, …).
    pub fn server(&self) -> &str {
        self.server
    }

    /// The image it runs.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The last lines of the container's output, for failure messages.
    pub fn logs(&self) -> String {
        container_logs(&self.docker, &self.id)
    }

    /// Waits until `port` on 127.0.0.1 accepts connections.
    ///
    /// # Panics
    /// After `timeout`, with the end of the container's output.
    pub fn wait_for_port(&self, port: u16, timeout: Duration) {
        self.wait_until(timeout, || {
            TcpStream::connect_timeout(
                &(Ipv4Addr::LOCALHOST, port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
        });
    }

    /// Waits until `ready()` returns true.
    ///
    /// # Panics
    /// After `timeout`, with the end of the container's output.
    pub fn wait_until(&self, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let give_up = Instant::now() + timeout;
        while !ready() {
            if Instant::now() >= give_up {
                fail(
                    self.server,
                    format!(
                        "the {} container ({}, {}) was not ready after {timeout:?}; its output:\n{}",
                        self.server,
                        self.image,
                        self.id,
                        self.logs()
                    ),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerContainer {
    fn drop(&mut self) {
        if let Some(Running { runtime, container }) = self.running.take() {
            // Off any runtime the dropping thread may be on.
            let _ = std::thread::spawn(move || {
                let _ = runtime.block_on(container.rm());
                drop(runtime);
            })
            .join();
        }
    }
}

/// Servers whose container failed to start in this process, with the
/// message: the fixtures keep their containers in `OnceLock`s, which try
/// again for every later test after a panic; those tests fail at once
/// instead of waiting out the same timeout again.
static FAILED: Mutex<Vec<(&str, String)>> = Mutex::new(Vec::new());

fn earlier_failure(server: &str) -> Option<String> {
    FAILED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(s, _)| *s == server)
        .map(|(_, message)| message.clone())
}

fn fail(server: &'static str, message: String) -> ! {
    FAILED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((server, message.clone()));
    panic!("{message}");
}

async fn run(
    spec: &ContainerSpec,
    image: &str,
    name: &str,
) -> Result<ContainerAsync<GenericImage>, Failure> {
    let client = testcontainers::core::client::docker_client_instance()
        .await
        .map_err(|e| Failure::Daemon(e.to_string()))?;
    match client.inspect_image(image).await {
        Ok(_) => {}
        Err(testcontainers::bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }) => return Err(Failure::MissingImage),
        Err(e) => return Err(Failure::Daemon(e.to_string())),
    }
    let (repository, tag) = split_image(image);
    let wait = match spec.ready {
        Ready::Stdout(line) => WaitFor::message_on_stdout(line),
        Ready::Stderr(line) => WaitFor::message_on_stderr(line),
    };
    let mut request = GenericImage::new(repository, tag)
        .with_wait_for(wait)
        .with_cmd(spec.args.iter().cloned())
        .with_network("host")
        .with_container_name(name)
        .with_label("lockkit-test", spec.server)
        .with_startup_timeout(STARTUP_TIMEOUT);
    for (key, value) in &spec.env {
        request = request.with_env_var(key, value);
    }
    if let Some(bytes) = spec.shm_size {
        request = request.with_shm_size(bytes);
    }
    request
        .start()
        .await
        .map_err(|e| Failure::Start(e.to_string()))
}

fn failure_message(spec: &ContainerSpec, image: &str, failure: Failure, logs: &str) -> String {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the default socket".into());
    match failure {
        Failure::MissingImage => format!(
            "the image {image} for the {} fixture is not on the Docker daemon at {host}: build it \
             with `docker/build-images.sh` (Debian packages, no registry needed), or name an \
             image of your own with {}=NAME[:TAG]",
            spec.server, spec.image_var
        ),
        Failure::Daemon(error) => format!(
            "cannot use the Docker daemon at {host} for the {} fixture: {error}. Start Docker \
             (or set DOCKER_HOST), or unset LOCKKIT_TEST_PROVISION to start the servers as \
             child processes",
            spec.server
        ),
        Failure::Start(error) => format!(
            "the {} container ({image}) did not start or print its ready line {:?} within \
             {STARTUP_TIMEOUT:?}: {error}; its output:\n{logs}",
            spec.server, spec.ready
        ),
    }
}

/// The last 40 lines of a container's stdout and stderr (`docker logs`).
fn container_logs(docker: &PathBuf, container: &str) -> String {
    match Command::new(docker)
        .args(["logs", "--tail", "40", container])
        .output()
    {
        Ok(output) => format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => format!("(docker logs failed: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_image_names() {
        assert_eq!(
            split_image("lockkit-test/redis:latest"),
            ("lockkit-test/redis", "latest")
        );
        assert_eq!(split_image("redis"), ("redis", "latest"));
        assert_eq!(
            split_image("registry.local:5000/team/pg:15.4"),
            ("registry.local:5000/team/pg", "15.4")
        );
        assert_eq!(
            split_image("registry.local:5000/team/pg"),
            ("registry.local:5000/team/pg", "latest")
        );
    }
}
