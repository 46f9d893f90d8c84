//! The fault suite on ZooKeeper: one standalone server (shared, or private
//! when the test stops or restarts it; a proxy in front for network
//! faults) and 3-server ensembles whose leader is killed, or cut off from
//! the majority inside network namespaces. Each test records its outcome
//! for `docs/RELIABILITY.md` (`lockkit_tests::faults::report`).
#![cfg(feature = "zookeeper")]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use lockkit_core::LockBackend;
use lockkit_tests::faults::scenario::{self, ClusterControl, Proxied, ServerControl, Target};
use lockkit_tests::netns::NetLab;
use lockkit_tests::server::random_suffix;
use lockkit_tests::zk::server::{ZkEnsemble, ZkServer};

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

/// A private server shared by the tests that do not stop it (never one
/// named by `LOCKKIT_TEST_ZK_URL`: the proxy needs it on 127.0.0.1).
async fn shared() -> (Target, u16) {
    static SERVER: OnceLock<ZkServer> = OnceLock::new();
    let base = tokio::task::spawn_blocking(|| SERVER.get_or_init(ZkServer::start).url())
        .await
        .expect("start the shared ZooKeeper");
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

async fn proxied() -> (Proxied, Arc<dyn LockBackend>) {
    let (t, port) = shared().await;
    let inspector = t.inspector().await;
    (t.proxied(port).await, inspector)
}

lockkit_tests::fault_tests! {
    holder_paused: shared().await => |(t, _)| scenario::holder_paused(&t);
    holder_killed: shared().await => |(t, _)| scenario::holder_killed(&t);
    clock_jump: shared().await => |(t, _)| scenario::clock_jump(&t);
    contended_counter: shared().await => |(t, _)| scenario::contended_counter(&t);
    replies_delayed: proxied().await => |(p, _)| scenario::replies_delayed(&p);
    cut_mid_hold: proxied().await => |(p, _)| scenario::cut_mid_hold(&p);
    cut_mid_acquire: proxied().await => |(p, inspector)| scenario::cut_mid_acquire(&p, inspector);
    server_paused: private().await => |(t, mut c)| scenario::server_paused(&t, &mut c);
    server_restarted: private().await => |(t, mut c)| scenario::server_restarted(&t, &mut c);
    ensemble_leader_killed: ensemble(false).await => |(t, mut e)| scenario::leader_killed(&t, &mut e);
    ensemble_leader_partitioned: ensemble(true).await => |(t, mut e)| scenario::leader_partitioned(&t, &mut e);
    ensemble_contended_counter: ensemble(false).await => |(t, _e)| scenario::contended_counter(&t);
}
