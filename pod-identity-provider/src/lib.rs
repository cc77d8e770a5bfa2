//! An [aws-config] credentials provider for EKS Pod Identity.
//!
//! This crate is being built; see the workspace README.
//!
//! [aws-config]: https://docs.rs/aws-config
