#!/usr/bin/env bash
# Builds each library crate's rustdoc JSON (a nightly rustdoc feature) and checks the foreign
# crates its public API exposes against the allowlist in external-types.py.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || true
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "external-types: no nightly toolchain on this machine and none can be installed" >&2
    exit 1
fi
python3 scripts/external-types.py --build
