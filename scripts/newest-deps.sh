#!/usr/bin/env bash
# Builds and tests pod-identity-provider against the newest releases of its dependencies (the
# AWS SDK crates above all), which is what a user adding it to an application today resolves,
# besides the locked set the rest of CI builds. Works on a scratch copy of the workspace: the
# repository's Cargo.lock is never changed.
#
#   bash scripts/newest-deps.sh            # update, build, test
#   KEEP_SCRATCH=1 bash scripts/newest-deps.sh
#
# The build directory is `$CARGO_TARGET_DIR/newest-deps` (default `target/newest-deps`), so the
# next run reuses what did not change.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}/newest-deps"
scratch="$(mktemp -d)"
if [ -z "${KEEP_SCRATCH:-}" ]; then
    trap 'rm -rf "$scratch"' EXIT
else
    echo "scratch copy: $scratch"
fi

# The sources only: no build output, no history, no fuzz workspace. `-m` stamps the copies with
# the current time: the build directory is reused across runs, and a copy keeping an older
# modification time than the last build's outputs would be taken as unchanged.
tar -C "$root" --exclude=./target --exclude=./.git --exclude=./fuzz -cf - . | tar -C "$scratch" -xmf -
cd "$scratch"

# The workspace declares a `rust-version`, so cargo's resolver would keep releases that declare
# support for it. A user on a newer toolchain gets the newest ones: ask for those.
CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=allow cargo update --quiet
echo "newest releases resolved:"
for crate in aws-config aws-credential-types aws-runtime aws-smithy-async aws-smithy-runtime \
    aws-smithy-runtime-api aws-smithy-types aws-types aws-sdk-sts; do
    version="$(cargo pkgid --quiet "$crate" 2>/dev/null | sed 's/.*[#@]//')"
    locked="$(cd "$root" && cargo pkgid --quiet "$crate" 2>/dev/null | sed 's/.*[#@]//')"
    echo "  $crate $version (locked: $locked)"
done

export CARGO_TARGET_DIR="$target"
cargo test -p pod-identity-provider --all-features --all-targets
cargo test -p pod-identity-provider --all-features --doc
