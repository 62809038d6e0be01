#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (installed if missing) and checks what it holds:
# the binary, the systemd unit, and /etc/pc-eventd.toml as a conffile.
#   PROFILE=dev packaging/build-deb.sh   builds from the debug profile (quicker, for CI)
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: later versions may refuse the dev profile that CI uses for speed.
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb 3.8.0" ]; then
    echo "build-deb: installing cargo-deb 3.8.0" >&2
    cargo install cargo-deb --locked --version 3.8.0 --quiet --force
fi
profile=${PROFILE:-release}
out=$(mktemp -d)
cargo deb --locked -p pc-eventd --profile "$profile" --fast --output "$out" >&2
deb=$(ls "$out"/*.deb)

contents=$(dpkg-deb -c "$deb")
conffiles=$(dpkg-deb -I "$deb" conffiles)
missing=0
for path in ./usr/bin/pc-eventd ./lib/systemd/system/pc-eventd.service \
    ./lib/systemd/system/pc-eventd-consumer@.service ./etc/pc-eventd.toml \
    ./usr/share/doc/pc-eventd/README.md ./usr/share/doc/pc-eventd/docs/running.md \
    ./usr/share/doc/pc-eventd/lifecycle-event.schema.json \
    ./usr/share/doc/pc-eventd/events-lost.schema.json \
    ./usr/share/doc/pc-eventd/remediation-event.schema.json \
    ./usr/share/doc/pc-eventd/packaging/nats/hub.conf \
    ./usr/share/doc/pc-eventd/packaging/nats/leaf.conf \
    ./usr/share/doc/pc-eventd/packaging/prometheus/pc-eventd.rules.yml; do
    if ! grep -q " $path\$" <<<"$contents"; then
        echo "build-deb: $path is missing from the package" >&2
        missing=1
    fi
done
if ! grep -qx "/etc/pc-eventd.toml" <<<"$conffiles"; then
    echo "build-deb: /etc/pc-eventd.toml is not a conffile" >&2
    missing=1
fi
[ "$missing" = 0 ] || exit 1
echo "build-deb: $deb holds the binary, the unit and the conffile" >&2
echo "$deb"
