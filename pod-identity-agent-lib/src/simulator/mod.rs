//! A local EKS Auth simulator for tests, benchmarks and the demo (feature `simulator`).
