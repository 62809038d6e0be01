#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the pinned peers if missing (see
# install-peers.sh), then runs every unit and integration test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "test: cargo is needed (https://rustup.rs); the machine image normally has it" >&2
    exit 1
fi
# The TLS tests make their certificates with the openssl command.
if ! command -v openssl >/dev/null 2>&1; then
    echo "test: installing openssl" >&2
    { apt-get update -qq && apt-get install -y -qq openssl; } >&2
fi
# shellcheck disable=SC1090
source "$(scripts/install-peers.sh)"
echo "test: peers: $TEST_PEER_VERSIONS"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
{
    cargo test --workspace --locked "$@" &&
        # the cluster test, alone: it needs the machine to itself (see tests/it/faults.rs)
        cargo test --locked -p pc-eventd --test it "$@" -- --ignored
} 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
