//! The fault suite on ZooKeeper: one standalone server (shared, or private
//! when the test stops or restarts it; a proxy in front for network
//! faults) and 3-server ensembles whose leader is killed, or cut off from
//! the majority inside network namespaces. Each test records its outcome
//! for `docs/RELIABILITY.md` (`lockkit_tests::faults::report`).
#![cfg(feature = "zookeeper")]

use std::time::Duration;

use lockkit_tests::faults::report::record;
use lockkit_tests::faults::scenario::{self, ClusterControl, ServerControl, Target};
use lockkit_tests::netns::NetLab;
use lockkit_tests::server::random_suffix;
use lockkit_tests::zk::server::{ZkEnsemble, ZkServer};
use lockkit_tests::zk::shared_url;

const TAKER: &str = env!("CARGO_BIN_EXE_taker");

/// The session the takers ask for: past the scenarios' 3 s TTL.
const SESSION: &str = "session_timeout_ms=4000";

/// A fresh chroot below `base` with the takers' session timeout.
fn url(base: &str) -> String {
    format!("{base}/fault-{}?{SESSION}", &random_suffix()[..8])
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("zk://127.0.0.1:<port>")
}

async fn shared() -> (Target, u16) {
    let base = shared_url();
    let port = port_of(&base);
    (Target::new("zookeeper", url(&base), TAKER).await, port)
}

struct Control(ZkServer);

impl ServerControl for Control {
    fn pause(&mut self) {
        self.0.process().signal("STOP");
    }
    fn resume(&mut self) {
        self.0.process().signal("CONT");
    }
    fn kill_and_restart(&mut self) {
        self.0.kill_and_restart();
    }
}

async fn private() -> (Target, Control) {
    let server = tokio::task::spawn_blocking(ZkServer::start)
        .await
        .expect("start a private ZooKeeper");
    (
        Target::new("zookeeper", url(&server.url()), TAKER).await,
        Control(server),
    )
}

/// A 3-server ensemble, optionally inside a network lab (for partitions).
struct Ensemble {
    ensemble: ZkEnsemble,
    chroot: String,
    lab: Option<NetLab>,
}

#[async_trait::async_trait]
impl ClusterControl for Ensemble {
    async fn leader(&mut self) -> usize {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ensemble = &self.ensemble;
            if let Some(leader) = tokio::task::block_in_place(|| ensemble.leader()) {
                return leader;
            }
            assert!(tokio::time::Instant::now() < give_up, "no ZooKeeper leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    fn member_url(&self, i: usize) -> String {
        format!("{}{}?{SESSION}", self.ensemble.member_url(i), self.chroot)
    }
    fn kill(&mut self, i: usize) {
        self.ensemble.kill(i);
    }
    fn restart(&mut self, i: usize) {
        self.ensemble.restart(i);
        self.ensemble.wait_for_quorum(3, Duration::from_secs(60));
    }
    fn isolate(&mut self, i: usize) {
        self.lab.as_ref().expect("an ensemble in a lab").isolate(i);
    }
    fn heal(&mut self) {
        self.lab.as_ref().expect("an ensemble in a lab").heal();
    }
}

async fn ensemble(in_lab: bool) -> (Target, Ensemble) {
    let ensemble = tokio::task::spawn_blocking(move || {
        let chroot = format!("/fault-{}", &random_suffix()[..8]);
        if in_lab {
            let lab = NetLab::create(3);
            let ensemble = ZkEnsemble::start_in(&lab);
            Ensemble {
                ensemble,
                chroot,
                lab: Some(lab),
            }
        } else {
            Ensemble {
                ensemble: ZkEnsemble::start(3),
                chroot,
                lab: None,
            }
        }
    })
    .await
    .expect("start a 3-server ZooKeeper ensemble");
    let url = format!("{}{}?{SESSION}", ensemble.ensemble.url(), ensemble.chroot);
    (Target::new("zookeeper-3", url, TAKER).await, ensemble)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_paused() {
    record(&scenario::holder_paused(&shared().await.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_killed() {
    record(&scenario::holder_killed(&shared().await.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jump() {
    record(&scenario::clock_jump(&shared().await.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_counter() {
    record(&scenario::contended_counter(&shared().await.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_delayed() {
    let (t, port) = shared().await;
    record(&scenario::replies_delayed(&t.proxied(port).await).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_mid_hold() {
    let (t, port) = shared().await;
    record(&scenario::cut_mid_hold(&t.proxied(port).await).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_mid_acquire() {
    let (t, port) = shared().await;
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
async fn ensemble_leader_killed() {
    let (t, mut e) = ensemble(false).await;
    record(&scenario::leader_killed(&t, &mut e).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensemble_leader_partitioned() {
    let (t, mut e) = ensemble(true).await;
    record(&scenario::leader_partitioned(&t, &mut e).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensemble_contended_counter() {
    let (t, _e) = ensemble(false).await;
    record(&scenario::contended_counter(&t).await);
}
