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
use pod_identity_benches::report::Table;
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
    if selected("memory") {
        progress("memory");
        let settings = if quick {
            memory::Settings::QUICK
        } else {
            memory::Settings::FULL
        };
        table.extend(&command("memory", quick), memory::run(settings)?);
    }
    if selected("provider") {
        progress("provider");
        let settings = if quick {
            provider::Settings::QUICK
        } else {
            provider::Settings::FULL
        };
        table.extend(&command("provider", quick), provider::run(&env, settings)?);
    }
    if selected("refresh") {
        progress("refresh");
        let settings = if quick {
            refresh::Settings::QUICK
        } else {
            refresh::Settings::FULL
        };
        table.extend(&command("refresh", quick), refresh::run(&env, settings)?);
    }
    if selected("serving") {
        progress("serving");
        let settings = if quick {
            serving::Settings::quick()
        } else {
            serving::Settings::full()
        };
        table.extend(&command("serving", quick), serving::run(&settings)?);
    }
    if selected("bursts") {
        progress("bursts");
        let settings = if quick {
            bursts::Settings::QUICK
        } else {
            bursts::Settings::FULL
        };
        table.extend(&command("bursts", quick), bursts::run(settings)?);
    }
    if selected("wire") {
        progress("wire");
        table.extend(
            &command("wire", quick),
            wire::run(if quick { 100 } else { 200_000 })?,
        );
    }
    Ok(table)
}
