#!/usr/bin/env bash
# The library crate (pc-eventd-events) is what a consumer compiles: it must not bring the
# daemon's dependencies, nor (with its process-compose feature) an HTTP server. Then it must
# package: what crates.io would get builds on its own, with every feature.
set -euo pipefail
cd "$(dirname "$0")/.."
daemon_only='^(clap|figment|hyper|hyper-util|prometheus-client|sd-notify|tokio-tungstenite|tungstenite|tracing-journald) '
found=$(cargo tree --locked -p pc-eventd-events -e normal --prefix none | grep -E "$daemon_only" | sort -u || true)
if [ -n "$found" ]; then
    echo "check-library: pc-eventd-events depends on what only the daemon needs:" >&2
    echo "$found" >&2
    exit 1
fi
if cargo tree --locked -p pc-eventd-events -e features --features process-compose -i hyper |
    grep -q 'hyper feature "server"'; then
    echo "check-library: the process-compose feature brings hyper's server" >&2
    exit 1
fi
cargo package --locked -p pc-eventd-events --all-features --quiet
echo "check-library: pc-eventd-events has none of the daemon's dependencies and packages"
