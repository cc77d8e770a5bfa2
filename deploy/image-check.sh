#!/usr/bin/env bash
# Builds the agent image from deploy/Dockerfile and runs it the way the chart runs it, against
# the EKS Auth simulator on loopback. Linux amd64 or arm64 (the host's architecture), as root,
# with Debian's podman (runc, vfs storage, host network); installs what it needs from Debian's
# packages. No registry is needed: the base images are made from Debian packages with
# debootstrap and cached in $IMAGE_CHECK_CACHE (default /var/cache/pod-identity-image).
#
#   bash deploy/image-check.sh [--bases-only]
#
# --bases-only stops after making the base images. IMAGE_CHECK_RUNTIME_BASE=<image> builds on
# another runtime base instead of the Debian-made one.
#
# Checks, each printed as `ok` or `FAIL`:
#  - the image: non-root user 65532:65532, the `version` label, the binary's file capability
#    cap_net_bind_service after COPY, the CA bundle, no shell or package manager;
#  - cloud mode as the chart runs it (image user, every capability dropped but
#    NET_BIND_SERVICE, read-only root filesystem, host network): probes on 2703 answer; the
#    process runs as 65532 with only CAP_NET_BIND_SERVICE; a credential request on port 80 with
#    a minted token returns 200, and botocore on the host reads credentials the simulator
#    issued; SIGTERM exits 0 within the chart's 30 s grace period;
#  - the control: the host's copy of the binary, which has no file capability, run in the same
#    container setup, is refused port 80, so the bind above rests on the file capability;
#  - `initialize` in the container with only NET_ADMIN, in a throwaway network namespace;
#  - hybrid mode: uid 0 with every capability dropped but NET_BIND_SERVICE, no privilege
#    escalation, a root-owned 0600 credentials file mounted read-only at /root/.aws, and no
#    other node credentials: a credential request succeeds, and fails without the mount;
#    SIGTERM exits 0 within the grace period;
# then prints the image size and the start-to-ready time. Any failed check exits non-zero.
#
# Traffic goes to loopback (the agent on 127.0.0.23:80 and 127.0.0.1:2703, the simulator on
# 127.0.0.1) and into the network namespace it makes; the bases come from the Debian mirror
# ($DEBIAN_MIRROR, default http://deb.debian.org/debian).
# `ok` always succeeds, so `test && ok ... || fail ...` is an if-then-else here.
# shellcheck disable=SC2015
set -euo pipefail
cd "$(dirname "$0")/.."

# Bounded in time: the whole run, including a first debootstrap, gets 30 minutes.
if [ -z "${IMAGE_CHECK_BOUNDED:-}" ]; then
  IMAGE_CHECK_BOUNDED=1 exec timeout --kill-after=30 1800 bash "$0" "$@"
fi

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${IMAGE_CHECK_CACHE:-/var/cache/pod-identity-image}
# Bump when the base recipe below changes: the cached bases are keyed by it.
BASE_RECIPE=1
TARGET_DIR=${CARGO_TARGET_DIR:-target}
WORK="$TARGET_DIR/image-check"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IMAGE="localhost/pod-identity-agent:$VERSION"
HOST=127.0.0.23          # a loopback address of the host, port 80 on it
PROBES=127.0.0.1:2703
GRACE=30                 # the chart's terminationGracePeriodSeconds
CLUSTER=my-cluster       # the cluster of deploy/values/eks.yaml, and the simulator's
REGION=us-west-2
NETNS="pia-image-$$"
CONTAINERS=()
SIM_PID=""
failures=0

ok() { echo "ok   $*"; }
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}
die() {
  echo "FAIL $*"
  exit 1
}
step() { echo "---- $*"; }
now_ms() { date +%s%3N; }

# podman as this machine runs it: runc (crun refuses this cgroup layout), vfs storage, and
# explicit limits (raising them is not permitted, and podman's defaults would).
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
pm() { podman --runtime runc --storage-driver vfs "$@"; }

cleanup() {
  set +e
  for name in "${CONTAINERS[@]}"; do pm rm -f -t 0 "$name" >/dev/null 2>&1; done
  [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
  ip netns del "$NETNS" 2>/dev/null
  pm image unmount "$IMAGE" >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || die "run as root (podman with host networking, ip netns, debootstrap)"
case "$(uname -m)" in
  x86_64) ARCH=amd64 ;;
  aarch64) ARCH=arm64 ;;
  *) die "the image is built for amd64 and arm64; this is $(uname -m)" ;;
