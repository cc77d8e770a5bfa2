//! Building blocks of an EKS Pod Identity node credential server.
//!
//! This crate is being built; see the workspace README.

#[cfg(feature = "simulator")]
pub mod simulator;
