#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the pinned peers if missing (see
# install-peers.sh), then runs every unit and integration test of the workspace, then the
# 3-node cluster test alone (it needs the machine to itself: see tests/it/faults.rs).
#
#   scripts/test.sh                    everything
#   scripts/test.sh NAME -- ARGS       the first pass filtered by cargo test's arguments; the
#                                      cluster pass always runs, whatever the arguments
#
# The closing line counts every test: passed, failed, and skipped (ignored, or left out by a
# filter), so that a run that skipped something says so.
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
# A failed install stops here, with install-peers' own explanation above.
peers_env=$(scripts/install-peers.sh) || exit 1
# shellcheck disable=SC1090
source "$peers_env"
echo "test: peers: $TEST_PEER_VERSIONS"
cluster=faults::a_three_node_cluster_with_r3_loses_nothing_when_a_node_dies
suite=$(mktemp)
alone=$(mktemp)
trap 'rm -f "$suite" "$alone"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$suite" || status=$?
cargo test --locked -p pc-eventd --test it -- --ignored --exact "$cluster" 2>&1 | tee "$alone" || status=$?

# sum FIELD FILE: the total of "N FIELD" over a file's `test result:` lines.
sum() {
    awk -v field="$2" '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ "^" field) n += $i }
        END { print n + 0 }' "$1"
}
passed=$(($(sum "$suite" passed) + $(sum "$alone" passed)))
failed=$(($(sum "$suite" failed) + $(sum "$alone" failed)))
if [ "$(sum "$alone" passed)" -ne 1 ] && [ "$(sum "$alone" failed)" -ne 1 ]; then
    echo "test: the cluster test did not run" >&2
    status=1
fi
ignored=$(sum "$suite" ignored)
filtered=$(sum "$suite" "filtered")
# The first pass counts the cluster test as ignored (or filtered out), since the second runs it.
if [ "$ignored" -gt 0 ]; then
    ignored=$((ignored - 1))
elif [ "$filtered" -gt 0 ]; then
    filtered=$((filtered - 1))
fi
echo "test: $ignored ignored, $filtered filtered out by the arguments ($*)"
echo "$passed passed, $failed failed, $((ignored + filtered)) skipped"
exit "$status"
