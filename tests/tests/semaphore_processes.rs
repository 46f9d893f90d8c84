//! Eight processes share a semaphore of three permits, on every backend:
//! at most three of them are ever inside at once (their recorded
//! intervals, on the host's shared monotonic clock, never overlap more
//! than three deep), every process gets every round, and every grant has
//! its own token.

use std::collections::HashSet;
use std::process::Command;

const PROCESSES: usize = 8;
const PERMITS: u32 = 3;
const ROUNDS: u32 = 4;

/// Runs the processes against `url` and checks what they recorded.
fn eight_processes_three_permits(url: &str) {
    let name = format!("semaphore-processes/{:016x}", fastrand::u64(..));
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_permit_holder"))
                .args([
                    url,
                    &name,
                    &PERMITS.to_string(),
                    &ROUNDS.to_string(),
                    &format!("process-{i}"),
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn a permit_holder process")
        })
        .collect();
    let mut intervals = Vec::new();
    let mut tokens = HashSet::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("permit_holder output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "process {i} failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let rounds: Vec<_> = stdout.lines().filter(|l| l.starts_with("held ")).collect();
        assert_eq!(
            rounds.len(),
            ROUNDS as usize,
            "process {i} was admitted every round: {stdout}"
        );
        for line in rounds {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, token, entered, left, released] = fields.as_slice() else {
                panic!("unreadable line {line:?}");
            };
            assert_eq!(
                *released, "true",
                "process {i} kept its permit to the end: {line}"
            );
            assert!(
                tokens.insert(token.parse::<u64>().expect("token")),
                "token {token} granted twice"
            );
            intervals.push((
                entered.parse::<u64>().expect("entered"),
                left.parse::<u64>().expect("left"),
            ));
        }
    }
    let deepest = deepest_overlap(&intervals);
    eprintln!("{url}: at most {deepest} of {PROCESSES} processes inside a semaphore of {PERMITS}");
    assert!(
        deepest <= PERMITS as usize,
        "{deepest} processes were inside a semaphore of {PERMITS} at once"
    );
}

/// The most intervals open at one instant (an interval that ends when
/// another begins does not overlap it).
fn deepest_overlap(intervals: &[(u64, u64)]) -> usize {
    let mut edges: Vec<(u64, i32)> = intervals
        .iter()
        .flat_map(|&(a, b)| [(a, 1), (b, -1)])
        .collect();
    // Ends sort before starts at the same instant.
    edges.sort_unstable();
    let (mut open, mut deepest) = (0i32, 0i32);
    for (_, step) in edges {
        open += step;
        deepest = deepest.max(open);
    }
    usize::try_from(deepest).unwrap_or(0)
}

/// [`eight_processes_three_permits`] off the runtime's threads (it waits
/// for child processes).
async fn run_blocking(url: String) {
    tokio::task::spawn_blocking(move || eight_processes_three_permits(&url))
        .await
        .expect("processes");
}

#[test]
fn overlap_counting_counts() {
    assert_eq!(deepest_overlap(&[(0, 10), (5, 15), (10, 20)]), 2);
    assert_eq!(deepest_overlap(&[(0, 10), (1, 9), (2, 8), (3, 7)]), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let harness = lockkit_tests::sqlite::SqliteHarness::start().await;
    let url = harness.url().to_owned();
    run_blocking(url).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    use lockkit_tests::sql_harness::{SqlHarness, SqlKind};
    let harness = SqlHarness::start(SqlKind::Postgres).await;
    let url = harness.url().to_owned();
    run_blocking(url).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql() {
    use lockkit_tests::sql_harness::{SqlHarness, SqlKind};
    let harness = SqlHarness::start(SqlKind::MySql).await;
    let url = harness.url().to_owned();
    run_blocking(url).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd() {
    let harness = lockkit_tests::etcd::EtcdHarness::start().await;
    let url = harness.url().to_owned();
    run_blocking(url).await;
}

#[cfg(feature = "zookeeper")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper() {
    let url = lockkit_tests::zk::shared_url();
    run_blocking(url).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fifo() {
    let url = lockkit_tests::redis::shared_server_url();
    run_blocking(url).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unfair() {
    let url = lockkit_tests::redis::shared_server_url();
    let url = format!(
        "{url}{}fifo=false",
        if url.contains('?') { '&' } else { '?' }
    );
    run_blocking(url).await;
}
