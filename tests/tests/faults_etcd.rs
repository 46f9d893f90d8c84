//! The fault suite on etcd: one member (shared, or private when the test
//! stops or restarts it; a proxy in front for network faults) and
//! 3-member clusters whose leader is killed, or cut off from the majority
//! inside network namespaces. Each test records its outcome for
//! `docs/RELIABILITY.md` (`lockkit_tests::faults::report`).
#![cfg(feature = "etcd")]

use lockkit_tests::etcd::{EtcdCluster, shared_url};
use lockkit_tests::faults::report::record;
use lockkit_tests::faults::scenario::{self, ClusterControl, ServerControl, Target};
use lockkit_tests::netns::NetLab;

const TAKER: &str = env!("CARGO_BIN_EXE_taker");

/// The minimum lease TTL is `ceil(1.5 × election timeout)`: 1 s.
const ELECTION_MS: u32 = 500;

async fn shared() -> Target {
    Target::new("etcd", shared_url(), TAKER).await
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_paused() {
    record(&scenario::holder_paused(&shared().await).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_killed() {
    record(&scenario::holder_killed(&shared().await).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jump() {
    record(&scenario::clock_jump(&shared().await).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_counter() {
    record(&scenario::contended_counter(&shared().await).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_delayed() {
    let t = shared().await;
    let port = port_of(&t.url);
    record(&scenario::replies_delayed(&t.proxied(port).await).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_mid_hold() {
    let t = shared().await;
    let port = port_of(&t.url);
    record(&scenario::cut_mid_hold(&t.proxied(port).await).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_mid_acquire() {
    let t = shared().await;
    let port = port_of(&t.url);
    let inspector = t.inspector().await;
    record(&scenario::cut_mid_acquire(&t.proxied(port).await, inspector).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_paused() {
    let (t, mut control) = private().await;
    record(&scenario::server_paused(&t, &mut control).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarted() {
    let (t, mut control) = private().await;
    record(&scenario::server_restarted(&t, &mut control).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_leader_killed() {
    let (t, mut c) = cluster(false).await;
    record(&scenario::leader_killed(&t, &mut c).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_leader_partitioned() {
    let (t, mut c) = cluster(true).await;
    record(&scenario::leader_partitioned(&t, &mut c).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_contended_counter() {
    let (t, _c) = cluster(false).await;
    record(&scenario::contended_counter(&t).await);
}
