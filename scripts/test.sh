#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the pinned peers if missing (see
# install-peers.sh), then runs every unit and integration test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "test: cargo is needed (https://rustup.rs); the machine image normally has it" >&2
    exit 1
fi
# shellcheck disable=SC1090
source "$(scripts/install-peers.sh)"
echo "test: nats-server     $TEST_NATS_SERVER"
echo "test: process-compose $TEST_PROCESS_COMPOSE_KIND"
cargo test --workspace --locked "$@"
