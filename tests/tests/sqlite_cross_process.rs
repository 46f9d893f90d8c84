//! Two (and more) OS processes contend on one SQLite file; a shared counter
//! file updated by slow read-modify-write shows no lost update, an
//! exclusively created marker file shows no overlap, and every grant got
//! its own fencing token. The processes start together on a directory
//! without a database, so they also race to create the file and schema.

use std::collections::HashSet;
use std::process::{Command, Stdio};

const PROCESSES: usize = 3;
const ROUNDS: u64 = 25;

#[tokio::test]
async fn processes_sharing_a_sqlite_file_never_overlap() {
    // A fresh directory without a database: the processes also race to
    // create the file and the schema.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/locks.db", dir.path().display());
    let counter = dir.path().join("counter.txt");
    std::fs::write(&counter, "0").expect("write counter");
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_contender"))
                .args([
                    url.as_str(),
                    counter.to_str().expect("utf-8 path"),
                    &ROUNDS.to_string(),
                    &format!("process-{i}"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a contender process")
        })
        .collect();
    let mut overlaps = 0u64;
    let mut tokens = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("contender output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "contender failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        for line in stdout.lines() {
            if let Some(n) = line.strip_prefix("overlaps=") {
                overlaps += n.parse::<u64>().expect("overlap count");
            }
            if let Some(list) = line.strip_prefix("tokens=") {
                tokens.extend(list.split(',').map(|t| t.parse::<u64>().expect("token")));
            }
        }
    }
    let total = PROCESSES as u64 * ROUNDS;
    assert_eq!(
        overlaps, 0,
        "two processes were inside the critical section at once"
    );
    let count: u64 = std::fs::read_to_string(&counter)
        .expect("read counter")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(
        count, total,
        "a lost update shows that two holders overlapped"
    );
    assert_eq!(tokens.len() as u64, total);
    let distinct: HashSet<_> = tokens.iter().collect();
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "every grant carries its own fencing token"
    );
    assert_eq!(
        tokens.iter().max().copied(),
        Some(total),
        "tokens count the grants: 1..={total}"
    );
}
