//! Network partitions between the members of a cluster, with Linux network
//! namespaces and `iptables` DROP rules: [`NetLab`].
//!
//! # Topology
//!
//! ```text
//!    member ns lk-<pid>-<id>-m0    member ns …-m1         member ns …-m2
//!      lo, eth0 10.X.Y.1/24          eth0 10.X.Y.2/24       eth0 10.X.Y.3/24
//!            │ veth                    │ veth                 │ veth
//!   ┌────────┴────────── switch ns …-sw: bridge br0 ──────────┴────────┐
//!   │   ports p0, p1, p2, host (no addresses, empty iptables)          │
//!   └──────────────────────────────────┬───────────────────────────────┘
//!                                      │ veth
//!              root namespace (the test process): lk<id>h 10.X.Y.254/24
//! ```
//!
//! Every member namespace has one veth link to a bridge that lives in a
//! namespace of its own (the "switch"); the test process gets one more veth
//! on that bridge, with an address on the same /24, so its clients reach
//! every member directly, at layer 2, without any routing. The /24 is a
//! random `10.X.Y.0/24` that no route or address of the root namespace
//! touches, so nothing ever leaves the lab: the only addresses in it are the
//! members' and the test's own.
//!
//! # Why this shape
//!
//! - **No forwarding in the root namespace.** Docker may have set the root
//!   namespace's `FORWARD` policy to DROP, and with `br_netfilter` loaded a
//!   bridge there would send its frames through those rules. The bridge
//!   therefore sits in its own namespace, whose iptables are empty, and the
//!   root namespace only ever talks on its own veth. Nothing here changes a
//!   root-namespace rule or sysctl.
//! - **Rules live in the member namespaces.** A partition is a set of DROP
//!   rules (`INPUT -s peer`, `OUTPUT -d peer`) inside each member's own
//!   namespace, replaced as a whole with `iptables-restore`. The switch keeps
//!   carrying every frame; what a member may say to whom is decided at the
//!   member. Dropping (not rejecting) is what a real partition looks like:
//!   packets vanish, connections hang until their timeouts.
//! - **The host stays reachable** from every member (unless
//!   [`blackout`](NetLab::blackout)): in a real partition each client keeps
//!   talking to the members on its side, and the test can still ask every
//!   member for its own view of the cluster.
//!
//! # Clean-up
//!
//! Dropping the lab (the last handle to it: fixtures started in a lab keep
//! one) deletes its namespaces, and with them the veth links and the bridge.
//! A watchdog shell deletes them too once the test process is gone, and
//! [`NetLab::create`] deletes leftovers of crashed runs: namespace names
//! carry the creating process's id (`lk-<pid>-<id>-…`), the host link carries
//! it in its alias (`lockkit-netlab:pid=<pid>`).
//!
//! Needs root (`CAP_NET_ADMIN`), `ip` (iproute2), `iptables-restore`
//! (iptables), `bash` and `timeout` (coreutils).

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::server::require_binary;

/// Namespace names start with this, then the creator's pid.
const NS_PREFIX: &str = "lk-";

/// The alias of a lab's root-namespace link, then the creator's pid.
const ALIAS_PREFIX: &str = "lockkit-netlab:pid=";

/// The last octet of the test process's (host's) address on the segment.
const HOST_OCTET: u8 = 254;

/// A port nothing listens on: a refused connection proves reachability.
const PROBE_PORT: u16 = 9;

/// How to get the tools when they are missing.
const TOOLS_HINT: &str = "apt-get install -y iproute2 iptables";

/// Serialises subnet choice and creation between the labs of one process.
static CREATING: Mutex<()> = Mutex::new(());

/// A set of network namespaces, one per cluster member, on one private L2
/// segment that the test process is on too; partitions between members are
/// made with iptables DROP rules inside the member namespaces. See the
/// [module documentation](self) for the topology.
///
/// Start servers in member `i` with [`command`](Self::command); they listen
/// on [`member_ip(i)`](Self::member_ip) and the test reaches them there.
/// Dropping the last handle deletes everything (fixtures started in a lab,
/// such as `EtcdCluster::start_in`, hold a handle, so the namespaces live as
/// long as the servers in them).
#[derive(Debug)]
pub struct NetLab {
    inner: Arc<Lab>,
}

/// What a lab is made of; deleted when the last [`NetLab`] handle goes.
#[derive(Debug)]
struct Lab {
    ip: PathBuf,
    iptables_restore: PathBuf,
    subnet: [u8; 3],
    switch: String,
    members: Vec<String>,
    host_link: String,
    cuts: Mutex<Cuts>,
}

