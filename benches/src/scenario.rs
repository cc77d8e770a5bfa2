//! The scenarios of `BENCHMARKS.md`, each measuring ours and the alternative in one run.

pub mod bursts;
pub mod memory;
pub mod provider;
pub mod refresh;
pub mod serving;
pub mod wire;
