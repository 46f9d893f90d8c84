//! Network partitions inside 3-member etcd clusters and ZooKeeper
//! ensembles, made with [`NetLab`] (a network namespace per member, iptables
//! DROP rules between them): the leader is cut off from the other two
//! members (not from the test's clients), the majority elects a new leader
//! and keeps serving while the minority cannot, and after the heal the old
//! leader rejoins.
//!
//! A third test checks the lab's own rules without servers.
//!
//! Needs root, iproute2 and iptables, besides etcd and ZooKeeper. The tests
//! take turns (one lab at a time) so a loaded 2-core machine times one
//! cluster's elections, not two; run with `--nocapture` to see how long
//! each step took.
#![cfg(all(feature = "etcd", feature = "zookeeper"))]

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use lockkit_tests::etcd::EtcdCluster;
use lockkit_tests::netns::NetLab;
use lockkit_tests::zk::server::ZkEnsemble;

/// One lab at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long any one step (an election, a heal) may take.
const STEP: Duration = Duration::from_secs(60);

/// A raw client of the members in `url` (`etcd://host:port[,host:port…]`),
/// whose every request gives up after `timeout`.
async fn member_client(url: &str, timeout: Duration) -> Option<Client> {
    let addresses: Vec<&str> = url
        .strip_prefix("etcd://")
        .expect("an etcd:// URL")
        .split(',')
        .collect();
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(timeout);
    Client::connect(addresses, Some(options)).await.ok()
}

