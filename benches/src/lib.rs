//! Benchmarks of the pod-identity workspace against the alternatives users would pick instead.
//!
//! - `cargo bench -p pod-identity-benches` runs the criterion micro benches in `benches/`, one
//!   file per scenario (provider cache hit, agent cache hit, wire formats).
//! - `cargo run --release -p pod-identity-benches --bin load` runs the load and memory harness
//!   (every scenario of `BENCHMARKS.md`) and prints a Markdown table; `--quick` is a smoke run,
//!   `--only <scenario>` runs one (`memory`, `provider`, `refresh`, `serving`, `bursts`, `wire`).
//!
//! Every comparison runs both sides in the same process and reports the ratio. This library
//! holds what the benches and the harness share: the parties of each scenario and their
//! measurement.
//!
//! ```
//! use pod_identity_benches::stats::Latencies;
//! use std::time::Duration;
//!
//! let mut latencies = Latencies::default();
//! latencies.push(Duration::from_micros(40));
//! latencies.push(Duration::from_micros(60));
//! assert_eq!(latencies.quantile(0.5), Duration::from_micros(40));
//! ```

pub mod clock;
pub mod fixture;
pub mod loadgen;
pub mod procfs;
pub mod report;
pub mod scenario;
pub mod sdk;
pub mod stats;
pub mod stub;
pub mod upstream;
pub mod wire;
