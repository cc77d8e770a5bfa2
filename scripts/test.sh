#!/usr/bin/env bash
# Runs every test in the workspace: unit and integration tests, examples, the benches once in
# test mode, then the doc tests. This is the README's test command and what `.ci/run` calls.
set -euo pipefail
cd "$(dirname "$0")/.."

# The interop tests drive the Python SDK (botocore) from a local virtual environment.
bash scripts/python-env.sh

cargo test --workspace --all-targets --all-features --locked
cargo test --workspace --doc --all-features --locked