esac

step "tools"
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v ip >/dev/null || need+=(iproute2)
command -v getcap >/dev/null || need+=(libcap2-bin)
command -v curl >/dev/null || need+=(curl)
command -v ss >/dev/null || need+=(iproute2)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]}"
  timeout 600 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
fi
ok "podman $(podman --version | awk '{print $3}') (runc $(runc --version | awk 'NR==1{print $3}')), debootstrap, iproute2"
timeout 600 bash scripts/python-env.sh
ok "botocore in .venv"

rm -rf "$WORK"
mkdir -p "$WORK" "$CACHE"
WORK=$(cd "$WORK" && pwd)

# ---------------------------------------------------------------------------------------------
# The bases, from Debian packages.
#  tools:   debootstrap's minbase plus libcap2-bin (setcap), for the Dockerfile's prebuilt stage.
#  runtime: distroless-style, the files of libc6, libgcc-s1, netbase and base-files' os-release,
#           the CA bundle, /etc/passwd and /etc/group with root and nonroot (65532), /tmp; no
#           shell, no package manager.
step "base images ($SUITE, $ARCH)"
KEY="$SUITE-$ARCH-r$BASE_RECIPE"
TOOLS="localhost/pod-identity-base-tools:$KEY"
RUNTIME="localhost/pod-identity-base-runtime:$KEY"

build_bases() {
  local root="$WORK/rootfs" list="$WORK/runtime.list" extra="$WORK/runtime-extra"
  rm -rf "$root" "$extra"
  echo "debootstrap --variant=minbase $SUITE from $MIRROR"
  timeout 900 debootstrap --variant=minbase --arch="$ARCH" \
    --include=ca-certificates,libcap2-bin,netbase "$SUITE" "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log"; die "debootstrap"; }
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" --numeric-owner --xattrs -cf "$CACHE/tools-$KEY.tar.tmp" .
  mv "$CACHE/tools-$KEY.tar.tmp" "$CACHE/tools-$KEY.tar"

  # Every file (not directory) of the packages, under its canonical parent directory.
  # shellcheck disable=SC2016 # expanded by the shell in the chroot
  chroot "$root" sh -c '
    dpkg-query -L libc6 libgcc-s1 netbase | while read -r p; do
      [ -d "$p" ] && [ ! -L "$p" ] && continue
      [ -e "$p" ] || [ -L "$p" ] || continue
      d=$(realpath "$(dirname "$p")")
      printf "%s/%s\n" "${d#/}" "$(basename "$p")"
    done
    printf "%s\n" etc/ssl/certs/ca-certificates.crt usr/lib/os-release etc/os-release
    for l in bin sbin lib lib32 lib64 libx32; do
      if [ -L "/$l" ]; then printf "%s\n" "$l"; fi
    done
  ' | sed 's#^/##' | sort -u >"$list.files"
  # The parent directories, so that each exists with its Debian mode.
  while read -r p; do
    d=$(dirname "$p")
    while [ "$d" != . ]; do
      echo "$d"
      d=$(dirname "$d")
    done
  done <"$list.files" | sort -u >"$list.dirs"
  cat "$list.dirs" "$list.files" >"$list"

  mkdir -p "$extra/etc" "$extra/tmp" "$extra/root" "$extra/home/nonroot"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$extra/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$extra/etc/group"
  chmod 1777 "$extra/tmp"
  chmod 0700 "$extra/root" "$extra/home/nonroot"
  chown 65532:65532 "$extra/home/nonroot"
  tar -C "$root" --numeric-owner --no-recursion -cf "$CACHE/runtime-$KEY.tar.tmp" -T "$list"
  tar -C "$extra" --numeric-owner -rf "$CACHE/runtime-$KEY.tar.tmp" etc/passwd etc/group tmp root home
  mv "$CACHE/runtime-$KEY.tar.tmp" "$CACHE/runtime-$KEY.tar"
  rm -rf "$root" "$extra"
}

if [ -f "$CACHE/tools-$KEY.tar" ] && [ -f "$CACHE/runtime-$KEY.tar" ]; then
  ok "bases from the cache $CACHE"
