//! The provider's integration tests, in one binary: each module drives the provider (or its
//! cache) over real HTTP against a wiremock agent, with `common` the support they share.
#![allow(clippy::unwrap_used)] // A test crate: a panic is how a check fails.

mod common;

mod cache;
mod chain;
mod config;
mod faults;
mod fetch;
mod identity_cache;
mod logs;
mod proxy;
mod sdk;
