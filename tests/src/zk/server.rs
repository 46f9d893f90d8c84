//! Private ZooKeeper servers: a standalone server and a 3-server ensemble,
//! each from the Debian `zookeeper` package's `zkServer.sh start-foreground`
//! with a generated configuration in a temporary directory and free ports.
//!
//! [`ZkEnsemble::start_in`] places the servers in the namespaces of a
//! [`NetLab`] instead (server `i` in namespace `i`, on the lab's address for
//! it), so tests can partition them.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::netns::NetLab;
use crate::server::{ServerProcess, free_port, require_binary};

/// Where the Debian package puts the start script.
const ZK_BIN: &str = "/usr/share/zookeeper/bin";

/// Server tick: 200 ms, so sessions may be as short as 400 ms and a
/// follower drops a silent leader after `syncLimit` = 5 ticks (1 s).
const TICK_MS: u64 = 200;

/// How long a server (a JVM on a loaded 2-core machine) may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server image logs (on stderr, through slf4j-simple) once it
/// serves clients: the first snapshot of a fresh data directory, written
/// after the client port is bound.
#[cfg(feature = "docker")]
const CONTAINER_READY_LINE: &str = "Snapshot taken";

/// Ports of servers in a [`NetLab`] (each server has its own address).
const LAB_PORTS: Ports = Ports {
    client: 2181,
    peer: 2888,
    election: 3888,
};

/// Extra JVM flags for servers in a [`NetLab`], where peers vanish without
/// a reset: connecting to a cut-off peer gives up after 2 s (default 5 s),
/// and a server looking for a leader re-sends its vote at least every 2 s
/// (the default backs off to 60 s, which would delay rejoining after a
/// partition heals by up to a minute).
const LAB_JVM_FLAGS: &str =
    "-Dzookeeper.cnxTimeout=2000 -Dzookeeper.fastleader.maxNotificationInterval=2000";

fn zk_server_script() -> PathBuf {
    require_binary(
        "zkServer.sh",
        &[ZK_BIN],
        "apt-get install -y zookeeper (Debian's ZooKeeper 3.8 package; needs a Java runtime)",
    )
}

/// Sends a four-letter command (`srvr`, `ruok`) to 127.0.0.1 and returns
/// the reply.
pub fn four_letter(port: u16, command: &str) -> Option<String> {
    four_letter_at(Ipv4Addr::LOCALHOST, port, command)
}

/// Sends a four-letter command to `ip:port` and returns the reply.
pub fn four_letter_at(ip: Ipv4Addr, port: u16, command: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(command.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    Some(reply)
}

/// The `Mode:` line of `srvr` (`standalone`, `leader`, `follower`), if the
/// server on 127.0.0.1 is serving.
pub fn mode(port: u16) -> Option<String> {
    mode_at(Ipv4Addr::LOCALHOST, port)
}

/// The `Mode:` line of `srvr` of the server at `ip:port`, if it serves.
pub fn mode_at(ip: Ipv4Addr, port: u16) -> Option<String> {
    let reply = four_letter_at(ip, port, "srvr")?;
    reply
        .lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(|m| m.trim().to_owned())
}

/// Ports of one server.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    peer: u16,
    election: u16,
}

/// Writes `zoo<id>.cfg` for server `id` (1-based) of `peers` (address and
/// ports of every server, this one included).
fn write_config(dir: &Path, id: usize, peers: &[(Ipv4Addr, Ports)]) -> PathBuf {
    let data = dir.join(format!("data{id}"));
    std::fs::create_dir_all(&data).expect("create a ZooKeeper data dir");
    if peers.len() > 1 {
        std::fs::write(data.join("myid"), format!("{id}\n")).expect("write myid");
    }
    let cfg = config_text(&data.display().to_string(), id, peers);
    let path = dir.join(format!("zoo{id}.cfg"));
    std::fs::write(&path, cfg).expect("write the ZooKeeper config");
    path
}

/// The configuration of server `id` (1-based) of `peers`, with its data in
/// `data_dir`: 200 ms ticks, sessions of 0.4–30 s, the client port on the
/// server's address only, the `srvr`, `ruok` and `mntr` commands, no admin
/// server; `server.N` lines for an ensemble.
fn config_text(data_dir: &str, id: usize, peers: &[(Ipv4Addr, Ports)]) -> String {
    let (address, ports) = peers[id - 1];
    let mut cfg = format!(
        "tickTime={TICK_MS}\n\
         initLimit=50\n\
         syncLimit=5\n\
         dataDir={data_dir}\n\
         clientPort={}\n\
         clientPortAddress={address}\n\
         admin.enableServer=false\n\
         4lw.commands.whitelist=srvr,ruok,mntr\n\
         minSessionTimeout=400\n\
         maxSessionTimeout=30000\n\
         maxClientCnxns=0\n",
        ports.client
    );
    if peers.len() > 1 {
        for (i, (ip, p)) in peers.iter().enumerate() {
            cfg.push_str(&format!(
                "server.{}={ip}:{}:{}\n",
                i + 1,
                p.peer,
                p.election
            ));
        }
    }
    cfg
}