/// Who cannot talk to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cuts {
    /// `between[i][j]`: members `i` and `j` drop each other's packets.
    between: Vec<Vec<bool>>,
    /// `host[i]`: member `i` drops the host's packets.
    host: Vec<bool>,
}

impl Cuts {
    fn none(members: usize) -> Self {
        Self {
            between: vec![vec![false; members]; members],
            host: vec![false; members],
        }
    }
}

impl NetLab {
    /// Creates `members` network namespaces, each with one veth link to a
    /// shared L2 segment (a bridge in a switch namespace), plus one address
    /// for the test process (root namespace) on the same segment so the
    /// test's clients reach every member directly. `lo` is up in every
    /// member namespace. Connectivity (host to every member, member to
    /// member) is checked before this returns. Leftovers of crashed runs
    /// are deleted first.
    ///
    /// # Panics
    /// When not root, when `ip`/`iptables-restore` are missing (the message
    /// says how to fix either), when `members` is 0 or above 250, or when a
    /// step fails or the lab is not connected (with diagnostics).
    pub fn create(members: usize) -> NetLab {
        assert!(
            (1..=250).contains(&members),
            "a NetLab has 1 to 250 members, not {members}"
        );
        require_root();
        let ip = require_binary("ip", &["/usr/sbin", "/sbin", "/usr/bin"], TOOLS_HINT);
        let iptables_restore =
            require_binary("iptables-restore", &["/usr/sbin", "/sbin"], TOOLS_HINT);
        for tool in ["bash", "timeout"] {
            require_binary(
                tool,
                &["/usr/bin", "/bin"],
                "apt-get install -y bash coreutils",
            );
        }
        let _creating = CREATING.lock().unwrap_or_else(PoisonError::into_inner);
        remove_leftovers(&ip);

        let pid = std::process::id();
        let id = format!("{:06x}", fastrand::u32(..0x0100_0000));
        let subnet = free_subnet(&ip);
        let lab = Lab {
            switch: format!("{NS_PREFIX}{pid}-{id}-sw"),
            members: (0..members)
                .map(|i| format!("{NS_PREFIX}{pid}-{id}-m{i}"))
                .collect(),
            host_link: format!("lk{id}h"),
            ip,
            iptables_restore,
            subnet,
            cuts: Mutex::new(Cuts::none(members)),
        };
        lab.watch_parent();
        // From here on a panic drops `lab`, which deletes what was made.
        lab.build();
        lab.check_connectivity();
        NetLab {
            inner: Arc::new(lab),
        }
    }

    /// Another handle to the same lab, for fixtures that must keep the
    /// namespaces alive as long as their servers.
    #[cfg(any(feature = "etcd", feature = "zookeeper"))]
    pub(crate) fn share(&self) -> NetLab {
        NetLab {
            inner: Arc::clone(&self.inner),
        }
    }

    /// How many members the lab has.
    pub fn len(&self) -> usize {
        self.inner.members.len()
    }

    /// Always false: a lab has at least one member.
    pub fn is_empty(&self) -> bool {
        self.inner.members.is_empty()
    }

