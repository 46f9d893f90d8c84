//! The fault suite on Redis: private servers for the plain (`fifo=false`)
//! and FIFO modes, a proxy in front for network faults, servers stopped,
//! killed and restarted with and without `appendfsync always`, a Redis
//! Cluster, and a primary/replica pair whose replica is promoted after an
//! acknowledged grant it never received. Each test records its outcome for
//! `docs/RELIABILITY.md` (`lockkit_tests::faults::report`).
#![cfg(feature = "redis")]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use lockkit_core::LockBackend;
use lockkit_tests::faults::event::Kind;
use lockkit_tests::faults::report::{Outcome, record};
use lockkit_tests::faults::scenario::{self, Proxied, STEP, ServerControl, TTL, Target, lock_name};
use lockkit_tests::faults::store::FencedStore;
use lockkit_tests::faults::taker::{History, Taker, granted};
use lockkit_tests::proxy::FaultProxy;
use lockkit_tests::redis::{RedisConfig, RedisServer, shared_cluster_url};

const TAKER: &str = env!("CARGO_BIN_EXE_taker");

struct Control(RedisServer);

impl ServerControl for Control {
    fn pause(&mut self) {
        self.0.process().signal("STOP");
    }
    fn resume(&mut self) {
        self.0.process().signal("CONT");
    }
    fn kill_and_restart(&mut self) {
        self.0.kill();
        self.0.restart();
    }
}

/// A private server (so faults never touch another test's) and a target
/// on it in `fifo` mode.
async fn private(backend: &'static str, fifo: bool, config: RedisConfig) -> (Target, Control) {
    let server = tokio::task::spawn_blocking(move || RedisServer::start(config))
        .await
        .expect("start redis-server");
    let url = format!("{}?fifo={fifo}", server.url());
    (Target::new(backend, url, TAKER).await, Control(server))
}

async fn plain() -> (Target, Control) {
    private("redis", false, RedisConfig::default()).await
}

async fn fifo() -> (Target, Control) {
    private("redis-fifo", true, RedisConfig::default()).await
}

async fn cluster() -> Target {
    let url = format!("{}&fifo=false", shared_cluster_url());
    Target::new("redis-cluster", url, TAKER).await
}

/// Waits until `replica` reports its link to the primary up.
fn wait_replicating(replica: &mut RedisServer) {
    let mut raw = replica.raw();
    replica.process().wait_until(Duration::from_secs(30), || {
        redis::cmd("INFO")
            .arg("replication")
            .query::<String>(&mut raw)
            .is_ok_and(|info| info.contains("master_link_status:up"))
    });
}