/// The standalone server of this test binary in a container
/// (`LOCKKIT_TEST_PROVISION=docker`), started on first use: the image
/// `lockkit-test/zookeeper:latest` (or `LOCKKIT_TEST_ZK_IMAGE`) with host
/// networking, given the configuration of [`ZkServer::start`] line by line
/// on its command line (client port: a free one on 127.0.0.1; data in the
/// container); kept until the test process exits. Returns
/// `zk://127.0.0.1:<port>` once `srvr` says `standalone`.
///
/// # Panics
/// As [`ServerContainer::start`](crate::docker::ServerContainer::start),
/// or when the server does not serve within 60 s.
#[cfg(feature = "docker")]
pub fn shared_container_url() -> String {
    use crate::docker::{ContainerSpec, Ready, ServerContainer};
    static SHARED: std::sync::OnceLock<(ServerContainer, String)> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let ports = Ports {
                client: free_port(),
                peer: 0,
                election: 0,
            };
            let cfg = config_text("/var/lib/lockkit/data", 1, &[(Ipv4Addr::LOCALHOST, ports)]);
            let spec = ContainerSpec::new(
                "zookeeper",
                "LOCKKIT_TEST_ZK_IMAGE",
                Ready::Stderr(CONTAINER_READY_LINE),
            )
            .args(cfg.lines());
            let container = ServerContainer::start(&spec);
            container.wait_until(START_TIMEOUT, || {
                mode(ports.client).is_some_and(|m| m == "standalone")
            });
            (container, format!("zk://127.0.0.1:{}", ports.client))
        })
        .1
        .clone()
}

/// Starts server `id` (1-based) with `config`; in namespace `id - 1` of
/// `lab` when there is one. `zkServer.sh start-foreground` execs java
/// (unless `ZOO_NOEXEC` is set, which is removed here), and `ip netns exec`
/// execs the script, so the process is the JVM and killing it kills the
/// server.
fn spawn(dir: &Path, id: usize, config: &Path, lab: Option<&NetLab>) -> ServerProcess {
    let script = zk_server_script();
    // The Debian scripts fix CLASSPATH and log locations; add a logging
    // binding and send logs to the console (our log file).
    let classpath = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:\
                     /usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar";
    let mut jvm = format!(
        "-Xmx160m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
         -Dzookeeper.root.logger=INFO,CONSOLE -Dzookeeper.log.dir={} -cp {classpath}",
        dir.display()
    );
    let mut command = match lab {
        Some(lab) => {
            jvm = format!("{LAB_JVM_FLAGS} {jvm}");
            lab.command(id - 1, script)
        }
        None => Command::new(script),
    };
    command
        .env_remove("ZOO_NOEXEC")
        .arg("start-foreground")
        .arg(config)
        .env("SERVER_JVMFLAGS", jvm)
        .env("JMXDISABLE", "true")
        .env("ZOO_LOG_DIR", dir)
        .current_dir(dir);
    ServerProcess::spawn(
        &format!("zookeeper-{id}"),
        command,
        &dir.join(format!("zookeeper{id}.log")),
    )
}

/// A private standalone ZooKeeper server.
#[derive(Debug)]
pub struct ZkServer {
    dir: TempDir,
    port: u16,
    process: ServerProcess,
}