    /// Member `i`'s address, `10.X.Y.(i+1)`.
    ///
    /// # Panics
    /// When there is no member `i`.
    pub fn member_ip(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.len(), "no member {i} in a lab of {}", self.len());
        self.inner.member_ip(i)
    }

    /// The test process's (root namespace's) address on the segment,
    /// `10.X.Y.254`: what servers see as their clients' address.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.inner.host_ip()
    }

    /// The name of member `i`'s network namespace (for `ip netns exec`).
    ///
    /// # Panics
    /// When there is no member `i`.
    pub fn namespace(&self, i: usize) -> &str {
        &self.inner.members[i]
    }

    /// `ip netns exec <namespace i> <program>`: add arguments, environment,
    /// working directory as usual. `ip` execs the program, so the child's
    /// pid is the program's and killing the child kills the program.
    ///
    /// # Panics
    /// When there is no member `i`.
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(&self.inner.ip);
        command
            .args(["netns", "exec"])
            .arg(&self.inner.members[i])
            .arg(program);
        command
    }

    /// Partitions the members: members in different groups cannot exchange
    /// packets (DROP rules inside the member namespaces, `INPUT` and
    /// `OUTPUT`, by peer address); members of one group talk freely. A
    /// member named in no group is a group of its own. The host stays
    /// reachable from every member. Replaces any previous partition or
    /// blackout. Established connections between the sides hang (their
    /// packets are dropped) until their own timeouts.
    ///
    /// # Panics
    /// When a group names a member that does not exist or a member is in
    /// two groups, or when `iptables-restore` fails.
    pub fn partition(&self, groups: &[&[usize]]) {
        let n = self.len();
        let mut group_of: Vec<Option<usize>> = vec![None; n];
        for (g, members) in groups.iter().enumerate() {
            for &m in *members {
                assert!(m < n, "partition names member {m}; the lab has {n}");
                assert!(
                    group_of[m].is_none(),
                    "partition names member {m} in two groups: {groups:?}"
                );
                group_of[m] = Some(g);
            }
        }
        let mut cuts = Cuts::none(n);
        for i in 0..n {
            for j in 0..n {
                let together = i == j || (group_of[i].is_some() && group_of[i] == group_of[j]);
                cuts.between[i][j] = !together;
            }
        }
        self.inner.apply(cuts);
    }

    /// Cuts member `i` off from every other member (not from the host): a
    /// partition `[[i], everyone else]`, replacing any previous one.
    ///
    /// # Panics
    /// As [`partition`](Self::partition).
    pub fn isolate(&self, i: usize) {
        let rest: Vec<usize> = (0..self.len()).filter(|m| *m != i).collect();
        self.partition(&[&[i], &rest]);
    }

    /// Cuts member `i` off from every other member *and* from the host (its
    /// clients): a full blackout of `i`. Adds to the rules in force (other
    /// partitions and blackouts stay).
    ///
    /// # Panics
    /// When there is no member `i` or `iptables-restore` fails.
    pub fn blackout(&self, i: usize) {
        let n = self.len();
        assert!(i < n, "no member {i} in a lab of {n}");
        let mut cuts = self.inner.current_cuts();
        for j in (0..n).filter(|j| *j != i) {
            cuts.between[i][j] = true;
            cuts.between[j][i] = true;
        }
        cuts.host[i] = true;
        self.inner.apply(cuts);
    }

    /// Removes every rule: full connectivity again.
    ///
    /// # Panics
    /// When `iptables-restore` fails.
    pub fn heal(&self) {
        self.inner.apply(Cuts::none(self.len()));
    }

    /// Whether a TCP connection attempt from member `i`'s namespace to
    /// `address` gets an answer (accepted or refused) within 2 s: a probe
    /// for tests that want to see a partition in force.
    ///
    /// # Panics
    /// When there is no member `i` or the probe cannot be run.
    pub fn can_reach(&self, i: usize, address: Ipv4Addr) -> bool {
        self.inner.probe(&self.inner.members[i], address)
    }
}

impl Lab {
    fn member_ip(&self, i: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        let last = u8::try_from(i + 1).expect("at most 250 members");
        Ipv4Addr::new(a, b, c, last)
    }