else
  started=$(now_ms)
  build_bases
  ok "bases built with debootstrap in $((($(now_ms) - started) / 1000)) s, cached in $CACHE"
fi
pm image exists "$TOOLS" || pm import -q "$CACHE/tools-$KEY.tar" "$TOOLS" >/dev/null
pm image exists "$RUNTIME" \
  || pm import -q --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
    "$CACHE/runtime-$KEY.tar" "$RUNTIME" >/dev/null
ok "$TOOLS, $RUNTIME"
# Another runtime base (e.g. one with a file removed, to see the checks fail).
if [ -n "${IMAGE_CHECK_RUNTIME_BASE:-}" ]; then
  RUNTIME=$IMAGE_CHECK_RUNTIME_BASE
  echo "     runtime base: $RUNTIME (IMAGE_CHECK_RUNTIME_BASE)"
fi

[ "${1:-}" = --bases-only ] && exit 0

step "binaries"
timeout 1200 cargo build --release --locked -q -p pod-identity-agent \
  -p pod-identity-examples --bin pod-identity-agent --bin eks-auth-simulator
AGENT_BIN="$TARGET_DIR/release/pod-identity-agent"
SIM_BIN="$TARGET_DIR/release/eks-auth-simulator"
ok "cargo build --release --locked -p pod-identity-agent ($(du -h "$AGENT_BIN" | cut -f1) agent binary)"

# ---------------------------------------------------------------------------------------------
step "image"
mkdir -p "$WORK/context"
cp "$AGENT_BIN" "$WORK/context/pod-identity-agent"
# The previous image and no intermediate layers: each run leaves the bases and one image.
pm rmi -f "$IMAGE" >/dev/null 2>&1 || true
started=$(now_ms)
timeout 600 podman --storage-driver vfs build --runtime runc "${LIMITS[@]}" --network host \
  --pull=never --layers=false -f deploy/Dockerfile \
  --build-arg BINARY_FROM=prebuilt \
  --build-arg TOOLS_IMAGE="$TOOLS" --build-arg RUNTIME_IMAGE="$RUNTIME" \
  --build-arg VERSION="$VERSION" \
  -t "$IMAGE" "$WORK/context" >"$WORK/build.log" 2>&1 \
  || { tail -n 30 "$WORK/build.log"; die "podman build -f deploy/Dockerfile"; }
ok "built $IMAGE from deploy/Dockerfile (BINARY_FROM=prebuilt) in $((($(now_ms) - started) / 1000)) s"

user=$(pm image inspect -f '{{.Config.User}}' "$IMAGE")
[ "$user" = 65532:65532 ] && ok "image user $user" || fail "image user is '$user', not 65532:65532"
label=$(pm image inspect -f '{{index .Config.Labels "version"}}' "$IMAGE")
[ "$label" = "$VERSION" ] && ok "label version=$label" || fail "label version is '$label', not $VERSION"

mnt=$(pm image mount "$IMAGE")
caps=$(getcap "$mnt/pod-identity-agent" 2>/dev/null || true)
case "$caps" in
  *cap_net_bind_service*ep*) ok "the binary's file capability survived COPY: ${caps#"$mnt"/}" ;;
  *) fail "/pod-identity-agent in the image has no file capability cap_net_bind_service" ;;
esac
bundle="$mnt/etc/ssl/certs/ca-certificates.crt"
certs=$(grep -c 'BEGIN CERTIFICATE' "$bundle" 2>/dev/null || true)
if [ "${certs:-0}" -ge 50 ]; then
  ok "CA bundle /etc/ssl/certs/ca-certificates.crt: $certs certificates"
else
  fail "the image has no CA bundle at /etc/ssl/certs/ca-certificates.crt"
fi
extras=""
for p in bin/sh bin/bash usr/bin/sh usr/bin/apt usr/bin/dpkg; do
  { [ -e "$mnt/$p" ] || [ -L "$mnt/$p" ]; } && extras="$extras /$p"
done
[ -z "$extras" ] && ok "no shell or package manager in the image" || fail "the image has$extras"
pm image unmount "$IMAGE" >/dev/null

