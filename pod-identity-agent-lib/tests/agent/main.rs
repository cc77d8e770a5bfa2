//! The agent library's blocks in this process, over real loopback sockets: the assembled agent,
//! hostile clients, upstream faults, isolation between pods, the self-managed source, the EKS
//! Auth simulator and the Kubernetes blocks against a fake API server. One test binary, so the
//! dependencies are linked once and the support in `tests/support` is built once;
//! `cargo test --test agent hostile::` runs one file's tests.
//!
//! What the tests share in this process is safe to share: one global tracing subscriber that
//! writes into the capture of the thread that logged (see `support::logs`), and no environment
//! variables (the test of aws-config's container provider sets them in a child process).
//! The tests that need root and network namespaces are in `tests/node_network.rs`.
#![allow(clippy::unwrap_used)] // A test crate: a panic is how a check fails.

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "eks-auth")]
mod eks_auth;
mod hostile;
#[cfg(all(feature = "eks-auth", feature = "simulator"))]
mod isolation;
#[cfg(feature = "kubernetes")]
mod kubernetes;
#[cfg(all(feature = "eks-auth", feature = "simulator"))]
mod reliability;
#[cfg(feature = "self-managed")]
mod self_managed;
#[cfg(feature = "eks-auth")]
mod server;
#[cfg(feature = "simulator")]
mod simulator;
#[cfg(all(feature = "eks-auth", feature = "simulator"))]
mod with_simulator;
