#!/usr/bin/env bash
# Runs ESB's tests: the whole workspace, with the containerd backend when it can be built.
#
# The containerd backend needs `protoc` at build time (apt-get install protobuf-compiler) and a
# running containerd at test time (ESB_CONTAINERD_ADDRESS; .ci/containerd.sh starts one). Without
# them its tests print why they skip, unless ESB_REQUIRE_CONTAINERD=1 makes that a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v protoc >/dev/null 2>&1 || [[ -n "${PROTOC:-}" ]]; then
    exec cargo test --workspace --all-features "$@"
fi
if [[ "${ESB_REQUIRE_CONTAINERD:-}" == 1 ]]; then
    echo "scripts/test.sh: ESB_REQUIRE_CONTAINERD=1 but protoc is missing (apt-get install protobuf-compiler)" >&2
    exit 1
fi
echo "scripts/test.sh: protoc not found: testing without the containerd backend (apt-get install protobuf-compiler to include it)" >&2
cargo test --workspace --exclude esb-agent-bin "$@"
cargo test -p esb-agent-bin --no-default-features "$@"
