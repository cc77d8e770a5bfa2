//! The load and memory harness: runs every scenario of `BENCHMARKS.md`, ours and the
//! alternative side by side, and prints a Markdown table.
//!
//! ```text
//! cargo run --release -p pod-identity-benches --bin load [-- --quick] [--only <scenario>]...
//! ```
//!
//! Scenarios: `memory` (first, in a fresh process), `provider`, `refresh`, `serving`, `bursts`,
//! `wire`. `--quick` is a smoke run with tiny sizes (what the tests run); its numbers mean
//! nothing.

use std::io::Write as _;
use std::process::ExitCode;

use pod_identity_benches::fixture::{BoxError, ecs_environment};
use pod_identity_benches::report::{Row, Table};
use pod_identity_benches::scenario::{bursts, memory, provider, refresh, serving, wire};

const SCENARIOS: [&str; 6] = ["memory", "provider", "refresh", "serving", "bursts", "wire"];

fn main() -> ExitCode {
    let mut quick = false;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--only" => match args.next() {
                Some(name) if SCENARIOS.contains(&name.as_str()) => only.push(name),
                other => return usage(&format!("unknown scenario {other:?}")),
            },
            // `cargo bench` and `cargo test` pass these to every target.
            "--bench" | "--nocapture" => {}
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let selected = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    match run(quick, &selected) {
        Ok(table) => {
            println!("{table}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "load harness failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    let _ = writeln!(
        std::io::stderr(),
        "{problem}\nusage: load [--quick] [--only {}]...",
        SCENARIOS.join("|")
    );
    ExitCode::from(2)
}

/// The command reproducing one scenario's rows.
fn command(scenario: &str, quick: bool) -> String {
    let quick = if quick { " --quick" } else { "" };
    format!("load{quick} --only {scenario}")
}

fn run(quick: bool, selected: &dyn Fn(&str) -> bool) -> Result<Table, BoxError> {
    // aws-config's container provider reads only the process environment: this may run the
    // harness again as a child with it set, and exit with the child's status.
    let env = ecs_environment();
    let mut table = Table::default();
    let progress = |name: &str| {
        let _ = writeln!(std::io::stderr(), "running scenario {name}...");
    };
    // Memory first, while the process is fresh.
    add(&mut table, "memory", quick, selected, || {
        memory::run(sized(
            quick,
            memory::Settings::QUICK,
            memory::Settings::FULL,
        ))
    })?;
    if selected("provider") {
        progress("provider");
        let settings = if quick {
            provider::Settings::QUICK
        } else {
            provider::Settings::FULL
        };
        table.extend(&command("provider", quick), provider::run(&env, settings)?);
    }
    add(&mut table, "refresh", quick, selected, || {
        refresh::run(
            &env,
            sized(quick, refresh::Settings::QUICK, refresh::Settings::FULL),
        )
    })?;
    add(&mut table, "serving", quick, selected, || {
        serving::run(&sized(
            quick,
            serving::Settings::quick(),
            serving::Settings::full(),
        ))
    })?;
    add(&mut table, "bursts", quick, selected, || {
        bursts::run(sized(
            quick,
            bursts::Settings::QUICK,
            bursts::Settings::FULL,
        ))
    })?;
    add(&mut table, "wire", quick, selected, || {
        wire::run(sized(quick, 100, 200_000))
    })?;
    Ok(table)
}

/// Adds the rows of scenario `name` when it is selected, under the command reproducing them.
fn add(
    table: &mut Table,
    name: &str,
    quick: bool,
    selected: &dyn Fn(&str) -> bool,
    rows: impl FnOnce() -> Result<Vec<Row>, BoxError>,
) -> Result<(), BoxError> {
    if selected(name) {
        let _ = writeln!(std::io::stderr(), "running scenario {name}...");
        table.extend(&command(name, quick), rows()?);
    }
    Ok(())
}

/// The smoke-run size when `quick`, else the full one.
fn sized<T>(quick: bool, smoke: T, full: T) -> T {
    if quick { smoke } else { full }
}
