//! A private 3-master Redis Cluster (no replicas) on free ports.

use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::server::INSTALL_HINT;
use crate::server::{ServerProcess, free_port, require_binary, run_to_completion};

/// One cluster node.
#[derive(Debug)]
pub struct ClusterNode {
    /// The node's process.
    pub process: ServerProcess,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    _dir: TempDir,
}

/// Three `redis-server --cluster-enabled yes` masters joined with
/// `redis-cli --cluster create`, killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
}

impl RedisCluster {
    /// Starts three masters and creates the cluster (all 16384 slots
    /// assigned), then waits until every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// When `redis-server`/`redis-cli` are missing (the message says how to
    /// get them) or the cluster does not form.
    pub fn start() -> Self {
        let server = require_binary("redis-server", &[], INSTALL_HINT);
        let cli = require_binary("redis-cli", &[], "apt-get install -y redis-tools");
        let mut nodes = Vec::new();
        for i in 0..3 {
            // The cluster is kept in a static and never dropped.
            let dir = super::server::shared_data_dir();
            let port = free_port();
            // Redis 7 takes the bus port explicitly, so ephemeral ports
            // above 55535 work too.
            let bus = free_port();
            let mut command = Command::new(&server);
            command
                .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
                .args(["--port", &port.to_string()])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "3000"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path());
            let log = dir.path().join("redis.log");
            let mut process =
                ServerProcess::spawn(&format!("redis-server cluster node {i}"), command, &log);
            process.wait_for_port(port, Duration::from_secs(20));
            nodes.push(ClusterNode {
                process,
                port,
                _dir: dir,
            });
        }
        let mut create = Command::new(&cli);
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        run_to_completion("redis-cli --cluster create", &mut create);
        let mut cluster = Self { nodes };
        let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
        for node in &mut cluster.nodes {
            let port = node.port;
            let ports = ports.clone();
            node.process.wait_until(Duration::from_secs(30), move || {
                let Ok(mut conn) = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                else {
                    return false;
                };
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut conn)
                    .unwrap_or_default();
                let slots: redis::Value = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query(&mut conn)
                    .unwrap_or(redis::Value::Nil);
                // Every node must know all three masters.
                let slots = format!("{slots:?}");
                info.contains("cluster_state:ok")
                    && ports.iter().all(|p| slots.contains(&p.to_string()))
            });
        }
        cluster
    }

    /// The lockkit URL: first node as host, the others as extra seeds,
    /// `cluster=true`.
    pub fn url(&self) -> String {
        let others: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!(
            "redis://127.0.0.1:{}/?cluster=true&nodes={}",
            self.nodes[0].port,
            others.join(",")
        )
    }

    /// The plain URLs of the nodes, for raw cluster clients.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    /// The nodes.
    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }
}
