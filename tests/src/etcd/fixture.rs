//! Private etcd servers: one member or a cluster of several, each on free
//! ports with its data directory in a temporary directory.
//!
//! [`EtcdCluster::start_in`] places the members in the namespaces of a
//! [`NetLab`] instead (member `i` in namespace `i`, on the lab's address
//! for it), so tests can partition them.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use crate::netns::NetLab;
use crate::provision::{Provision, provision};
use crate::server::{ServerProcess, env_url, free_port, require_binary};

/// The environment variable naming an existing etcd to use instead of a
/// private one (`etcd://host:port[,host:port…]`).
pub const URL_VAR: &str = "LOCKKIT_TEST_ETCD_URL";

/// How to get etcd when it is missing.
const INSTALL_HINT: &str = "apt-get install -y etcd-server";

/// How long a member may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The client port of members in a [`NetLab`] (each has its own address).
const LAB_CLIENT_PORT: u16 = 2379;

/// The peer port of members in a [`NetLab`].
const LAB_PEER_PORT: u16 = 2380;

/// Where data directories go: a RAM disk when there is one (fsync there is
/// cheap), else the system temporary directory.
fn scratch_dir(prefix: &str) -> TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        builder.tempdir_in(shm)
    } else {
        builder.tempdir()
    }
    .expect("create a temporary directory for etcd")
}

/// One member of a private etcd cluster.
#[derive(Debug)]
pub struct EtcdMember {
    /// The member's name (`m0`, `m1`, …).
    pub name: String,
    /// Its client port (on 127.0.0.1, or on its lab address).
    pub client_port: u16,
    /// Its peer port (on 127.0.0.1, or on its lab address).
    pub peer_port: u16,
    ip: Ipv4Addr,
    data_dir: PathBuf,
    log: PathBuf,
    process: Option<ServerProcess>,
}

impl EtcdMember {
    /// `127.0.0.1:<client port>` (`<lab address>:<client port>` for a
    /// member in a [`NetLab`]).
    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.client_port)
    }

    /// The address it listens on: 127.0.0.1, or its lab address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Whether its process runs.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ServerProcess::is_running)
    }

    /// The end of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map(ServerProcess::log_tail)
            .unwrap_or_default()
    }
}

