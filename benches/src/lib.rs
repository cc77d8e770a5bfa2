//! Shared fixtures for the benchmarks of the pod-identity workspace.