    fn host_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, HOST_OCTET)
    }

    /// Makes the namespaces, the bridge, the links and the addresses.
    fn build(&self) {
        let pid = std::process::id();
        let host_cidr = format!("{}/24", self.host_ip());
        let mut root = String::new();
        let _ = writeln!(root, "netns add {}", self.switch);
        for ns in &self.members {
            let _ = writeln!(root, "netns add {ns}");
        }
        let _ = writeln!(root, "link add name br0 netns {} type bridge", self.switch);
        for (i, ns) in self.members.iter().enumerate() {
            let _ = writeln!(
                root,
                "link add name eth0 netns {ns} type veth peer name p{i} netns {}",
                self.switch
            );
        }
        let link = &self.host_link;
        let _ = writeln!(
            root,
            "link add name {link} type veth peer name host netns {}",
            self.switch
        );
        let _ = writeln!(root, "link set dev {link} alias {ALIAS_PREFIX}{pid}");
        // No IPv6 link-local address (and so no IPv6 chatter) on the host's end.
        let _ = writeln!(root, "link set dev {link} addrgenmode none");
        let _ = writeln!(root, "addr add {host_cidr} dev {link}");
        let _ = writeln!(root, "link set dev {link} up");
        self.ip_batch(None, &root);

        let mut switch = String::from(
            "link set lo up\nlink set br0 type bridge stp_state 0 forward_delay 0\nlink set br0 up\n",
        );
        for i in 0..self.members.len() {
            let _ = writeln!(switch, "link set p{i} master br0\nlink set p{i} up");
        }
        switch.push_str("link set host master br0\nlink set host up\n");
        self.ip_batch(Some(&self.switch), &switch);

        for (i, ns) in self.members.iter().enumerate() {
            let script = format!(
                "link set lo up\naddr add {}/24 dev eth0\nlink set eth0 up\n",
                self.member_ip(i)
            );
            self.ip_batch(Some(ns), &script);
        }
        // Empty rule sets: proves iptables works in the namespaces.
        self.apply(Cuts::none(self.members.len()));
    }

    /// Runs `ip [-n ns] -batch -` with `script` on stdin.
    fn ip_batch(&self, namespace: Option<&str>, script: &str) {
        let mut command = Command::new(&self.ip);
        if let Some(ns) = namespace {
            command.args(["-n", ns]);
        }
        command.args(["-batch", "-"]);
        if let Err(e) = run_with_input(&mut command, script) {
            panic!(
                "setting up the network lab failed{}: {e}\nscript:\n{script}\n\
                 (NetLab needs root with CAP_NET_ADMIN and iproute2: {TOOLS_HINT})",
                namespace.map(|n| format!(" in {n}")).unwrap_or_default()
            );
        }
    }

    /// Checks that the host reaches every member and every member reaches
    /// every other one; panics with the lab's state otherwise.
    fn check_connectivity(&self) {
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut missing: Vec<String>;
        loop {
            missing = Vec::new();
            for i in 0..self.members.len() {
                let address = (self.member_ip(i), PROBE_PORT).into();
                let answered = match TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
                };
                if !answered {
                    missing.push(format!("host -> m{i} ({})", self.member_ip(i)));
                }
            }
            let n = self.members.len();
            for i in 0..n {
                for j in (0..n).filter(|j| *j != i) {
                    if !self.probe(&self.members[i], self.member_ip(j)) {
                        missing.push(format!("m{i} -> m{j} ({})", self.member_ip(j)));
                    }
                }
            }
            if missing.is_empty() || Instant::now() >= give_up {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            missing.is_empty(),
            "the network lab is not connected: {missing:?}\n{}",
            self.diagnostics()
        );
    }

    /// Whether a TCP connect from `namespace` to `address` gets an answer.
    fn probe(&self, namespace: &str, address: Ipv4Addr) -> bool {
        let output = Command::new(&self.ip)
            .args(["netns", "exec", namespace, "timeout", "2", "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{address}/{PROBE_PORT}"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run a probe in {namespace}: {e}"));
        output.status.success() || String::from_utf8_lossy(&output.stderr).contains("refused")
    }

    /// Addresses, links and rules of every part of the lab.
    fn diagnostics(&self) -> String {
        let mut text = String::new();
        let show = |args: &[&str]| -> String {
            Command::new(&self.ip)
                .args(args)
                .output()
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_else(|e| e.to_string())
        };
        let _ = writeln!(
            text,
            "--- root: {} ---\n{}",
            self.host_link,
            show(&["-br", "addr", "show", "dev", &self.host_link])
        );
        let _ = writeln!(
            text,
            "--- {} ---\n{}",
            self.switch,
            show(&["-n", &self.switch, "-br", "link"])
        );
        for ns in &self.members {
            let _ = writeln!(text, "--- {ns} ---\n{}", show(&["-n", ns, "-br", "addr"]));
            let rules = Command::new(&self.ip)
                .args(["netns", "exec", ns, "iptables", "-S"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let _ = writeln!(text, "{rules}");
        }
        text
    }

    fn current_cuts(&self) -> Cuts {
        self.cuts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces every member namespace's filter table with the rules for
    /// `cuts`.
    fn apply(&self, cuts: Cuts) {
        let mut state = self.cuts.lock().unwrap_or_else(PoisonError::into_inner);
        let host = self.host_ip();
        for (i, ns) in self.members.iter().enumerate() {
            let mut rules = String::from(
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
            );
            let mut drop = |peer: Ipv4Addr| {
                let _ = writeln!(
                    rules,
                    "-A INPUT -s {peer}/32 -j DROP\n-A OUTPUT -d {peer}/32 -j DROP"
                );
            };
            for j in (0..self.members.len()).filter(|j| *j != i) {
                if cuts.between[i][j] || cuts.between[j][i] {
                    drop(self.member_ip(j));
                }
            }
            if cuts.host[i] {
                drop(host);
            }
            rules.push_str("COMMIT\n");
            let mut command = Command::new(&self.ip);
            command
                .args(["netns", "exec", ns])
                .arg(&self.iptables_restore)
                .arg("-w");
            if let Err(e) = run_with_input(&mut command, &rules) {
                panic!(
                    "iptables-restore in {ns} failed: {e}\nrules:\n{rules}\n\
                     (NetLab needs iptables: {TOOLS_HINT})"
                );
            }
        }
        *state = cuts;
    }

    /// A shell that deletes the lab once this test process is gone.
    fn watch_parent(&self) {
        let ip = self.ip.display();
        let mut script = format!("'{ip}' link del '{}' 2>/dev/null;", self.host_link);
        for ns in std::iter::once(&self.switch).chain(&self.members) {
            let _ = write!(script, " '{ip}' netns del '{ns}' 2>/dev/null;");
        }
        crate::server::after_this_process(&script);
    }
}

impl Drop for Lab {
    /// Kills what still runs in the member namespaces, then deletes the
    /// host link and every namespace (and with them the veth links and the
    /// bridge). Errors are ignored: parts may already be gone.
    fn drop(&mut self) {
        for ns in &self.members {
            let pids = Command::new(&self.ip)
                .args(["netns", "pids", ns])
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill")
                    .args(["-9", pid])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let quiet = |args: &[&str]| {
            let _ = Command::new(&self.ip)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&["link", "del", &self.host_link]);
        quiet(&["netns", "del", &self.switch]);
        for ns in &self.members {
            quiet(&["netns", "del", ns]);
        }
    }
}

/// Runs `command` with `input` on stdin; `Err` carries its output.
fn run_with_input(command: &mut Command, input: &str) -> Result<(), String> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("cannot write to {command:?}: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} exited with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Panics with what to do unless this process runs as root.
fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .map(str::to_owned);
    assert!(
        euid.as_deref() == Some("0"),
        "NetLab (network namespaces, veth links, iptables) needs root: run the test as root \
         (e.g. `sudo -E cargo test …`, or in a container with CAP_NET_ADMIN and CAP_SYS_ADMIN); \
         this process's effective uid is {euid:?}. It also needs iproute2 and iptables \
         ({TOOLS_HINT})."
    );
}

/// The output of `ip <args>`, empty when it fails.
fn ip_output(ip: &Path, args: &[&str]) -> String {
    Command::new(ip)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether a process with this id exists.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces and host links of labs whose creating process is
/// gone (crashed runs; their watchdogs should have done it).
fn remove_leftovers(ip: &Path) {
    let own = std::process::id();
    let stale = |pid: &str| pid.parse::<u32>().is_ok_and(|p| p != own && !alive(p));
    for line in ip_output(ip, &["-o", "link", "show"]).lines() {
        let mut words = line.split_whitespace();
        let name = words
            .nth(1)
            .map(|n| n.trim_end_matches(':'))
            .and_then(|n| n.split('@').next())
            .unwrap_or_default();
        let Some(alias) = line.split_whitespace().skip_while(|w| *w != "alias").nth(1) else {
            continue;
        };
        if let Some(pid) = alias.strip_prefix(ALIAS_PREFIX)
            && name.starts_with("lk")
            && stale(pid)
        {
            let _ = Command::new(ip)
                .args(["link", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
    for line in ip_output(ip, &["netns", "list"]).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if stale(pid) {
            let _ = Command::new(ip)
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A random `10.X.Y` /24 that overlaps no route and no address of the root
/// namespace.
fn free_subnet(ip: &Path) -> [u8; 3] {
    let mut taken: Vec<(u32, u32)> = Vec::new();
    let listing = format!(
        "{}\n{}",
        ip_output(ip, &["-4", "route", "show", "table", "all"]),
        ip_output(ip, &["-4", "-o", "addr", "show"])
    );
    for word in listing.split_whitespace() {
        let (address, len) = match word.split_once('/') {
            Some((a, l)) => (a, l.parse::<u32>().unwrap_or(32)),
            None => (word, 32),
        };
        if let Ok(address) = address.parse::<Ipv4Addr>()
            && (1..=32).contains(&len)
        {
            taken.push((u32::from(address), len));
        }
    }
    for _ in 0..1000 {
        let candidate = [10, fastrand::u8(100..=250), fastrand::u8(..)];
        let net = u32::from(Ipv4Addr::new(candidate[0], candidate[1], candidate[2], 0));
        let clash = taken.iter().any(|&(address, len)| {
            let common = len.min(24);
            (address ^ net) >> (32 - common) == 0
        });
        if !clash {
            return candidate;
        }
    }
    panic!("no free 10.x.y.0/24 for a network lab; routes and addresses:\n{listing}");
}