/// Puts `key` through the member at `url` alone; `Err` says why it failed.
async fn put_via(url: &str, key: &str, value: &str, timeout: Duration) -> Result<(), String> {
    let mut client = member_client(url, timeout)
        .await
        .ok_or_else(|| format!("cannot connect to {url}"))?;
    match tokio::time::timeout(
        timeout + Duration::from_secs(2),
        client.put(key, value, None),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Reads `key` linearizably through the member at `url`.
async fn get_via(url: &str, key: &str) -> Result<Option<String>, String> {
    let mut client = member_client(url, Duration::from_secs(5))
        .await
        .ok_or_else(|| format!("cannot connect to {url}"))?;
    let reply = client
        .get(key, Some(GetOptions::new()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(reply
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap_or_default().to_owned()))
}

/// Reads `key` through the member at `url`, retrying failures (an
/// election after the heal) for up to [`STEP`].
///
/// # Panics
/// When every read fails for [`STEP`].
async fn get_retrying(url: &str, key: &str) -> Option<String> {
    let start = Instant::now();
    loop {
        match get_via(url, key).await {
            Ok(value) => return value,
            Err(e) => {
                assert!(start.elapsed() < STEP, "reads via {url} keep failing: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Waits until `condition` returns `Some`, polling every 200 ms.
///
/// # Panics
/// After [`STEP`], with `what`, every member's view and the logs.
async fn etcd_wait<T>(
    cluster: &mut EtcdCluster,
    what: &str,
    mut condition: impl AsyncFnMut(&mut EtcdCluster) -> Option<T>,
) -> T {
    let give_up = Instant::now() + STEP;
    loop {
        if let Some(value) = condition(cluster).await {
            return value;
        }
        if Instant::now() >= give_up {
            let mut views = Vec::new();
            for i in 0..3 {
                views.push(cluster.leader_seen_by(i).await);
            }
            panic!(
                "etcd: {what} not within {STEP:?}; leaders seen by each member: {views:?}\nlogs:\n{}",
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The leader every one of `members` sees, if they all see the same one.
async fn agreed_leader(cluster: &mut EtcdCluster, members: &[usize]) -> Option<usize> {
    let mut agreed = None;
    for &m in members {
        let seen = cluster.leader_seen_by(m).await?;
        if agreed.is_some_and(|a| a != seen) {
            return None;
        }
        agreed = Some(seen);
    }
    agreed
}

#[test]
fn etcd_isolated_leader_is_replaced_and_rejoins_after_heal() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let lab = NetLab::create(3);
    let mut cluster = EtcdCluster::start_in(&lab, 1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let all = [0, 1, 2];
        let leader = etcd_wait(&mut cluster, "a leader all agree on", async |c| {
            agreed_leader(c, &all).await
        })
        .await;
        let majority: Vec<usize> = all.into_iter().filter(|m| *m != leader).collect();
        eprintln!(
            "etcd: leader m{leader} ({}), majority after the cut: {majority:?}",
            lab.member_ip(leader)
        );
        put_via(
            &cluster.url(),
            "/netns/before",
            "1",
            Duration::from_secs(10),
        )
        .await
        .expect("a write before the partition");

        let cut = Instant::now();
        lab.isolate(leader);
        let new_leader = etcd_wait(
            &mut cluster,
            "a new leader on the majority side",
            async |c| agreed_leader(c, &majority).await.filter(|l| *l != leader),
        )
        .await;
        let elected = cut.elapsed();
        eprintln!("etcd: m{new_leader} elected {elected:?} after the cut");
        assert!(majority.contains(&new_leader));
        assert!(
            !lab.can_reach(leader, lab.member_ip(majority[0])),
            "the partition is not in force"
        );
        assert!(
            lab.can_reach(leader, lab.host_ip()),
            "isolate must leave the host reachable"
        );

        // The minority member cannot commit anything.
        let isolated_url = cluster.member_url(leader);
        let refused = put_via(
            &isolated_url,
            "/netns/minority",
            "x",
            Duration::from_secs(3),
        )
        .await;
        assert!(
            refused.is_err(),
            "a write through the isolated member {isolated_url} succeeded"
        );
        eprintln!(
            "etcd: write via isolated m{leader} failed as it must: {}",
            refused.unwrap_err()
        );

        // The majority keeps serving (retrying while it settles).
        let majority_url = cluster.member_url(majority[0]);
        let write_start = Instant::now();
        loop {
            match put_via(
                &majority_url,
                "/netns/majority",
                "y",
                Duration::from_secs(5),
            )
            .await
            {
                Ok(()) => break,
                Err(e) => {
                    assert!(
                        write_start.elapsed() < STEP,
                        "writes via the majority keep failing: {e}\n{}",
                        cluster.logs()
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        eprintln!(
            "etcd: write via majority m{} ok {:?} after the cut",
            majority[0],
            cut.elapsed()
        );

        let healed = Instant::now();
        lab.heal();
        let rejoined = etcd_wait(
            &mut cluster,
            "all three agree on a leader after the heal",
            async |c| agreed_leader(c, &all).await,
        )
        .await;
        eprintln!(
            "etcd: after the heal all agree on m{rejoined} after {:?}",
            healed.elapsed()
        );

        // The old leader serves again, and sees the majority's write but
        // not the one it could never commit.
        let seen = get_retrying(&isolated_url, "/netns/majority").await;
        assert_eq!(
            seen.as_deref(),
            Some("y"),
            "the majority's write, via the old leader"
        );
        assert_eq!(
            get_retrying(&majority_url, "/netns/minority").await,
            None,
            "the write refused on the minority side must not appear"
        );
        put_via(&isolated_url, "/netns/after", "z", Duration::from_secs(10))
            .await
            .expect("a write via the old leader after the heal");
    });
    drop(cluster);
    drop(lab);
}

/// Waits until `condition` holds for the ensemble's modes.
///
/// # Panics
/// After [`STEP`], with `what` and the modes.
fn zk_wait(ensemble: &ZkEnsemble, what: &str, condition: impl Fn(&[Option<String>]) -> bool) {
    let give_up = Instant::now() + STEP;
    loop {
        let modes: Vec<Option<String>> = (0..3).map(|i| ensemble.mode(i)).collect();
        if condition(&modes) {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "ZooKeeper: {what} not within {STEP:?}; modes {modes:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn zookeeper_isolated_leader_stops_serving_and_rejoins_after_heal() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let lab = NetLab::create(3);
    let ensemble = ZkEnsemble::start_in(&lab);
    ensemble.wait_for_quorum(3, STEP);
    let leader = ensemble.leader().expect("a leader after the quorum formed");
    let majority: Vec<usize> = (0..3).filter(|m| *m != leader).collect();
    eprintln!(
        "ZooKeeper: leader {leader} ({}), majority after the cut: {majority:?}",
        lab.member_ip(leader)
    );

    let cut = Instant::now();
    lab.isolate(leader);
    zk_wait(&ensemble, "the isolated leader steps down", |modes| {
        modes[leader].as_deref() != Some("leader")
    });
    eprintln!(
        "ZooKeeper: isolated {leader} stopped leading {:?} after the cut",
        cut.elapsed()
    );
    zk_wait(&ensemble, "a new quorum on the majority side", |modes| {
        let mut roles: Vec<&str> = majority
            .iter()
            .filter_map(|m| modes[*m].as_deref())
            .collect();
        roles.sort_unstable();
        roles == ["follower", "leader"] && modes[leader].as_deref() != Some("leader")
    });
    let new_leader = ensemble.leader().expect("the majority's leader");
    eprintln!(
        "ZooKeeper: {new_leader} leads the majority {:?} after the cut; isolated {leader}: {:?}",
        cut.elapsed(),
        ensemble.mode(leader)
    );
    assert!(majority.contains(&new_leader));
    assert!(
        !lab.can_reach(leader, lab.member_ip(majority[0])),
        "the partition is not in force"
    );
    // The minority server does not serve on its own (it cannot reach a
    // quorum), however long the partition lasts.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ensemble.mode(leader),
        None,
        "the isolated server must not serve"
    );

    let healed = Instant::now();
    lab.heal();
    zk_wait(
        &ensemble,
        "all three serving again after the heal",
        |modes| {
            let leaders = modes
                .iter()
                .filter(|m| m.as_deref() == Some("leader"))
                .count();
            let followers = modes
                .iter()
                .filter(|m| m.as_deref() == Some("follower"))
                .count();
            leaders == 1 && followers == 2
        },
    );
    eprintln!(
        "ZooKeeper: all three serve again {:?} after the heal (leader {:?}, old leader {leader}: {:?})",
        healed.elapsed(),
        ensemble.leader(),
        ensemble.mode(leader)
    );
    drop(ensemble);
    drop(lab);
}

/// Whether the test process (root namespace) gets an answer from
/// `address` (a refused connection counts) within 2 s.
fn host_reaches(address: std::net::Ipv4Addr) -> bool {
    match std::net::TcpStream::connect_timeout(&(address, 9).into(), Duration::from_secs(2)) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

/// The lab itself, without servers: partition, blackout and heal put the
/// rules in force that they promise, and dropping the lab deletes its
/// namespaces.
#[test]
fn lab_rules_follow_partition_blackout_and_heal() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let lab = NetLab::create(3);
    let ip = |i| lab.member_ip(i);
    assert!(lab.can_reach(0, ip(1)) && lab.can_reach(0, ip(2)) && lab.can_reach(2, ip(1)));

    lab.partition(&[&[0, 1], &[2]]);
    assert!(lab.can_reach(0, ip(1)), "same side");
    assert!(!lab.can_reach(0, ip(2)), "across the partition");
    assert!(!lab.can_reach(2, ip(1)), "across the partition");
    assert!(lab.can_reach(2, lab.host_ip()), "the host stays reachable");
    assert!(host_reaches(ip(2)));

    lab.blackout(0);
    assert!(
        !lab.can_reach(0, ip(1)),
        "a blacked-out member reaches no member"
    );
    assert!(!host_reaches(ip(0)), "nor is it reached by the host");
    assert!(
        !lab.can_reach(1, ip(2)),
        "blackout keeps the partition in force"
    );

    lab.heal();
    for (from, to) in [(0, 1), (0, 2), (2, 1)] {
        assert!(
            lab.can_reach(from, ip(to)),
            "m{from} -> m{to} after the heal"
        );
    }
    assert!(host_reaches(ip(0)));

    let namespaces: Vec<String> = (0..3).map(|i| lab.namespace(i).to_owned()).collect();
    drop(lab);
    let left: Vec<String> = namespaces
        .into_iter()
        .filter(|ns| std::path::Path::new("/run/netns").join(ns).exists())
        .collect();
    assert!(left.is_empty(), "namespaces left after the drop: {left:?}");
}
