//! The load harness in its smoke mode, so it cannot rot: every scenario runs with tiny sizes and
//! prints the table. Its numbers are not checked (speed belongs in the benchmarks).

use std::process::Command;

#[test]
fn every_scenario_runs_and_prints_the_table() {
    let output = Command::new(env!("CARGO_BIN_EXE_load"))
        .arg("--quick")
        .output()
        .expect("the harness runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.starts_with("| scenario | metric | ours | alternative | ratio | goal | command |"),
        "{stdout}"
    );
    for scenario in [
        "1 provider cache hit",
        "2 across a refresh",
        "3 agent cache-hit serving",
        "4 cold bursts",
        "5 memory",
        "6 wire format",
    ] {
        assert!(stdout.contains(scenario), "no {scenario} rows:\n{stdout}");
    }
}

#[test]
fn an_unknown_scenario_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_load"))
        .args(["--only", "nonsense"])
        .output()
        .expect("the harness runs");
    assert_eq!(output.status.code(), Some(2));
}
