//! A holder process for the clock-skew tests, meant to run under
//! `faketime`: takes a lock once (no renewal), prints what it believes the
//! time is and its token, then waits to be killed.
//!
//! Usage: `skewed_holder <lock-backend-url> <lock-name> <ttl-ms>`

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockkit::LockName;
use lockkit::spi::AcquireRequest;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, name, ttl_ms] = args.as_slice() else {
        eprintln!("usage: skewed_holder <lock-backend-url> <lock-name> <ttl-ms>");
        return ExitCode::from(2);
    };
    match hold(url, name, ttl_ms).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("skewed_holder failed: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn hold(url: &str, name: &str, ttl_ms: &str) -> Result<(), Box<dyn std::error::Error>> {
    let backend = lockkit::connect(url).await?;
    let ttl = Duration::from_millis(ttl_ms.parse()?);
    let request = AcquireRequest::new(LockName::new(name)?, "skewed-holder", ttl)?;
    let lease = backend
        .try_acquire(&request)
        .await?
        .ok_or("the lock was not free")?;
    let wall_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    println!("wall_ms={wall_ms}");
    println!("token={}", lease.token);
    std::io::stdout().flush()?;
    tokio::time::sleep(Duration::from_secs(120)).await;
    Ok(())
}
