//! Private ZooKeeper servers: a standalone server and a 3-server ensemble,
//! each from the Debian `zookeeper` package's `zkServer.sh start-foreground`
//! with a generated configuration in a temporary directory and free ports.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::server::{ServerProcess, free_port, require_binary};

/// Where the Debian package puts the start script.
const ZK_BIN: &str = "/usr/share/zookeeper/bin";

/// Server tick: 200 ms, so sessions may be as short as 400 ms and a
/// follower drops a silent leader after `syncLimit` = 5 ticks (1 s).
const TICK_MS: u64 = 200;

/// How long a server (a JVM on a loaded 2-core machine) may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn zk_server_script() -> PathBuf {
    require_binary(
        "zkServer.sh",
        &[ZK_BIN],
        "apt-get install -y zookeeper (Debian's ZooKeeper 3.8 package; needs a Java runtime)",
    )
}

/// Sends a four-letter command (`srvr`, `ruok`) and returns the reply.
pub fn four_letter(port: u16, command: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(command.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    Some(reply)
}

/// The `Mode:` line of `srvr` (`standalone`, `leader`, `follower`), if the
/// server is serving.
pub fn mode(port: u16) -> Option<String> {
    let reply = four_letter(port, "srvr")?;
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

fn write_config(dir: &Path, id: usize, ports: Ports, peers: &[Ports]) -> PathBuf {
    let data = dir.join(format!("data{id}"));
    std::fs::create_dir_all(&data).expect("create a ZooKeeper data dir");
    let mut cfg = format!(
        "tickTime={TICK_MS}\n\
         initLimit=50\n\
         syncLimit=5\n\
         dataDir={}\n\
         clientPort={}\n\
         clientPortAddress=127.0.0.1\n\
         admin.enableServer=false\n\
         4lw.commands.whitelist=srvr,ruok,mntr\n\
         minSessionTimeout=400\n\
         maxSessionTimeout=30000\n\
         maxClientCnxns=0\n",
        data.display(),
        ports.client
    );
    if peers.len() > 1 {
        std::fs::write(data.join("myid"), format!("{id}\n")).expect("write myid");
        for (i, p) in peers.iter().enumerate() {
            cfg.push_str(&format!(
                "server.{}=127.0.0.1:{}:{}\n",
                i + 1,
                p.peer,
                p.election
            ));
        }
    }
    let path = dir.join(format!("zoo{id}.cfg"));
    std::fs::write(&path, cfg).expect("write the ZooKeeper config");
    path
}

fn spawn(dir: &Path, id: usize, config: &Path) -> ServerProcess {
    let script = zk_server_script();
    // The Debian scripts fix CLASSPATH and log locations; add a logging
    // binding and send logs to the console (our log file).
    let classpath = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:\
                     /usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar";
    let jvm = format!(
        "-Xmx160m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
         -Dzookeeper.root.logger=INFO,CONSOLE -Dzookeeper.log.dir={} -cp {classpath}",
        dir.display()
    );
    let mut command = Command::new(script);
    command
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
        let config = write_config(dir.path(), 1, ports, &[ports]);
        let mut process = spawn(dir.path(), 1, &config);
        let port = ports.client;
        process.wait_until(START_TIMEOUT, || {
            mode(port).is_some_and(|m| m == "standalone")
        });
        Self { dir, port, process }
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

/// One member of an ensemble.
#[derive(Debug)]
struct Member {
    ports: Ports,
    config: PathBuf,
    process: Option<ServerProcess>,
}

/// A private ensemble of ZooKeeper servers on 127.0.0.1.
#[derive(Debug)]
pub struct ZkEnsemble {
    dir: TempDir,
    members: Vec<Member>,
}

impl ZkEnsemble {
    /// Starts `size` servers and waits until one leads and the others
    /// follow.
    ///
    /// # Panics
    /// When `zkServer.sh` is missing or no quorum forms in time.
    pub fn start(size: usize) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let ports: Vec<Ports> = (0..size)
            .map(|_| Ports {
                client: free_port(),
                peer: free_port(),
                election: free_port(),
            })
            .collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let config = write_config(dir.path(), i + 1, *p, &ports);
                Member {
                    ports: *p,
                    config,
                    process: None,
                }
            })
            .collect();
        let mut ensemble = Self { dir, members };
        for i in 0..size {
            ensemble.restart(i);
        }
        ensemble.wait_for_quorum(size, START_TIMEOUT);
        ensemble
    }

    /// `127.0.0.1:<port>,…` of every member.
    pub fn hosts(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.ports.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `zk://<every member>`.
    pub fn url(&self) -> String {
        format!("zk://{}", self.hosts())
    }

    /// The `srvr` mode of member `i`, if it serves.
    pub fn mode(&self, i: usize) -> Option<String> {
        self.members[i]
            .process
            .as_ref()
            .and_then(|_| mode(self.members[i].ports.client))
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
        member.process = Some(spawn(self.dir.path(), i + 1, &member.config));
    }

    /// The ensemble's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
