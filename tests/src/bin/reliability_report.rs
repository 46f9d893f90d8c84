//! Merges the fault suite's outcomes (`target/reliability/*.json`, one per
//! backend × fault, written by `lockkit_tests::faults::report::record`)
//! into `docs/reliability/results.json` and renders `docs/RELIABILITY.md`.
//!
//! Usage: `cargo run -p lockkit-tests --bin reliability_report` after
//! `cargo test -p lockkit-tests --all-features --test 'faults_*'`. Cells
//! not run this time keep their previous result. Exits 1 (and writes
//! nothing) when a result contradicts the matrix or cells are missing.

use std::process::ExitCode;

use lockkit_tests::faults::report::{Outcome, check_results, render, repo_root, results_dir};

fn main() -> ExitCode {
    let results_file = repo_root().join("docs/reliability/results.json");
    let mut results: Vec<Outcome> = std::fs::read_to_string(&results_file)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let mut fresh = 0;
    if let Ok(entries) = std::fs::read_dir(results_dir()) {
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
        {
            let outcome: Outcome = match std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
            {
                Ok(outcome) => outcome,
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            };
            results.retain(|r| !(r.backend == outcome.backend && r.fault == outcome.fault));
            results.push(outcome);
            fresh += 1;
        }
    }
    results.sort_by(|a, b| (&a.backend, &a.fault).cmp(&(&b.backend, &b.fault)));
    let problems = check_results(&results);
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("{problem}");
        }
        return ExitCode::FAILURE;
    }
    let json = match serde_json::to_string_pretty(&results) {
        Ok(json) => json + "\n",
        Err(e) => {
            eprintln!("encode results: {e}");
            return ExitCode::FAILURE;
        }
    };
    let docs = repo_root().join("docs");
    let written = std::fs::create_dir_all(docs.join("reliability"))
        .and_then(|()| std::fs::write(&results_file, json))
        .and_then(|()| std::fs::write(docs.join("RELIABILITY.md"), render(&results)));
    if let Err(e) = written {
        eprintln!("write the report: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "{fresh} fresh outcomes; {} cells in docs/reliability/results.json and docs/RELIABILITY.md",
        results.len()
    );
    ExitCode::SUCCESS
}
