#!/usr/bin/env bash
# Installs the pinned peers that the tests and the demo run against, and prints the environment
# that points at them (eval it, or source the file it writes).
#
#   nats-server     built with `go install` at a pinned version.
#   process-compose built with `go install` at a pinned version, with its Version set through
#                   ldflags so that it never runs its update check. If the Go module proxy refuses
#                   it, the repository's emulator (tools/pc-emulator) is built instead, and this
#                   script says so loudly: the tests then run against the emulator, never silently.
#   python          a venv with pinned nats-py and jsonschema, for the test of an outside client
#                   that knows only the JSON Schema (tests/schema_client.py).
#
# Binaries are cached in $EVENTD_PEERS_DIR (default ~/.cache/pc-eventd/peers), so a second
# run costs nothing. Output: $EVENTD_PEERS_DIR/env, a file of `export` lines.
set -euo pipefail

NATS_SERVER_VERSION=v2.12.1
PROCESS_COMPOSE_VERSION=v1.122.0
NATS_PY_VERSION=2.16.0
JSONSCHEMA_VERSION=4.26.0

root=$(cd "$(dirname "$0")/.." && pwd)
peers=${EVENTD_PEERS_DIR:-$HOME/.cache/pc-eventd/peers}
mkdir -p "$peers"

say() { printf 'install-peers: %s\n' "$*" >&2; }

need_go() {
    command -v go >/dev/null 2>&1 && return
    say "Go is needed to build the pinned peers (it builds them only; the product is Rust)."
    say "Install Go 1.24 or later and run this again."
    exit 1
}

# go_install NAME VERSION MODULE [LDFLAGS]: builds MODULE@VERSION into $peers/NAME-VERSION.
go_install() {
    local name=$1 version=$2 module=$3 ldflags=${4:-}
    local target="$peers/$name-$version"
    [ -x "$target" ] && return 0
    need_go
    local gobin
    gobin=$(mktemp -d)
    say "building $name $version with go install (one time, cached in $peers)"
    if GOBIN="$gobin" GOFLAGS=-mod=mod go install ${ldflags:+-ldflags "$ldflags"} "$module@$version" 2>"$gobin/err"; then
        mv "$gobin/$(basename "${module%/v2}")" "$target"
        rm -rf "$gobin"
        return 0
    fi
    sed 's/^/  go: /' "$gobin/err" >&2
    rm -rf "$gobin"
    return 1
}

go_install nats-server "$NATS_SERVER_VERSION" github.com/nats-io/nats-server/v2 || {
    say "ERROR: could not build nats-server $NATS_SERVER_VERSION"
    exit 1
}
nats_server="$peers/nats-server-$NATS_SERVER_VERSION"

pc_module=github.com/f1bonacc1/process-compose
if go_install process-compose "$PROCESS_COMPOSE_VERSION" "$pc_module" \
    "-X $pc_module/src/config.Version=$PROCESS_COMPOSE_VERSION"; then
    process_compose="$peers/process-compose-$PROCESS_COMPOSE_VERSION"
    process_compose_kind="process-compose $PROCESS_COMPOSE_VERSION"
else
    say "================================================================================"
    say "process-compose $PROCESS_COMPOSE_VERSION could not be installed (see the go error above)."
    say "Tests and the demo use the emulator in tools/pc-emulator instead: it runs real"
    say "processes and serves process-compose's REST API, but it is NOT process-compose."
    say "================================================================================"
    cargo build --quiet --manifest-path "$root/Cargo.toml" -p pc-emulator
    process_compose="$root/target/debug/pc-emulator"
    process_compose_kind="pc-emulator (stand-in: process-compose $PROCESS_COMPOSE_VERSION unavailable)"
fi

venv="$peers/python-nats-py-$NATS_PY_VERSION-jsonschema-$JSONSCHEMA_VERSION"
if [ ! -f "$venv/.complete" ]; then
    command -v python3 >/dev/null 2>&1 || { say "ERROR: python3 is needed for the schema client test"; exit 1; }
    say "installing nats-py $NATS_PY_VERSION and jsonschema $JSONSCHEMA_VERSION into $venv (one time)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "nats-py==$NATS_PY_VERSION" "jsonschema==$JSONSCHEMA_VERSION" >&2
    touch "$venv/.complete"
fi

cat >"$peers/env" <<ENV
export TEST_NATS_SERVER='$nats_server'
export TEST_PROCESS_COMPOSE='$process_compose'
export TEST_PROCESS_COMPOSE_KIND='$process_compose_kind'
export TEST_PYTHON='$venv/bin/python'
ENV
say "nats-server:     $nats_server"
say "process-compose: $process_compose ($process_compose_kind)"
echo "$peers/env"
