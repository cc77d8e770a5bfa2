#!/usr/bin/env bash
# Checks every library crate under each of its features alone, with no features and with all of
# them (what `cargo hack check --each-feature` does), so a feature that does not build on its own
# is found before a user turns it on. Dev-dependencies are left out: they would enable features.
set -euo pipefail
cd "$(dirname "$0")/.."

crates=(pod-identity-core pod-identity-provider pod-identity-agent-lib)
for crate in "${crates[@]}"; do
    features=$(cargo metadata --no-deps --format-version 1 --locked |
        python3 -c "import json,sys; p=[p for p in json.load(sys.stdin)['packages'] if p['name']=='$crate'][0]; print(' '.join(f for f in p['features'] if f != 'default'))")
    echo "== $crate: no features"
    cargo check -q --locked -p "$crate" --lib --no-default-features
    for feature in $features; do
        echo "== $crate: --features $feature"
        cargo check -q --locked -p "$crate" --lib --no-default-features --features "$feature"
    done
    echo "== $crate: all features"
    cargo check -q --locked -p "$crate" --lib --all-features
done