out=$(timeout 60 podman --storage-driver vfs run --runtime runc --rm "${LIMITS[@]}" --network none \
  --cap-drop ALL --cap-add NET_BIND_SERVICE --read-only "$IMAGE" --version 2>&1) \
  && [ "$out" = "pod-identity-agent $VERSION" ] \
  && ok "the binary runs in the image (every library found): $out" \
  || fail "the binary does not run in the image: $out"

SIZE=$(pm image inspect -f '{{.Size}}' "$IMAGE")

# ---------------------------------------------------------------------------------------------
step "EKS Auth simulator on loopback"
"$SIM_BIN" --state-dir "$WORK/sim" --cluster-name "$CLUSTER" >"$WORK/simulator.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 100); do [ -f "$WORK/sim/endpoint" ] && break; sleep 0.1; done
[ -f "$WORK/sim/endpoint" ] || { cat "$WORK/simulator.log"; die "the simulator did not start"; }
ENDPOINT=$(cat "$WORK/sim/endpoint")
ok "simulator on $ENDPOINT"
# The pod's side: its token as the Authorization header (a file, so it is never on a command line).
printf 'Authorization: %s\n' "$(cat "$WORK/sim/token")" >"$WORK/header"
chmod 0600 "$WORK/header"

# The DaemonSet's arguments of `subcommand`, read from the plain manifest (the chart's output).
daemonset_args() {
  awk -v start="- $1" '
    { line = $0; sub(/^[ \t]+/, "", line) }
    found && line !~ /^- --/ { exit }
    found { sub(/^- /, "", line); print line }
    line == start { found = 1; print $1 == "-" ? $2 : line }
  ' deploy/manifests/eks.yaml
}
mapfile -t SERVER_ARGS < <(daemonset_args server)
[ "${SERVER_ARGS[0]:-}" = server ] || die "no container runs \`server\` in deploy/manifests/eks.yaml"
# The chart's command, on a loopback address and with EKS Auth played by the simulator.
for i in "${!SERVER_ARGS[@]}"; do
  case "${SERVER_ARGS[$i]}" in
    --bind-hosts=*) SERVER_ARGS[i]="--bind-hosts=$HOST" ;;
    --metrics-address=*) SERVER_ARGS[i]="--metrics-address=127.0.0.1" ;;
  esac
done
SERVER_ARGS+=("--endpoint=$ENDPOINT")

port_free() {
  ! ss -Hltn "( sport = :$1 )" | grep -Eq "(\*|0\.0\.0\.0|\[::\]|${2//./\\.}):$1 "
}
port_free 80 "$HOST" || die "something on this host already listens on port 80 of $HOST"
port_free 2703 127.0.0.1 || die "something on this host already listens on 127.0.0.1:2703"

# "Drop ALL, add NET_BIND_SERVICE" as Kubernetes applies it: a bounding set of NET_BIND_SERVICE
# and no ambient capabilities. podman's --cap-add would also put the capability into the ambient
# set of a non-root user, which Kubernetes runtimes do not, and which would hide a missing file
# capability; so every other capability of podman's default set is dropped instead.
pm create --runtime runc --name pia-check-caps "$IMAGE" >/dev/null
defaults=$(pm inspect -f '{{.BoundingCaps}}' pia-check-caps)
pm rm pia-check-caps >/dev/null
DROP_BUT_BIND=$(tr -d '[]' <<<"$defaults" | tr ' ' '\n' | grep -v '^CAP_NET_BIND_SERVICE$' | grep . | paste -sd, -)
[ -n "$DROP_BUT_BIND" ] || die "cannot read podman's default capabilities"

# Runs the image detached as container $1, the chart's way (host network, read-only root
# filesystem, every capability dropped but NET_BIND_SERVICE), with further podman options up
# to `--`, then the agent's arguments.
run_agent() {
  local name=$1
  shift
  local options=()
  while [ "$1" != -- ]; do
    options+=("$1")
    shift
  done
  shift
  CONTAINERS+=("$name")
  pm rm -f -t 0 "$name" >/dev/null 2>&1 || true
  podman --storage-driver vfs run --runtime runc -d --name "$name" "${LIMITS[@]}" \
    --network host --read-only --read-only-tmpfs=false --cap-drop "$DROP_BUT_BIND" \
    -e AWS_REGION="$REGION" -e AWS_EC2_METADATA_DISABLED=true \
    "${options[@]}" "$IMAGE" "$@" >/dev/null
}

