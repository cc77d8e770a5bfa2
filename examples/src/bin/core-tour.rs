//! A short tour of `pod-identity-core`: serialize container credentials the way the agent does.

fn main() {}
