//! One semaphore holder process for the cross-process semaphore test.
//!
//! Usage: `permit_holder <lock-backend-url> <name> <permits> <rounds> <owner>`
//!
//! Each round takes one of `permits` permits of `name`, records the
//! host's monotonic clock right after the grant and right before the
//! release (`CLOCK_MONOTONIC` is shared by every process of the host, so
//! the test can line the intervals of all processes up), holds the permit
//! for a moment, and releases. Prints one line per round:
//! `held <token> <entered_ns> <left_ns> <released>`.

use std::process::ExitCode;
use std::time::Duration;

use lockkit::{LockOptions, Locker};
use lockkit_tests::faults::event::mono_ns;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, name, permits, rounds, owner] = args.as_slice() else {
        eprintln!("usage: permit_holder <lock-backend-url> <name> <permits> <rounds> <owner>");
        return ExitCode::from(2);
    };
    let (Ok(permits), Ok(rounds)) = (permits.parse::<u32>(), rounds.parse::<u32>()) else {
        eprintln!("permits and rounds must be numbers");
        return ExitCode::from(2);
    };
    match run(url, name, permits, rounds, owner).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("permit_holder {owner} failed: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    url: &str,
    name: &str,
    permits: u32,
    rounds: u32,
    owner: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let backend = lockkit::connect(url).await?;
    let locker = Locker::new(backend, owner)?.with_options(
        LockOptions::new()
            .ttl(Duration::from_secs(30))
            .wait_timeout(Duration::from_secs(240))
            .permits(permits),
    )?;
    for _ in 0..rounds {
        let guard = locker.acquire(name).await?;
        let entered = mono_ns();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let left = mono_ns();
        let token = guard.token();
        let released = guard.release().await?;
        println!("held {token} {entered} {left} {released}");
    }
    Ok(())
}
