#!/usr/bin/env bash
# Checks the unit with systemd-analyze (verify, and the security exposure score), using the
# freshly built binary in place of /usr/bin/pc-eventd. The notify-reload drop-in is checked too
# where systemd understands Type=notify-reload (253 and later).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v systemd-analyze >/dev/null; then
    echo "verify: installing systemd for systemd-analyze" >&2
    { apt-get update -qq && apt-get install -y -qq systemd; } >&2
fi
cargo build --quiet --locked --bin pc-eventd
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s#/usr/bin/pc-eventd#$PWD/target/debug/pc-eventd#" systemd/pc-eventd.service >"$work/pc-eventd.service"
systemd-analyze verify "$work/pc-eventd.service"
version=$(systemd-analyze --version | awk 'NR==1 { print $2 }')
if [ "$version" -ge 253 ]; then
    mkdir "$work/pc-eventd.service.d"
    cp systemd/pc-eventd.service.d/notify-reload.conf "$work/pc-eventd.service.d/"
    SYSTEMD_UNIT_PATH="$work:" systemd-analyze verify pc-eventd.service
else
    echo "verify: systemd $version predates Type=notify-reload; the drop-in is not checked here" >&2
fi
systemd-analyze security --offline=true "$work/pc-eventd.service" | tail -1
# The consumer template, through its two instances.
sed "s#/usr/bin/pc-eventd#$PWD/target/debug/pc-eventd#" "systemd/pc-eventd-consumer@.service" \
    >"$work/pc-eventd-consumer@.service"
for command in remediate alert; do
    SYSTEMD_UNIT_PATH="$work:" systemd-analyze verify "pc-eventd-consumer@$command.service"
done
SYSTEMD_UNIT_PATH="$work:" systemd-analyze security --offline=true "pc-eventd-consumer@remediate.service" | tail -1
