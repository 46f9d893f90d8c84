//! One contender process for the cross-process tests (any lockkit URL).
//!
//! Usage: `contender <lock-backend-url> <counter-file> <rounds> <owner>`
//!
//! Each round takes the lock `shared-counter`, marks the critical section
//! with a marker file created exclusively (an existing marker means another
//! process is inside: an overlap), does a slow read-modify-write of the
//! counter file (a lost update would show in the final count), and
//! releases. Prints `overlaps=<n>` and `tokens=<t1,t2,…>` at the end.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lockkit::{LockOptions, Locker};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, counter, rounds, owner] = args.as_slice() else {
        eprintln!("usage: contender <lock-backend-url> <counter-file> <rounds> <owner>");
        return ExitCode::from(2);
    };
    let Ok(rounds) = rounds.parse::<u32>() else {
        eprintln!("rounds must be a number");
        return ExitCode::from(2);
    };
    match run(url, PathBuf::from(counter), rounds, owner).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("contender {owner} failed: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    url: &str,
    counter: PathBuf,
    rounds: u32,
    owner: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let backend = lockkit::connect(url).await?;
    let locker = Locker::new(backend, owner)?.with_options(
        LockOptions::new()
            .ttl(Duration::from_secs(10))
            .wait_timeout(Duration::from_secs(60)),
    )?;
    let marker = counter.with_extension("inside");
    let mut overlaps = 0u32;
    let mut tokens = Vec::new();
    for _ in 0..rounds {
        let guard = locker.acquire("shared-counter").await?;
        tokens.push(guard.token().get().to_string());
        let entered = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
        {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                overlaps += 1;
                false
            }
            Err(e) => return Err(e.into()),
        };
        let value: u64 = std::fs::read_to_string(&counter)?.trim().parse()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        std::fs::write(&counter, (value + 1).to_string())?;
        if entered {
            std::fs::remove_file(&marker)?;
        }
        if !guard.release().await? {
            return Err("the lease was lost inside the critical section".into());
        }
    }
    println!("overlaps={overlaps}");
    println!("tokens={}", tokens.join(","));
    Ok(())
}
