//! A waiter process for the dead-waiter and crash tests: waits for a lock
//! (through `lockkit::connect`), printing `waiting` when it starts and
//! `granted token=<n>` once it gets the lock, then holds it until killed —
//! without renewal, or with `renew` through a `Locker` that renews every
//! third of the TTL. Tests kill it while it is queued or while it holds.
//!
//! Usage: `queued_waiter <lock-backend-url> <lock-name> <ttl-ms> [renew]`

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use lockkit::spi::AcquireRequest;
use lockkit::{LockName, LockOptions, Locker};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, name, ttl_ms, renew) = match args.as_slice() {
        [url, name, ttl_ms] => (url, name, ttl_ms, false),
        [url, name, ttl_ms, flag] if flag == "renew" => (url, name, ttl_ms, true),
        _ => {
            eprintln!("usage: queued_waiter <lock-backend-url> <lock-name> <ttl-ms> [renew]");
            return ExitCode::from(2);
        }
    };
    match wait(url, name, ttl_ms, renew).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("queued_waiter failed: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn wait(
    url: &str,
    name: &str,
    ttl_ms: &str,
    renew: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let backend = lockkit::connect(url).await?;
    let ttl = Duration::from_millis(ttl_ms.parse()?);
    let name = LockName::new(name)?;
    println!("waiting");
    std::io::stdout().flush()?;
    if renew {
        let locker = Locker::new(backend, "queued-waiter")?
            .with_options(LockOptions::new().ttl(ttl).wait_forever())?;
        let guard = locker.acquire(&name).await?;
        println!("granted token={}", guard.token());
        std::io::stdout().flush()?;
        let reason = guard.lost().await;
        println!("lost {reason}");
        return Ok(());
    }
    let request = AcquireRequest::new(name, "queued-waiter", ttl)?;
    let lease = backend.acquire(&request, None).await?;
    println!("granted token={}", lease.token);
    std::io::stdout().flush()?;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}