/// A private etcd cluster of one or more members on 127.0.0.1 (or in the
/// namespaces of a [`NetLab`], see [`start_in`](Self::start_in)). Members
/// are killed when it is dropped, and its directory is removed.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    tls: Option<ServerTls>,
    initial_cluster: String,
    token: String,
    election_timeout_ms: u32,
    binary: PathBuf,
    dir: TempDir,
    /// The lab the members run in; dropped after them (field order), so
    /// its namespaces outlive the servers.
    lab: Option<NetLab>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster has a leader.
    /// `election_timeout_ms` also sets etcd's minimum lease TTL
    /// (`ceil(1.5 × election timeout)` seconds): 500 gives 1 s leases.
    ///
    /// # Panics
    /// When `etcd` is not installed (with the install hint) or a member
    /// does not become healthy.
    pub fn start(size: usize, election_timeout_ms: u32) -> Self {
        Self::start_with(size, election_timeout_ms, None, None)
    }

    /// Starts one member per namespace of `lab` (member `i` in namespace
    /// `i`, via [`NetLab::command`]), listening for clients on
    /// `lab.member_ip(i):2379` and for peers on `lab.member_ip(i):2380`, and
    /// waits until every member is healthy (health is asked from the root
    /// namespace, at the member's lab address). `election_timeout_ms` as in
    /// [`start`](Self::start).
    ///
    /// The cluster keeps a handle to the lab: the namespaces stay until the
    /// cluster is dropped too, even if the test's own `NetLab` goes first.
    /// Partitions are made on the lab ([`NetLab::isolate`], …); every
    /// method here (`url`, `leader`, `kill`, `restart`, …) works with the
    /// lab addresses.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_in(lab: &NetLab, election_timeout_ms: u32) -> Self {
        Self::start_with(lab.len(), election_timeout_ms, None, Some(lab))
    }

    /// One member serving clients over TLS with `tls` (peers stay plain).
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_tls(tls: ServerTls) -> Self {
        Self::start_with(1, 500, Some(tls), None)
    }

    fn start_with(
        size: usize,
        election_timeout_ms: u32,
        tls: Option<ServerTls>,
        lab: Option<&NetLab>,
    ) -> Self {
        let binary = require_binary("etcd", &["/usr/local/bin"], INSTALL_HINT);
        let dir = scratch_dir("lockkit-etcd-");
        let token = format!("lockkit-{}", crate::server::random_suffix());
        let members: Vec<EtcdMember> = (0..size)
            .map(|i| {
                let name = format!("m{i}");
                let (ip, client_port, peer_port) = match lab {
                    Some(lab) => (lab.member_ip(i), LAB_CLIENT_PORT, LAB_PEER_PORT),
                    None => (Ipv4Addr::LOCALHOST, free_port(), free_port()),
                };
                EtcdMember {
                    data_dir: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port,
                    peer_port,
                    ip,
                    process: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}:{}", m.name, m.ip, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            members,
            tls,
            initial_cluster,
            token,
            election_timeout_ms,
            binary,
            dir,
            lab: lab.map(NetLab::share),
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        for i in 0..size {
            cluster.wait_healthy(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://{}:{}", m.ip, m.client_port);
        let peer = format!("http://{}:{}", m.ip, m.peer_port);
        let mut command = match &self.lab {
            Some(lab) => lab.command(i, &self.binary),
            None => Command::new(&self.binary),
        };
        command.arg("--data-dir").arg(&m.data_dir).args(member_args(
            &m.name,
            &client,
            &peer,
            &self.initial_cluster,
            &self.token,
            self.election_timeout_ms,
        ));
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key);
        }
        let process = ServerProcess::spawn(&format!("etcd {}", m.name), command, &m.log);
        self.members[i].process = Some(process);
    }

    /// Waits until member `i` answers `/health` with a leader.
    ///
    /// # Panics
    /// When it exits or is not healthy within 30 s.
    pub fn wait_healthy(&mut self, i: usize) {
        let port = self.members[i].client_port;
        let ip = self.members[i].ip;
        let tls = self.tls.is_some();
        let process = self.members[i]
            .process
            .as_mut()
            .expect("the member was started");
        if tls {
            // /health needs TLS too; the client's connect retries until ready.
            process.wait_for_port(port, START_TIMEOUT);
        } else {
            process.wait_until(START_TIMEOUT, || healthy(ip, port));
        }
    }

    /// The URL for lockkit: every member, `etcd://127.0.0.1:p0,127.0.0.1:p1,…`
    /// (the lab addresses for a cluster in a [`NetLab`]).
    pub fn url(&self) -> String {
        let addresses: Vec<String> = self.members.iter().map(EtcdMember::address).collect();
        format!("etcd://{}", addresses.join(","))
    }

    /// The URL of member `i` alone, `etcd://<ip>:<port>`: a client that
    /// talks to one side of a partition only.
    ///
    /// # Panics
    /// When there is no member `i`.
    pub fn member_url(&self, i: usize) -> String {
        format!("etcd://{}", self.members[i].address())
    }

    /// The members.
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// Member `i`.
    pub fn member_mut(&mut self, i: usize) -> &mut EtcdMember {
        &mut self.members[i]
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            process.kill();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`) to member `i`.
    ///
    /// # Panics
    /// When the member is not running.
    pub fn signal(&self, i: usize, signal: &str) {
        self.members[i]
            .process
            .as_ref()
            .expect("the member runs")
            .signal(signal);
    }

    /// Restarts a killed member on its data directory and waits until it is
    /// healthy again.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// The cluster's directory (data directories and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The index of the current leader, asking every running member
    /// (`None` while there is none, e.g. during an election).
    pub async fn leader(&mut self) -> Option<usize> {
        use etcd_client::{Client, ConnectOptions};
        let mut ids = Vec::new();
        let mut leader = None;
        for member in &mut self.members {
            if !member.is_running() {
                ids.push(None);
                continue;
            }
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(2));
            let status = match Client::connect([member.address()], Some(options)).await {
                Ok(mut client) => client.status().await.ok(),
                Err(_) => None,
            };
            let id = status
                .as_ref()
                .and_then(|s| s.header().map(|h| h.member_id()));
            if let Some(s) = &status
                && s.leader() != 0
            {
                leader = Some(s.leader());
            }
            ids.push(id);
        }
        let leader = leader?;
        ids.iter().position(|id| *id == Some(leader))
    }

    /// The index of the leader as member `i` itself sees it (its own
    /// `Status`, mapped to an index through its own member list; both are
    /// answered locally, so this works on the minority side of a
    /// partition). `None` when `i` is not running, does not answer within
    /// 2 s, or knows no leader.
    pub async fn leader_seen_by(&mut self, i: usize) -> Option<usize> {
        use etcd_client::{Client, ConnectOptions};
        if !self.members[i].is_running() {
            return None;
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(2));
        let mut client = Client::connect([self.members[i].address()], Some(options))
            .await
            .ok()?;
        let leader = client.status().await.ok()?.leader();
        if leader == 0 {
            return None;
        }
        let list = client.member_list().await.ok()?;
        let name = list.members().iter().find(|m| m.id() == leader)?.name();
        self.members.iter().position(|m| m.name == name)
    }

    /// Waits (up to 30 s) until a running member is leader.
    ///
    /// # Panics
    /// When none is elected in time.
    pub async fn wait_for_leader(&mut self) -> usize {
        let give_up = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(leader) = self.leader().await {
                return leader;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "no etcd leader elected; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The ends of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.name, m.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The arguments of a member but its data directory: name, client and
/// peer URLs, the initial cluster, 100 ms heartbeats, the election timeout
/// and zap logs on stderr.
fn member_args(
    name: &str,
    client_url: &str,
    peer_url: &str,
    initial_cluster: &str,
    token: &str,
    election_timeout_ms: u32,
) -> Vec<String> {
    [
        "--name",
        name,
        "--listen-client-urls",
        client_url,
        "--advertise-client-urls",
        client_url,
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        initial_cluster,
        "--initial-cluster-state",
        "new",
        "--initial-cluster-token",
        token,
        "--heartbeat-interval",
        "100",
        "--election-timeout",
        &election_timeout_ms.to_string(),
        "--logger",
        "zap",
        "--log-outputs",
        "stderr",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A server certificate and key (PEM files) for a TLS member.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server certificate (PEM), valid for 127.0.0.1.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// A throw-away CA and a server certificate for 127.0.0.1 made with the
/// `openssl` command in `dir`; returns the CA file and the server's files.
///
/// # Panics
/// When `openssl` is missing (with the install hint) or fails.
pub fn make_test_certificates(dir: &Path) -> (PathBuf, ServerTls) {
    let certs = crate::server::test_certificates(dir);
    (
        certs.ca,
        ServerTls {
            cert: certs.cert,
            key: certs.key,
        },
    )
}

/// Reads one gauge or counter from member `port`'s `/metrics` (plain
/// HTTP on the client port), e.g. `etcd_debugging_mvcc_watcher_total`.
///
/// # Panics
/// When the member does not answer or has no such metric.
pub fn metric(port: u16, name: &str) -> f64 {
    let body = http_get(Ipv4Addr::LOCALHOST, port, "/metrics")
        .unwrap_or_else(|| panic!("GET /metrics on port {port}"));
    body.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("no metric {name} on port {port}"))
}

fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(300)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Asks `/health` on a client port (plain HTTP on the same port as gRPC).
fn healthy(ip: Ipv4Addr, port: u16) -> bool {
    http_get(ip, port, "/health").is_some_and(|body| body.contains("\"health\":\"true\""))
}

/// The etcd every suite of this test binary shares: `LOCKKIT_TEST_ETCD_URL`
/// if set, else one private member started on first use (1 s minimum lease
/// TTL) and killed when the test process exits — a child process, or with
/// `LOCKKIT_TEST_PROVISION=docker` a container ([`provision`]). Lock names
/// are unique per test, so tests can share it.
///
/// # Panics
/// As [`EtcdCluster::start`], or in docker mode as
/// `ServerContainer::start`.
pub fn shared_url() -> String {
    static SHARED: OnceLock<String> = OnceLock::new();
    static SERVER: OnceLock<EtcdCluster> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Some(url) = env_url(URL_VAR) {
                return url;
            }
            match provision() {
                Provision::Process => {}
                #[cfg(feature = "docker")]
                Provision::Docker => return start_container(),
                #[cfg(not(feature = "docker"))]
                Provision::Docker => unreachable!("provision() refuses docker without the feature"),
            }
            let cluster = SERVER.get_or_init(|| EtcdCluster::start(1, 500));
            remove_when_process_exits(cluster.dir());
            cluster.url()
        })
        .clone()
}

/// The shared member as a container, with the arguments of a one-member
/// [`EtcdCluster`] (500 ms election timeout: 1 s minimum lease TTL) on
/// free loopback ports; its data directory in the container. Returns
/// `etcd://127.0.0.1:<client port>` once it reports itself healthy.
#[cfg(feature = "docker")]
fn start_container() -> String {
    use crate::docker::{ContainerSpec, Ready, ServerContainer};
    static CONTAINER: OnceLock<(ServerContainer, String)> = OnceLock::new();
    CONTAINER
        .get_or_init(|| {
            let (client_port, peer_port) = (free_port(), free_port());
            let client = format!("http://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            let token = format!("lockkit-{}", crate::server::random_suffix());
            let spec = ContainerSpec::new(
                "etcd",
                "LOCKKIT_TEST_ETCD_IMAGE",
                Ready::Stderr("serving client traffic"),
            )
            .args(["--data-dir", "/var/lib/lockkit/m0"])
            .args(member_args(
                "m0",
                &client,
                &peer,
                &format!("m0={peer}"),
                &token,
                500,
            ));
            let container = ServerContainer::start(&spec);
            container.wait_until(START_TIMEOUT, || healthy(Ipv4Addr::LOCALHOST, client_port));
            (container, format!("etcd://127.0.0.1:{client_port}"))
        })
        .1
        .clone()
}

/// A server kept in a `static` is never dropped: remove its directory once
/// this test process has exited (the server itself is killed by the
/// watchdog of [`ServerProcess`]).
fn remove_when_process_exits(dir: &Path) {
    crate::server::after_this_process(&format!("sleep 2; rm -rf '{}'", dir.display()));
}
