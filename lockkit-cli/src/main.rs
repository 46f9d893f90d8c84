//! The `lockkit` command line: run any command under a lock, see who holds
//! what, free a stuck lock. See the README for every command with an
//! example, and [`exit`] for the exit codes.

mod admin;
mod backend;
mod cli;
mod config;
mod dag;
mod exit;
mod exporter;
mod format;
mod run;

use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use lockkit::{Error, LockName, LockOptions};

use crate::cli::{Cli, Command, RunArgs};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lockkit: cannot start the runtime: {err}");
            return ExitCode::from(exit::UNAVAILABLE);
        }
    };
    let code = runtime.block_on(dispatch(cli)).unwrap_or_else(|err| {
        eprintln!("lockkit: {err}");
        exit::for_error(&err)
    });
    // Do not wait for background work (a release that keeps retrying):
    // the lease ends at its TTL anyway.
    runtime.shutdown_background();
    ExitCode::from(code)
}

async fn dispatch(mut cli: Cli) -> Result<u8, Error> {
    let config = config::load(cli.config.as_deref())?;
    if cli.backend.is_none() {
        cli.backend.clone_from(&config.backend);
    }
    match cli.command {
        Command::Run(args) => {
            // Everything is checked before any I/O.
            let run = validate_run(args, &config.run)?;
            let backend = backend::connect(cli.backend).await?;
            run::run(backend, run).await
        }
        Command::Status { prefix, json, soon } => {
            let backend = backend::connect(cli.backend).await?;
            admin::status(&*backend, prefix.as_deref(), json, soon).await
        }
        Command::Inspect { name, json } => {
            let name = LockName::new(name)?;
            let backend = backend::connect(cli.backend).await?;
            admin::inspect(&*backend, &name, json).await
        }
        Command::Release { name, force, yes } => {
            if !force {
                return Err(Error::invalid_input(
                    "a lock is released by its holder; use `lockkit release --force NAME` to free it anyway",
                ));
            }
            let name = LockName::new(name)?;
            let backend = backend::connect(cli.backend).await?;
            admin::force_release(&*backend, &name, yes).await
        }
        Command::Cleanup { every } => {
            let backend = backend::connect(cli.backend).await?;
            admin::cleanup(&*backend, every).await
        }
        Command::Exporter {
            listen,
            soon,
            max_lock_series,
            refresh,
        } => {
            let backend = backend::connect(cli.backend).await?;
            let config = exporter::Config {
                listen,
                soon,
                max_lock_series,
                refresh,
            };
            exporter::serve(backend, config).await
        }
        Command::Dag { catalog, command } => {
            let catalog = catalog.or_else(|| config.catalog.clone());
            Ok(dag::dispatch(command, catalog, cli.backend)
                .await
                .unwrap_or_else(|err| dag::report_error(&err)))
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "lockkit",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
    }
}

/// Flags over the config file over the built-in defaults.
fn validate_run(args: RunArgs, defaults: &config::RunDefaults) -> Result<run::Run, Error> {
    let name = LockName::new(args.name)?;
    let from_file = |key: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|text| config::duration(key, text))
            .transpose()
    };
    let ttl = match args.ttl {
        Some(ttl) => ttl,
        None => from_file("run.ttl", &defaults.ttl)?.unwrap_or(Duration::from_secs(30)),
    };
    let wait = match args.wait {
        Some(wait) => Some(wait),
        None => from_file("run.wait", &defaults.wait)?,
    };
    let grace = match args.grace {
        Some(grace) => grace,
        None => from_file("run.grace", &defaults.grace)?.unwrap_or(Duration::from_secs(10)),
    };
    let mut options = LockOptions::new()
        .ttl(ttl)
        .permits(args.permits.unwrap_or(1));
    options = match wait {
        Some(wait) => options.wait_timeout(wait),
        None => options.wait_forever(),
    };
    options.validate()?;
    let owner = args
        .owner
        .or_else(|| defaults.owner.clone())
        .unwrap_or_else(run::default_owner);
    lockkit::spi::validate_owner(&owner)?;
    Ok(run::Run {
        name,
        options,
        no_wait: args.no_wait,
        owner,
        conflict_exit_code: args
            .conflict_exit_code
            .or(defaults.conflict_exit_code)
            .unwrap_or(exit::CONFLICT),
        grace,
        command: args.command,
    })
}

/// Help and version go to stdout as clap prints them; a usage error is one
/// line on stderr (clap's message and its tip, without the usage block)
/// and exit code 2.
fn usage_error(err: &clap::Error) -> ExitCode {
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    let rendered = err.render().to_string();
    let line: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hint = if args.first().is_some_and(|a| a == "run") && !args.iter().any(|a| a == "--") {
        "the command goes after `--`: lockkit run NAME [OPTIONS] -- COMMAND [ARGS...]"
    } else {
        "see `lockkit --help`"
    };
    let mut message = String::new();
    for part in line {
        if !message.is_empty() {
            message.push_str(if message.ends_with(':') { " " } else { "; " });
        }
        message.push_str(part);
    }
    eprintln!(
        "lockkit: {} ({hint})",
        message.trim_start_matches("error: ")
    );
    ExitCode::from(exit::USAGE)
}
