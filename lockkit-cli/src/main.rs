//! The `lockkit` command line.
//!
//! **Status: placeholder.** A later issue adds `run`, `inspect`, `list`,
//! `force-release`, `cleanup`, the metrics exporter and pipeline commands.
//! This binary only reports its version so the workspace layout is complete.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--version" | "-V") => {
            println!("lockkit {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "lockkit {}: the command line is not built yet; use the `lockkit` library (see README.md)",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::from(2)
        }
    }
}