impl ZkServer {
    /// Starts a server on a free port and waits until it serves.
    ///
    /// # Panics
    /// When `zkServer.sh` is missing (with an install hint) or the server
    /// does not come up.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let ports = Ports {
            client: free_port(),
            peer: 0,
            election: 0,
        };
        let config = write_config(dir.path(), 1, &[(Ipv4Addr::LOCALHOST, ports)]);
        let mut process = spawn(dir.path(), 1, &config, None);
        let port = ports.client;
        wait_standalone(&mut process, port);
        Self { dir, port, process }
    }

    /// Kills the server (SIGKILL) and starts it again on the same data
    /// directory and port; returns once it serves (sessions and nodes
    /// restored from its transaction log).
    ///
    /// # Panics
    /// When it does not come back in time.
    pub fn kill_and_restart(&mut self) {
        self.process.kill();
        let config = self.dir.path().join("zoo1.cfg");
        self.process = spawn(self.dir.path(), 1, &config, None);
        wait_standalone(&mut self.process, self.port);
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn hosts(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `zk://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("zk://{}", self.hosts())
    }

    /// The server process (pause it with `signal("STOP")`).
    pub fn process(&mut self) -> &mut ServerProcess {
        &mut self.process
    }

    /// The server's temporary directory (configuration, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn wait_standalone(process: &mut ServerProcess, port: u16) {
    process.wait_until(START_TIMEOUT, || {
        mode(port).is_some_and(|m| m == "standalone")
    });
}

/// One member of an ensemble.
#[derive(Debug)]
struct Member {
    ip: Ipv4Addr,
    ports: Ports,
    config: PathBuf,
    process: Option<ServerProcess>,
}

/// A private ensemble of ZooKeeper servers on 127.0.0.1 (or in the
/// namespaces of a [`NetLab`], see [`start_in`](Self::start_in)).
#[derive(Debug)]
pub struct ZkEnsemble {
    dir: TempDir,
    members: Vec<Member>,
    /// The lab the servers run in; dropped after them (field order), so its
    /// namespaces outlive the servers.
    lab: Option<NetLab>,
}

impl ZkEnsemble {
    /// Starts `size` servers and waits until one leads and the others
    /// follow.
    ///
    /// # Panics
    /// When `zkServer.sh` is missing or no quorum forms in time.
    pub fn start(size: usize) -> Self {
        let peers: Vec<(Ipv4Addr, Ports)> = (0..size)
            .map(|_| {
                let ports = Ports {
                    client: free_port(),
                    peer: free_port(),
                    election: free_port(),
                };
                (Ipv4Addr::LOCALHOST, ports)
            })
            .collect();
        Self::start_on(&peers, None)
    }

    /// Starts one server per namespace of `lab` (server `i` in namespace
    /// `i`, via [`NetLab::command`]) on `lab.member_ip(i)` (client port
    /// 2181, quorum 2888, election 3888), and waits until one leads and the
    /// others follow. The servers give up on silent peers sooner than by
    /// default (see `LAB_JVM_FLAGS` in the source), so partitions and heals
    /// settle within seconds.
    ///
    /// The ensemble keeps a handle to the lab: the namespaces stay until
    /// the ensemble is dropped too, even if the test's own `NetLab` goes
    /// first. Every method here (`hosts`, `mode`, `leader`, `kill`,
    /// `restart`, …) works with the lab addresses, from the root namespace.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_in(lab: &NetLab) -> Self {
        let peers: Vec<(Ipv4Addr, Ports)> = (0..lab.len())
            .map(|i| (lab.member_ip(i), LAB_PORTS))
            .collect();
        Self::start_on(&peers, Some(lab))
    }

    fn start_on(peers: &[(Ipv4Addr, Ports)], lab: Option<&NetLab>) -> Self {
        let size = peers.len();
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let members = peers
            .iter()
            .enumerate()
            .map(|(i, (ip, ports))| {
                let config = write_config(dir.path(), i + 1, peers);
                Member {
                    ip: *ip,
                    ports: *ports,
                    config,
                    process: None,
                }
            })
            .collect();
        let mut ensemble = Self {
            dir,
            members,
            lab: lab.map(NetLab::share),
        };
        for i in 0..size {
            ensemble.restart(i);
        }
        ensemble.wait_for_quorum(size, START_TIMEOUT);
        ensemble
    }

    /// `127.0.0.1:<port>,…` of every member (`<lab address>:2181,…` in a
    /// [`NetLab`]).
    pub fn hosts(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}:{}", m.ip, m.ports.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `zk://<every member>`.
    pub fn url(&self) -> String {
        format!("zk://{}", self.hosts())
    }

    /// `zk://<ip>:<port>` of member `i` alone: a client that talks to one
    /// side of a partition only.
    ///
    /// # Panics
    /// When there is no member `i`.
    pub fn member_url(&self, i: usize) -> String {
        let m = &self.members[i];
        format!("zk://{}:{}", m.ip, m.ports.client)
    }

    /// The `srvr` mode of member `i`, if it serves.
    pub fn mode(&self, i: usize) -> Option<String> {
        let m = &self.members[i];
        m.process
            .as_ref()
            .and_then(|_| mode_at(m.ip, m.ports.client))
    }

    /// The index of the current leader, if one serves.
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|i| self.mode(*i).as_deref() == Some("leader"))
    }

    /// Waits until `serving` members serve, one of them as leader.
    ///
    /// # Panics
    /// After `timeout`, with the servers' modes and log tails.
    pub fn wait_for_quorum(&self, serving: usize, timeout: Duration) {
        let give_up = Instant::now() + timeout;
        loop {
            let modes: Vec<Option<String>> =
                (0..self.members.len()).map(|i| self.mode(i)).collect();
            let leaders = modes
                .iter()
                .filter(|m| m.as_deref() == Some("leader"))
                .count();
            let followers = modes
                .iter()
                .filter(|m| m.as_deref() == Some("follower"))
                .count();
            if leaders == 1 && leaders + followers >= serving {
                return;
            }
            if Instant::now() >= give_up {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .filter_map(|m| m.process.as_ref().map(ServerProcess::log_tail))
                    .collect();
                panic!(
                    "no ZooKeeper quorum after {timeout:?}: modes {modes:?}\n{}",
                    logs.join("\n----\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            process.kill();
        }
    }

    /// (Re)starts member `i` with its old data directory.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let member = &mut self.members[i];
        member.process = Some(spawn(
            self.dir.path(),
            i + 1,
            &member.config,
            self.lab.as_ref(),
        ));
    }

    /// The ensemble's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
