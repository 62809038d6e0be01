#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the pinned peers if missing (see
# install-peers.sh), then runs every unit and integration test of the workspace.
#
#   scripts/test.sh                    everything
#   scripts/test.sh NAME -- ARGS       filtered by cargo test's arguments
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
suite=$(mktemp)
trap 'rm -f "$suite"' EXIT
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$suite" || status=$?

# sum FIELD FILE: the total of "N FIELD" over a file's `test result:` lines.
sum() {
    awk -v field="$2" '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ "^" field) n += $i }
        END { print n + 0 }' "$1"
}
passed=$(sum "$suite" passed)
failed=$(sum "$suite" failed)
ignored=$(sum "$suite" ignored)
filtered=$(sum "$suite" "filtered")
echo "test: $ignored ignored, $filtered filtered out by the arguments ($*)"
echo "$passed passed, $failed failed, $((ignored + filtered)) skipped"
exit "$status"