# Waits until /readyz answers 200, at most $2 seconds; fails early when the container exits.
wait_ready() {
  local deadline=$(($(now_ms) + $2 * 1000))
  while [ "$(now_ms)" -lt "$deadline" ]; do
    curl -fsS --max-time 1 -o /dev/null "http://$PROBES/readyz" 2>/dev/null && return 0
    [ "$(pm inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ] || return 1
    sleep 0.05
  done
  return 1
}

# `Uid: r e s f`, CapEff and CapAmb of the container's process.
proc_status() {
  local pid
  pid=$(pm inspect -f '{{.State.Pid}}' "$1" 2>/dev/null || true)
  [ -n "$pid" ] && [ "$pid" != 0 ] && [ -r "/proc/$pid/status" ] || {
    echo "not running"
    return 0
  }
  awk '/^(Uid|Gid|CapEff|CapBnd|CapAmb|NoNewPrivs):/ {$1 = $1; printf "%s ", $0}' "/proc/$pid/status"
}

credential_status() {
  curl -sS --max-time 10 -o "$WORK/response" -w '%{http_code}' -H "@$WORK/header" \
    "http://$HOST/v1/credentials" 2>/dev/null || true
}

# The access key id of the credentials in $WORK/response (not the secrets).
response_key() {
  sed -n 's/.*"AccessKeyId" *: *"\([A-Z0-9]*\)".*/\1/p' "$WORK/response"
}

issued_here() { [ -n "$1" ] && grep -Eq "access_key_id=\"?$1\"?( |\$)" "$WORK/simulator.log"; }

# Whether an answer with status $1 carried credentials the simulator issued (access key $2).
issued_answer() { [ "$1" = 200 ] && issued_here "$2"; }

show_logs() {
  echo "     container log ($1):"
  pm logs "$1" 2>&1 | tail -n 20 | sed 's/^/       /'
}

# A check about container $1: ok "$2" when the command after the messages succeeds, else the
# container's log and fail "$3".
expect() {
  local container=$1 passed=$2 failed=$3
  shift 3
  if "$@"; then
    ok "$passed"
  else
    show_logs "$container"
    fail "$failed"
  fi
}

# Asks container $1 for credentials with the minted token: ok "$2" on a 200 with credentials
# the simulator issued, else fail "$3".
expect_issued() {
  local code key
  code=$(credential_status)
  key=$(response_key)
  expect "$1" "$2: 200, $key issued by the simulator" "$3 answered $code" \
    issued_answer "$code" "$key"
}

# Sends SIGTERM to container $1, expects exit 0 within the grace period, and removes it.
expect_graceful_stop() {
  local code elapsed started
  started=$(now_ms)
  pm kill --signal TERM "$1" >/dev/null 2>&1 || true
  code=$(timeout $((GRACE + 10)) podman --storage-driver vfs wait "$1" 2>/dev/null || echo none)
  elapsed=$(($(now_ms) - started))
  expect "$1" "$1: SIGTERM: exit 0 after $elapsed ms (grace period ${GRACE} s)" \
    "$1: SIGTERM: exit code $code after $elapsed ms (grace period ${GRACE} s)" \
    test "$code" = 0 -a "$elapsed" -lt $((GRACE * 1000))
  pm rm -f -t 0 "$1" >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------------------------
step "cloud mode: the image's user, NET_BIND_SERVICE only, read-only, host network"
started=$(now_ms)
run_agent pia-check-cloud --env-file "$WORK/sim/node.env" -- "${SERVER_ARGS[@]}"
if wait_ready pia-check-cloud 30; then
  READY_MS=$(($(now_ms) - started))
  ok "probes: /readyz 200 on $PROBES, $READY_MS ms after podman run"
else
  show_logs pia-check-cloud
  die "the agent did not become ready on $PROBES within 30 s"
fi
# The HTTPS client for EKS Auth and STS is built at start-up; without CA certificates the SDK
# warns "no native root CA certificates found".
if pm logs pia-check-cloud 2>&1 | grep -qi 'no native root CA certificates'; then
  fail "the agent found no CA certificates in the image (its log says so)"
else
  ok "the agent's HTTPS client found the image's CA certificates (no warning at start-up)"
fi
code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://$PROBES/healthz" || true)
[ "$code" = 200 ] && ok "probes: /healthz 200" || fail "probes: /healthz answered $code"

status=$(proc_status pia-check-cloud)
if [[ "$status" == *"Uid: 65532 65532 65532 65532"* && "$status" == *"Gid: 65532 65532 65532 65532"* \
  && "$status" == *"CapEff: 0000000000000400"* && "$status" == *"CapBnd: 0000000000000400"* \
  && "$status" == *"CapAmb: 0000000000000000"* ]]; then
  ok "runs as 65532:65532 with only CAP_NET_BIND_SERVICE (from the file capability; none ambient)"
else
  fail "the agent's process: $status (expected uid/gid 65532, CapEff and CapBnd 0x400, CapAmb 0)"
fi

expect_issued pia-check-cloud "GET http://$HOST:80/v1/credentials with the minted token" \
  "GET http://$HOST:80/v1/credentials"
code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://$HOST/v1/credentials" || true)
[ "$code" = 400 ] && ok "without a token: 400" || fail "without a token: $code, not 400"

mkdir -p "$WORK/home"
botocore=$(env -i PATH="$PATH" HOME="$WORK/home" \
  AWS_CONFIG_FILE="$WORK/home/config" AWS_SHARED_CREDENTIALS_FILE="$WORK/home/credentials" \
  AWS_EC2_METADATA_DISABLED=true \
  AWS_CONTAINER_CREDENTIALS_FULL_URI="http://$HOST/v1/credentials" \
  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$WORK/sim/token" \
  timeout 60 .venv/bin/python -c '
import botocore.session
c = botocore.session.get_session().get_credentials()
print(c.method, c.get_frozen_credentials().access_key)
' 2>&1) || true
read -r method key <<<"$botocore"
if [ "$method" = container-role ] && issued_here "$key"; then
  ok "botocore on the host: container-role credentials $key"
else
  fail "botocore on the host: $botocore"
fi

expect_graceful_stop pia-check-cloud

# ---------------------------------------------------------------------------------------------
step "control: the same binary without the file capability cannot bind port 80"
# The host's copy of the binary (cargo's output has no file capability), run in the same
# container setup in place of the image's: it must be refused port 80, so the bind above rests
# on the image's file capability, not on anything the runtime grants.
if [ -n "$(getcap "$AGENT_BIN" 2>/dev/null)" ]; then
  fail "the host's $AGENT_BIN has a file capability; it cannot serve as the control"
else
  run_agent pia-check-control --env-file "$WORK/sim/node.env" \
    -v "$(cd "$(dirname "$AGENT_BIN")" && pwd)/pod-identity-agent:/control/pod-identity-agent:ro" \
    --entrypoint /control/pod-identity-agent -- "${SERVER_ARGS[@]}"
  code=$(timeout 30 podman --storage-driver vfs wait pia-check-control 2>/dev/null || echo none)
  denied=$(pm logs pia-check-control 2>&1 | grep -ci 'permission denied' || true)
  expect pia-check-control "refused port 80 (exit $code, permission denied)" \
    "without the file capability the agent did not fail to bind port 80 (exit $code)" \
    test "$code" != 0 -a "$code" != none -a "${denied:-0}" -gt 0
  pm rm -f -t 0 pia-check-control >/dev/null 2>&1 || true
fi

# ---------------------------------------------------------------------------------------------
step "initialize: NET_ADMIN (and NET_BIND_SERVICE, which the file capability needs), in the network namespace $NETNS"
ip netns add "$NETNS"
ip -n "$NETNS" link set lo up
mapfile -t INIT_ARGS < <(daemonset_args initialize)
[ "${INIT_ARGS[0]:-}" = initialize ] || die "no container runs \`initialize\` in deploy/manifests/eks.yaml"
initialize() {
  timeout 60 podman --storage-driver vfs run --runtime runc --rm "${LIMITS[@]}" \
    --network "ns:/run/netns/$NETNS" --user 0:0 --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_BIND_SERVICE \
    --read-only --read-only-tmpfs=false "$IMAGE" "$@" 2>&1
}
if ! log=$(initialize "${INIT_ARGS[@]}"); then
  if grep -q EOPNOTSUPP <<<"$log"; then
    echo "     this kernel has no dummy link type; initialize --existing-link=lo"
    for i in "${!INIT_ARGS[@]}"; do
      [[ "${INIT_ARGS[$i]}" == --link-name=* ]] && INIT_ARGS[i]=--existing-link=lo
    done
    log=$(initialize "${INIT_ARGS[@]}") || fail "initialize ${INIT_ARGS[*]:1}: $log"
  else
    fail "initialize ${INIT_ARGS[*]:1}: $log"
  fi
fi
addrs=$(ip -n "$NETNS" addr show)
if grep -q 'inet 169.254.170.23/' <<<"$addrs" && grep -q 'inet6 fd00:ec2::23/' <<<"$addrs"; then
  ok "initialize ${INIT_ARGS[*]:1}: 169.254.170.23 and fd00:ec2::23 in the namespace"
else
  fail "after initialize the namespace lacks the addresses: $addrs"
fi
log=$(initialize "${INIT_ARGS[@]}") && grep -q '"changes":0' <<<"$log" \
  && ok "initialize again: no changes" || fail "a second initialize: $log"
ip netns del "$NETNS"

# ---------------------------------------------------------------------------------------------
step "hybrid mode: uid 0, NET_BIND_SERVICE only, credentials only from /root/.aws (0600, root)"
hybrid="$WORK/hybrid-aws"
install -d -m 0700 -o 0 -g 0 "$hybrid"
install -m 0600 -o 0 -g 0 "$WORK/sim/credentials" "$hybrid/credentials"
HYBRID_ARGS=("${SERVER_ARGS[@]}")
# The chart's hybrid arguments add `--rotate-credentials true` (the reference chart's form);
# older binaries take the bare flag.
if timeout 10 "$AGENT_BIN" server --cluster-name=x --rotate-credentials true --help >/dev/null 2>&1; then
  HYBRID_ARGS+=(--rotate-credentials true)
elif timeout 10 "$AGENT_BIN" server --cluster-name=x --rotate-credentials --help >/dev/null 2>&1; then
  HYBRID_ARGS+=(--rotate-credentials)
fi
port_free 2703 127.0.0.1 || fail "127.0.0.1:2703 is still taken before the hybrid run"
run_agent pia-check-hybrid --user 0:0 --security-opt no-new-privileges \
  -v "$hybrid:/root/.aws:ro" -e AWS_SHARED_CREDENTIALS_FILE=/root/.aws/credentials \
  -- "${HYBRID_ARGS[@]}"
if wait_ready pia-check-hybrid 30; then
  status=$(proc_status pia-check-hybrid)
  if [[ "$status" == *"Uid: 0 0 0 0"* && "$status" == *"CapEff: 0000000000000400"* \
    && "$status" == *"CapBnd: 0000000000000400"* && "$status" == *"NoNewPrivs: 1"* ]]; then
    ok "runs as uid 0 with only CAP_NET_BIND_SERVICE and no_new_privs"
  else
    fail "the hybrid agent's process: $status"
  fi
  expect_issued pia-check-hybrid "credential request signed with the mounted file's node key" \
    "hybrid credential request"
else
  show_logs pia-check-hybrid
  fail "the hybrid agent did not become ready within 30 s"
fi
expect_graceful_stop pia-check-hybrid

# The control: the same container without the mount has no node credentials.
run_agent pia-check-hybrid-control --user 0:0 --security-opt no-new-privileges \
  -e AWS_SHARED_CREDENTIALS_FILE=/root/.aws/credentials -- "${HYBRID_ARGS[@]}"
wait_ready pia-check-hybrid-control 30 || true
code=$(credential_status)
if [ "$code" != 200 ] && [ "$code" != 000 ]; then
  ok "without the mount the same request fails ($code): the file was the only credential source"
else
  fail "without the mount the hybrid credential request answered $code"
fi
pm rm -f -t 0 pia-check-hybrid-control >/dev/null 2>&1 || true

# ---------------------------------------------------------------------------------------------
step "summary"
echo "image          $IMAGE ($ARCH; CI checks the host's architecture only)"
echo "image size     $((SIZE / 1000000)) MB ($SIZE bytes; base $(($(pm image inspect -f '{{.Size}}' "$RUNTIME") / 1000000)) MB)"
echo "start-to-ready ${READY_MS:-?} ms (podman run to /readyz 200, cloud mode)"
if [ "$failures" -gt 0 ]; then
  echo "image check: $failures failure(s)"
  exit 1
fi
echo "image check: ok"
