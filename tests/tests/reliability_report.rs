//! `docs/RELIABILITY.md` and `docs/reliability/results.json` are current:
//! the results cover exactly the fault matrix with the verdicts it expects,
//! and the page is what the results render to. Regenerate with the fault
//! suite and `cargo run -p lockkit-tests --bin reliability_report`.

use lockkit_tests::faults::report::{Outcome, check_results, render, repo_root};

#[test]
fn reliability_report_is_current() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("docs/reliability/results.json"))
        .expect("docs/reliability/results.json exists");
    let results: Vec<Outcome> = serde_json::from_str(&text).expect("results.json parses");
    let problems = check_results(&results);
    assert!(
        problems.is_empty(),
        "docs/reliability/results.json is stale:\n{}",
        problems.join("\n")
    );
    let page = std::fs::read_to_string(root.join("docs/RELIABILITY.md"))
        .expect("docs/RELIABILITY.md exists");
    assert!(
        page == render(&results),
        "docs/RELIABILITY.md is stale: run `cargo run -p lockkit-tests --bin reliability_report`"
    );
}
