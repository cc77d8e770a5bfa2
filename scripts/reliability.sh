#!/usr/bin/env bash
# Reliability runs that do not belong in CI: the bounded load soak, the hostile-pods load and the
# fuzz targets.
# Both send traffic only to loopback and stop by themselves. Figures go to RELIABILITY.md.
#
#   scripts/reliability.sh soak        # 60 s soak (SOAK_SECONDS, SOAK_CONCURRENCY, ...)
#   scripts/reliability.sh hostile     # hostile pods against the agent binary (HOSTILE_SECONDS,
#                                      # HOSTILE_ATTACKERS: 1 = one pod, 64 = fill the overall cap)
#   scripts/reliability.sh fuzz        # each fuzz target for FUZZ_SECONDS (default 150 s)
#   scripts/reliability.sh fuzz token_decode   # one target
#   scripts/reliability.sh all
#
# Fuzzing needs cargo-fuzz (`cargo install cargo-fuzz`) and uses nightly features of the stable
# toolchain through RUSTC_BOOTSTRAP=1. Corpora live in fuzz/corpus/<target> and are minimized
# after each run; a crash leaves its input in fuzz/artifacts/<target> and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-150}"
FUZZ_TARGETS=(token_decode container_credentials eks_auth_response eks_auth_error host_and_uri rotation_verify)

soak() {
    # Bounds: the soak stops after SOAK_SECONDS (hard cap 300 s in the binary), uses at most
    # SOAK_CONCURRENCY clients, and talks only to 127.0.0.1.
    cargo build --release --locked -p pod-identity-examples --bin soak
    ./target/release/soak \
        --seconds "${SOAK_SECONDS:-60}" \
        --concurrency "${SOAK_CONCURRENCY:-256}" \
        --tokens "${SOAK_TOKENS:-10000}" \
        --cache-size "${SOAK_CACHE_SIZE:-2000}" \
        --fault-percent "${SOAK_FAULT_PERCENT:-5}"
}

hostile() {
    # Bounds: the attack stops after HOSTILE_SECONDS (hard cap 120 s in the binary), then at most
    # 60 s of watching; every address is in 127.0.0.0/8; the agent process is stopped at the end.
    cargo build --release --locked -p pod-identity-agent --bin pod-identity-agent
    cargo build --release --locked -p pod-identity-examples --bin hostile-load
    ./target/release/hostile-load \
        --seconds "${HOSTILE_SECONDS:-45}" \
        --attackers "${HOSTILE_ATTACKERS:-1}" \
        --stalled "${HOSTILE_STALLED:-4000}" \
        --flood-rate "${HOSTILE_FLOOD_RATE:-10000}" \
        --forged "${HOSTILE_FORGED:-1000}" \
        --pods "${HOSTILE_PODS:-100}"
}

fuzz() {
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    local targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=("${FUZZ_TARGETS[@]}")
    cd fuzz
    export RUSTC_BOOTSTRAP=1
    cargo fuzz build -O
    local failed=0
    for target in "${targets[@]}"; do
        mkdir -p "corpus/$target"
        echo "== fuzz $target for ${FUZZ_SECONDS}s"
        local log="target/fuzz-$target.log"
        mkdir -p target
        if ! cargo fuzz run -O "$target" "corpus/$target" -- \
            -max_total_time="$FUZZ_SECONDS" -max_len=8192 -rss_limit_mb=2048 -timeout=10 \
            -print_final_stats=1 >"$log" 2>&1; then
            echo "!! $target found a failure; see fuzz/$log and fuzz/artifacts/$target"
            tail -n 40 "$log"
            failed=1
            continue
        fi
        grep -E '^#[0-9]+\s+DONE' "$log" | tail -n 1 || true
        grep -E 'stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
        # Keep the committed corpus small: only inputs that add coverage.
        local minimized="target/cmin-$target"
        rm -rf "$minimized" && mkdir -p "$minimized"
        cargo fuzz cmin -O "$target" "corpus/$target" >/dev/null 2>&1 || true
        echo "corpus/$target: $(find "corpus/$target" -type f | wc -l) inputs"
    done
    return "$failed"
}

case "${1:-all}" in
    soak) soak ;;
    hostile) hostile ;;
    fuzz) shift; fuzz "$@" ;;
    all) soak; hostile; fuzz ;;
    *) echo "usage: $0 [soak|hostile|fuzz [target...]|all]" >&2; exit 2 ;;
esac
