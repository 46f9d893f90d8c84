//! The fault suite on etcd: one member (shared, or private when the test
//! stops or restarts it; a proxy in front for network faults) and
//! 3-member clusters whose leader is killed, or cut off from the majority
//! inside network namespaces. Each test records its outcome for
//! `docs/RELIABILITY.md` (`lockkit_tests::faults::report`).
#![cfg(feature = "etcd")]

use lockkit_tests::etcd::EtcdCluster;
use std::sync::{Arc, OnceLock};

use lockkit_core::LockBackend;
use lockkit_tests::faults::scenario::{self, ClusterControl, Proxied, ServerControl, Target};
use lockkit_tests::netns::NetLab;

const TAKER: &str = env!("CARGO_BIN_EXE_taker");

/// The minimum lease TTL is `ceil(1.5 × election timeout)`: 1 s.
const ELECTION_MS: u32 = 500;

/// A private member shared by the tests that do not stop it (never one
/// named by `LOCKKIT_TEST_ETCD_URL`: the proxy needs it on 127.0.0.1).
async fn shared() -> Target {
    static SERVER: OnceLock<EtcdCluster> = OnceLock::new();
    let url = tokio::task::spawn_blocking(|| {
        SERVER
            .get_or_init(|| EtcdCluster::start(1, ELECTION_MS))
            .url()
    })
    .await
    .expect("start the shared etcd");
    Target::new("etcd", url, TAKER).await
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("etcd://127.0.0.1:<port>")
}

struct Control(EtcdCluster);

impl ServerControl for Control {
    fn pause(&mut self) {
        self.0.signal(0, "STOP");
    }
    fn resume(&mut self) {
        self.0.signal(0, "CONT");
    }
    fn kill_and_restart(&mut self) {
        self.0.restart(0);
    }
}

async fn private() -> (Target, Control) {
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(1, ELECTION_MS))
        .await
        .expect("start a private etcd");
    (
        Target::new("etcd", cluster.url(), TAKER).await,
        Control(cluster),
    )
}

/// A 3-member cluster, optionally inside a network lab (for partitions).
struct Cluster {
    cluster: EtcdCluster,
    lab: Option<NetLab>,
}

#[async_trait::async_trait]
impl ClusterControl for Cluster {
    async fn leader(&mut self) -> usize {
        self.cluster.wait_for_leader().await
    }
    fn member_url(&self, i: usize) -> String {
        self.cluster.member_url(i)
    }
    fn kill(&mut self, i: usize) {
        self.cluster.kill(i);
    }
    fn restart(&mut self, i: usize) {
        self.cluster.restart(i);
    }
    fn isolate(&mut self, i: usize) {
        self.lab.as_ref().expect("a cluster in a lab").isolate(i);
    }
    fn heal(&mut self) {
        self.lab.as_ref().expect("a cluster in a lab").heal();
    }
}

async fn cluster(in_lab: bool) -> (Target, Cluster) {
    let cluster = tokio::task::spawn_blocking(move || {
        if in_lab {
            let lab = NetLab::create(3);
            let cluster = EtcdCluster::start_in(&lab, ELECTION_MS);
            Cluster {
                cluster,
                lab: Some(lab),
            }
        } else {
            Cluster {
                cluster: EtcdCluster::start(3, ELECTION_MS),
                lab: None,
            }
        }
    })
    .await
    .expect("start a 3-member etcd cluster");
    let target = Target::new("etcd-3", cluster.cluster.url(), TAKER).await;
    (target, cluster)
}

async fn proxied() -> (Proxied, Arc<dyn LockBackend>) {
    let t = shared().await;
    let port = port_of(&t.url);
    let inspector = t.inspector().await;
    (t.proxied(port).await, inspector)
}

lockkit_tests::fault_tests! {
    holder_paused: shared().await => |t| scenario::holder_paused(&t);
    holder_killed: shared().await => |t| scenario::holder_killed(&t);
    clock_jump: shared().await => |t| scenario::clock_jump(&t);
    contended_counter: shared().await => |t| scenario::contended_counter(&t);
    replies_delayed: proxied().await => |(p, _)| scenario::replies_delayed(&p);
    cut_mid_hold: proxied().await => |(p, _)| scenario::cut_mid_hold(&p);
    cut_mid_acquire: proxied().await => |(p, inspector)| scenario::cut_mid_acquire(&p, inspector);
    server_paused: private().await => |(t, mut c)| scenario::server_paused(&t, &mut c);
    server_restarted: private().await => |(t, mut c)| scenario::server_restarted(&t, &mut c);
    cluster_leader_killed: cluster(false).await => |(t, mut c)| scenario::leader_killed(&t, &mut c);
    cluster_leader_partitioned: cluster(true).await => |(t, mut c)| scenario::leader_partitioned(&t, &mut c);
    cluster_contended_counter: cluster(false).await => |(t, _c)| scenario::contended_counter(&t);
}
