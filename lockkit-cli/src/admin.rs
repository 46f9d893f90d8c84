//! The administrative commands: `status`, `inspect`, `release --force`,
//! `cleanup`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, SystemTime};

use lockkit::{Error, LockBackend, LockName};

use crate::exit;
use crate::format::{LockView, table};

/// `lockkit status`: the held locks (under `prefix`), as a table or JSON.
pub async fn status(
    backend: &dyn LockBackend,
    prefix: Option<&str>,
    json: bool,
    soon: Duration,
) -> Result<u8, Error> {
    let now = SystemTime::now();
    let held = backend.list().await?;
    let locks = crate::format::views(
        held.iter()
            .filter(|info| prefix.is_none_or(|p| info.name.as_str().starts_with(p))),
        now,
    );
    if json {
        println!("{}", to_json(&locks));
    } else if locks.is_empty() {
        println!("no locks held");
    } else {
        print!("{}", table(&locks, soon, std::io::stdout().is_terminal()));
    }
    Ok(0)
}

/// `lockkit inspect NAME`: the holder of one lock — every holder of a
/// semaphore — ; exit 1 if it is free. JSON: one object for a lock, an
/// array of holders for a semaphore (permit count above 1).
pub async fn inspect(backend: &dyn LockBackend, name: &LockName, json: bool) -> Result<u8, Error> {
    let holders = backend.holders(name).await?;
    let Some(first) = holders.first() else {
        if json {
            println!("null");
        } else {
            println!("{name}: free");
        }
        return Ok(exit::NOT_HELD);
    };
    let now = SystemTime::now();
    let views: Vec<LockView> = holders
        .iter()
        .map(|info| LockView::new(info, holders.len(), now))
        .collect();
    if json {
        if first.permits > 1 {
            println!("{}", to_json(&views));
        } else {
            println!("{}", to_json(&views[0]));
        }
        return Ok(0);
    }
    for (i, view) in views.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_view(view);
    }
    Ok(0)
}

fn print_view(view: &LockView) {
    {
        if view.permits > 1 {
            println!("permits:     {}/{} held", view.permits_used, view.permits);
        }
        println!("name:        {}", view.name);
        println!("owner:       {}", view.owner);
        println!("token:       {}", view.token);
        println!("lease id:    {}", view.lease_id);
        println!("acquired at: {}", view.acquired_at);
        println!(
            "held for:    {}",
            crate::format::human(Duration::from_secs_f64(view.held_for_seconds))
        );
        match (&view.expires_at, view.expires_in_seconds) {
            (Some(at), Some(secs)) => println!(
                "expires at:  {at} (in {} unless renewed)",
                crate::format::human(Duration::from_secs_f64(secs))
            ),
            _ => println!("expires at:  when its holder's session ends"),
        }
    }
}

/// `lockkit release --force NAME`: frees a lock whoever holds it (asks
/// first on a terminal unless `yes`); its holder's guard reports the loss.
pub async fn force_release(
    backend: &dyn LockBackend,
    name: &LockName,
    yes: bool,
) -> Result<u8, Error> {
    let Some(info) = backend.current(name).await? else {
        println!("{name}: not held");
        return Ok(exit::NOT_HELD);
    };
    if !yes && std::io::stdin().is_terminal() {
        eprint!(
            "force-release {name}, held by {} (token {})? Its holder will be told it lost the lock. [y/N] ",
            info.owner, info.token
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("lockkit: not released");
            return Ok(exit::NOT_HELD);
        }
    }
    if backend.force_release(name).await? {
        println!(
            "{name}: released (was held by {}, token {})",
            info.owner, info.token
        );
        Ok(0)
    } else {
        println!("{name}: not held");
        Ok(exit::NOT_HELD)
    }
}

/// `lockkit cleanup [--every D]`: removes expired lease records once, or
/// every `D` until interrupted.
pub async fn cleanup(backend: &dyn LockBackend, every: Option<Duration>) -> Result<u8, Error> {
    let Some(every) = every else {
        let removed = backend.cleanup_expired().await?;
        println!("removed {removed} expired lease record(s)");
        return Ok(0);
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => match backend.cleanup_expired().await {
                Ok(removed) => println!("removed {removed} expired lease record(s)"),
                // Keep going: the next round may reach the backend.
                Err(err) => eprintln!("lockkit: cleanup failed: {err}"),
            },
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
