#!/usr/bin/env bash
# Checks the units as they sit in the repository, as a user would: `systemd-analyze verify` on
# systemd/pc-eventd.service and on the consumer template's two instances must print nothing (it
# exits 0 on warnings, so any message fails here). The one message allowed is that
# /usr/bin/pc-eventd is not there, on a machine where the package is not installed; the same
# units are then verified once more with the freshly built binary in its place, so that the
# command line is still checked. The notify-reload drop-in is checked installed as a drop-in
# where systemd understands Type=notify-reload (253 and later). The exposure scores must stay at
# or below MAX_EXPOSURE.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v systemd-analyze >/dev/null; then
    echo "verify: installing systemd for systemd-analyze" >&2
    { apt-get update -qq && apt-get install -y -qq systemd; } >&2
fi
cargo build --quiet --locked --bin pc-eventd
units=$PWD/systemd
binary=/usr/bin/pc-eventd
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# verify_quietly UNIT_PATH UNIT: systemd-analyze verify UNIT from UNIT_PATH, failing on any
# message but the missing binary.
verify_quietly() {
    local out
    out=$(SYSTEMD_UNIT_PATH="$1:" systemd-analyze verify "$2" 2>&1) || true
    if [ ! -x "$binary" ]; then
        out=$(grep -vF "Command $binary is not executable: No such file or directory" <<<"$out" || true)
    fi
    if [ -n "$out" ]; then
        echo "verify: $2 (from $1):" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "verify: $2 (from $1): no warnings" >&2
}

verify_quietly "$units" pc-eventd.service
verify_quietly "$units" pc-eventd-consumer@remediate.service
verify_quietly "$units" pc-eventd-consumer@alert.service
verify_quietly "$units" pc-eventd-consumer@dashboard.service

# The same units with the built binary in place of /usr/bin/pc-eventd.
for unit in pc-eventd.service pc-eventd-consumer@.service; do
    sed "s#$binary#$PWD/target/debug/pc-eventd#" "$units/$unit" >"$work/$unit"
done
binary=$PWD/target/debug/pc-eventd
verify_quietly "$work" pc-eventd.service
verify_quietly "$work" pc-eventd-consumer@remediate.service

version=$(systemd-analyze --version | awk 'NR==1 { print $2 }')
if [ "$version" -ge 253 ]; then
    mkdir "$work/pc-eventd.service.d"
    cp systemd/notify-reload.conf "$work/pc-eventd.service.d/"
    verify_quietly "$work" pc-eventd.service
else
    echo "verify: systemd $version predates Type=notify-reload; the drop-in is not checked here" >&2
fi
# exposure UNIT: systemd-analyze's overall exposure score of UNIT (from $units), which must not
# rise above MAX_EXPOSURE: loosening the sandbox fails here, not in a review.
MAX_EXPOSURE=1.1
exposure() {
    local line score
    line=$(SYSTEMD_UNIT_PATH="$units:" systemd-analyze security --offline=true "$1" | tail -1)
    echo "$line"
    score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$line")
    if [ -z "$score" ] || awk -v s="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(s > max) }'; then
        echo "verify: $1's exposure ${score:-(unreadable)} is above $MAX_EXPOSURE" >&2
        exit 1
    fi
}
exposure pc-eventd.service
exposure pc-eventd-consumer@remediate.service
exposure pc-eventd-consumer@alert.service
exposure pc-eventd-consumer@dashboard.service
