#!/usr/bin/env bash
# Starts a private containerd and a local OCI registry for ESB's containerd tests.
#
# Run as root. Idempotent: a daemon that already answers is left alone. Prints the
# `export` lines the tests read, so a caller can `eval "$(.ci/containerd.sh)"`.
#
#   containerd  socket  $ESB_CI_DIR_RUN/containerd/containerd.sock
#               root    $ESB_CI_DIR_LIB/containerd, state $ESB_CI_DIR_RUN/containerd/state
#   registry    127.0.0.1:5000 (plain HTTP, storage $ESB_CI_DIR_LIB/registry)
#
# Packages: containerd runc containernetworking-plugins docker-registry (Debian/Ubuntu).
set -euo pipefail

run_dir=${ESB_CI_DIR_RUN:-/run/esb-ci}
lib_dir=${ESB_CI_DIR_LIB:-/var/lib/esb-ci}
log_dir=${ESB_CI_DIR_LOG:-$lib_dir/log}
registry_addr=${ESB_REGISTRY_ADDR:-127.0.0.1:5000}
socket=$run_dir/containerd/containerd.sock

log() { echo "containerd.sh: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (containerd needs it)"
    exit 1
fi
for bin in containerd runc docker-registry; do
    command -v "$bin" >/dev/null || { log "$bin is not installed"; exit 1; }
done

mkdir -p "$run_dir/containerd/state" "$lib_dir/containerd" "$lib_dir/registry" "$log_dir"

# waits until "$@" succeeds, up to 30 s
wait_for() {
    local what=$1; shift
    for _ in $(seq 1 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "$what did not come up; its log:"
    tail -n 50 "$log_dir/$what.log" >&2 || true
    return 1
}

containerd_up() { ctr --address "$socket" version; }
registry_up() { curl -fsS "http://$registry_addr/v2/"; }

if ! containerd_up >/dev/null 2>&1; then
    cat >"$run_dir/containerd/config.toml" <<TOML
version = 2
root = "$lib_dir/containerd"
state = "$run_dir/containerd/state"
# Only what ESB uses: no CRI (it would want its own CNI setup), no other snapshotters.
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$socket"
  max_recv_message_size = 16777216
  max_send_message_size = 16777216

[ttrpc]
  address = "$run_dir/containerd/containerd.sock.ttrpc"

[debug]
  address = "$run_dir/containerd/debug.sock"
  level = "info"

[metrics]
  address = ""
TOML
    log "starting containerd on $socket"
    setsid containerd --config "$run_dir/containerd/config.toml" \
        >>"$log_dir/containerd.log" 2>&1 </dev/null &
    echo $! >"$run_dir/containerd/pid"
    wait_for containerd containerd_up
fi

if ! registry_up >/dev/null 2>&1; then
    mkdir -p "$run_dir/registry"
    cat >"$run_dir/registry/config.yml" <<YAML
version: 0.1
log:
  level: warn
  fields:
    service: esb-ci-registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $lib_dir/registry
  delete:
    enabled: true
http:
  addr: $registry_addr
  headers:
    X-Content-Type-Options: [nosniff]
YAML
    log "starting docker-registry on $registry_addr"
    setsid docker-registry serve "$run_dir/registry/config.yml" \
        >>"$log_dir/registry.log" 2>&1 </dev/null &
    echo $! >"$run_dir/registry/pid"
    wait_for registry registry_up
fi

echo "export ESB_CONTAINERD_ADDRESS=$socket"
echo "export ESB_TEST_REGISTRY=$registry_addr"