/// 7. A grant acknowledged by the primary never reaches the replica (the
///    replication link runs through a proxy that is switched to a
///    blackhole), the primary dies, the replica is promoted with
///    `REPLICAOF NO ONE`, and a second client is granted there. Redis
///    cannot prevent the double grant (asynchronous replication); the test
///    shows that the fenced store refuses the second holder's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_promoted() {
    let mut outcome = Outcome::new("redis", "replica-promoted");
    let (mut primary, mut replica) = tokio::task::spawn_blocking(|| {
        (
            RedisServer::start(RedisConfig::default()),
            RedisServer::start(RedisConfig::default()),
        )
    })
    .await
    .expect("start a primary and a replica");
    let link = FaultProxy::start((Ipv4Addr::LOCALHOST, primary.port()).into()).await;
    let link_port = link.port();
    tokio::task::block_in_place(|| {
        let _: () = redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(link_port)
            .query(&mut replica.raw())
            .expect("REPLICAOF");
        wait_replicating(&mut replica);
    });
    let history = History::default();
    let store = FencedStore::start().await;
    let lock = lock_name("failover");
    let primary_url = format!("{}?fifo=false", primary.url());
    let replica_url = format!("{}?fifo=false", replica.url());
    let mut a = Taker::spawn(TAKER, &primary_url, "a", &history).await;

    // From here on nothing the primary writes reaches the replica.
    link.set_blackhole(true);
    let acquire = format!("acquire {lock} {} {}", TTL.as_millis(), STEP.as_millis());
    let ga = a.call(&acquire, "acquire", STEP).await;
    assert!(granted(&ga), "a was not granted on the primary: {ga:?}");
    let wa = a
        .call(&format!("write {} 1", store.addr()), "write", STEP)
        .await;
    assert_eq!(wa.ev, Kind::Ok, "a's write: {wa:?}");
    tokio::task::block_in_place(|| {
        primary.kill();
        let _: () = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query(&mut replica.raw())
            .expect("REPLICAOF NO ONE");
    });

    let mut b = Taker::spawn(TAKER, &replica_url, "b", &history).await;
    let gb = b.call(&acquire, "acquire", STEP).await;
    assert!(
        granted(&gb),
        "b was not granted on the promoted replica: {gb:?}"
    );
    let a_believes = a.call("check", "check", STEP).await;
    let wb = b
        .call(&format!("write {} 2", store.addr()), "write", STEP)
        .await;
    outcome
        .figure(
            "tokens",
            format!(
                "a {} on the primary, b {} on the promoted replica",
                ga.token_text(),
                gb.token_text()
            ),
        )
        .figure(
            "a_still_held_when_b_was_granted",
            a_believes.held == Some(true),
        )
        .figure(
            "b_write",
            wb.error.clone().unwrap_or_else(|| "accepted".into()),
        );
    if a_believes.held == Some(true) {
        outcome.violated(format!(
            "two holders at once: a still held token {} when b was granted token {}",
            ga.token_text(),
            gb.token_text()
        ));
    }
    if gb.token <= ga.token {
        outcome.violated(format!(
            "the promoted replica granted token {} again (a held {})",
            gb.token_text(),
            ga.token_text()
        ));
    }
    // Whatever Redis did, the fence must not let both holders write.
    assert_eq!(
        wb.ev,
        Kind::Fail,
        "the fenced store accepted the second holder's write: {wb:?}"
    );
    assert_eq!(
        store.value(),
        1,
        "the store's value changed under the second holder"
    );
    record(&outcome);
}

async fn aof() -> (Target, Control) {
    let config = RedisConfig {
        aof_always: true,
        ..RedisConfig::default()
    };
    private("redis-aof", false, config).await
}

/// A target behind a proxy, an inspector on it, and the server.
async fn proxied(
    target: impl std::future::Future<Output = (Target, Control)>,
) -> (Proxied, Arc<dyn LockBackend>, Control) {
    let (t, server) = target.await;
    let port = server.0.port();
    let inspector = t.inspector().await;
    (t.proxied(port).await, inspector, server)
}

lockkit_tests::fault_tests! {
    holder_paused: plain().await => |(t, _server)| scenario::holder_paused(&t);
    holder_killed: plain().await => |(t, _server)| scenario::holder_killed(&t);
    clock_jump: plain().await => |(t, _server)| scenario::clock_jump(&t);
    contended_counter: plain().await => |(t, _server)| scenario::contended_counter(&t);
    replies_delayed: proxied(plain()).await => |(p, _, _server)| scenario::replies_delayed(&p);
    cut_mid_hold: proxied(plain()).await => |(p, _, _server)| scenario::cut_mid_hold(&p);
    cut_mid_acquire: proxied(plain()).await => |(p, inspector, _server)| scenario::cut_mid_acquire(&p, inspector);
    server_paused: plain().await => |(t, mut server)| scenario::server_paused(&t, &mut server);
    server_restarted_without_persistence: plain().await => |(t, mut server)| scenario::server_restarted(&t, &mut server);
    server_restarted_with_aof_always: aof().await => |(t, mut server)| scenario::server_restarted(&t, &mut server);
    fifo_holder_paused: fifo().await => |(t, _server)| scenario::holder_paused(&t);
    fifo_holder_killed: fifo().await => |(t, _server)| scenario::holder_killed(&t);
    fifo_contended_counter: fifo().await => |(t, _server)| scenario::contended_counter(&t);
    fifo_cut_mid_acquire: proxied(fifo()).await => |(p, inspector, _server)| scenario::cut_mid_acquire(&p, inspector);
    cluster_holder_paused: cluster().await => |t| scenario::holder_paused(&t);
    cluster_holder_killed: cluster().await => |t| scenario::holder_killed(&t);
    cluster_contended_counter: cluster().await => |t| scenario::contended_counter(&t);
}
