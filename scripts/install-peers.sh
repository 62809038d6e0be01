#!/usr/bin/env bash
# Installs the pinned peers that the tests, the demo and the benchmarks run against, and prints
# the environment that points at them (eval it, or source the file it writes).
#
#   nats-server      built with `go install` at a pinned version.
#   process-compose  two real releases: v1.122.0 (with the WebSocket state stream) and v1.103.0
#                    (before it: the tests of polling and of `auto` falling back to it).
#                    First `go install`, with Version set through ldflags so that it never runs
#                    its update check. Where the Go module proxy refuses the module, the real
#                    sources are built with process-compose's own build script from the shared
#                    peers folder ($EVENTD_SHARED_PEERS, default ../shared/peers beside the
#                    checkout). If neither works this script fails: nothing else ever stands in
#                    for process-compose.
#   python           a venv with pinned nats-py and jsonschema, for the test of an outside client
#                    that knows only the JSON Schema (tests/schema_client.py).
#   chromium         Debian's chromium and chromium-driver, for the dashboard's tests in a real
#                    browser (tests/it/dashboard.rs) and its benchmark; installed with apt-get
#                    when missing (as root, or through sudo).
#   promtool         from Debian's prometheus package (2.42 on bookworm), for the unit tests of
#                    the alert rules (packaging/prometheus, tests/it/rules.rs); installed with
#                    apt-get --no-install-recommends when promtool is missing (as root, or
#                    through sudo). The package also holds the Prometheus server, which its
#                    install may start: this script stops a server the install started.
#
# Binaries are cached in $EVENTD_PEERS_DIR (default ~/.cache/pc-eventd/peers), so a second
# run costs nothing. Output: $EVENTD_PEERS_DIR/env, a file of `export` lines.
set -euo pipefail

NATS_SERVER_VERSION=v2.12.1
PROCESS_COMPOSE_VERSION=v1.122.0
# The newest release before the state stream (v1.110.0).
PROCESS_COMPOSE_POLL_VERSION=v1.103.0
NATS_PY_VERSION=2.16.0
JSONSCHEMA_VERSION=4.26.0

root=$(cd "$(dirname "$0")/.." && pwd)
peers=${EVENTD_PEERS_DIR:-$HOME/.cache/pc-eventd/peers}
shared_peers=${EVENTD_SHARED_PEERS:-$root/../shared/peers}
mkdir -p "$peers"

say() { printf 'install-peers: %s\n' "$*" >&2; }

need_go() {
    command -v go >/dev/null 2>&1 && return
    say "Go is needed to build the pinned peers (it builds them only; the product is Rust)."
    say "Install Go 1.26 or later and run this again."
    exit 1
}

# go_install NAME VERSION MODULE [LDFLAGS]: builds MODULE@VERSION into $peers/NAME-VERSION.
go_install() {
    local name=$1 version=$2 module=$3 ldflags=${4:-}
    local target="$peers/$name-$version"
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

# process_compose VERSION: the real process-compose VERSION in $peers, by go install or else
# by the shared build script; exits with an explanation when neither can make it.
process_compose() {
    local version=$1 target="$peers/process-compose-$1"
    local module=github.com/f1bonacc1/process-compose
    [ -x "$target" ] && return 0
    go_install process-compose "$version" "$module" "-X $module/src/config.Version=$version" && return 0
    local build="$shared_peers/process-compose/build.sh"
    if [ -x "$build" ]; then
        say "go install refused process-compose $version; building its own sources with $build"
        "$build" "$version" "$target" && return 0
    fi
    say "ERROR: cannot install process-compose $version."
    say "  go install failed (above), and $build could not build it."
    say "  Install process-compose $version as $target, or point EVENTD_SHARED_PEERS at a"
    say "  folder with process-compose/build.sh, and run this again."
    exit 1
}

[ -x "$peers/nats-server-$NATS_SERVER_VERSION" ] ||
    go_install nats-server "$NATS_SERVER_VERSION" github.com/nats-io/nats-server/v2 || {
    say "ERROR: could not build nats-server $NATS_SERVER_VERSION"
    exit 1
}
process_compose "$PROCESS_COMPOSE_VERSION"
process_compose "$PROCESS_COMPOSE_POLL_VERSION"

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

chromium=/usr/bin/chromium
chromedriver=/usr/bin/chromedriver
if [ ! -x "$chromium" ] || [ ! -x "$chromedriver" ]; then
    say "installing Debian's chromium and chromium-driver (the dashboard's browser tests)"
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium chromium-driver; } >&2 || {
        say "ERROR: cannot install chromium and chromium-driver with apt-get."
        say "  Install them (Debian: apt-get install chromium chromium-driver) and run this again."
        exit 1
    }
fi

promtool=$(command -v promtool || true)
if [ -z "$promtool" ]; then
    say "installing Debian's prometheus for its promtool (the alert rules' unit tests)"
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    # The ids of running Prometheus servers (not zombies: a stopped server stays one until its
    # parent reaps it).
    servers() { ps -eo pid=,stat=,comm= | awk '$3 == "prometheus" && $2 !~ /^Z/ { print $1 }'; }
    servers_before=$(servers)
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends prometheus; } >&2 || {
        say "ERROR: cannot install prometheus (for promtool) with apt-get."
        say "  Install it (Debian: apt-get install --no-install-recommends prometheus) and run this again."
        exit 1
    }
    # Only promtool is wanted, but the package's postinst starts its server where it can: with
    # systemd (and enables it), or with its init script where no policy-rc.d forbids it (a
    # container's policy-rc.d usually does). A server the install started is stopped here, by
    # the way it was started (the init script stops the pid of its own pidfile).
    if [ -d /run/systemd/system ]; then
        $sudo systemctl disable --now prometheus.service >&2 || true
    elif [ -e /run/prometheus/prometheus.pid ]; then
        say "stopping the Prometheus server that the package's install started"
        $sudo /etc/init.d/prometheus stop >&2 || true
    fi
    if [ "$(servers)" != "$servers_before" ]; then
        say "ERROR: installing prometheus left a Prometheus server running:"
        pgrep -a -x prometheus | sed 's/^/  /' >&2 || true
        say "  Stop it (systemctl stop prometheus, or /etc/init.d/prometheus stop) and run this again."
        exit 1
    fi
    promtool=$(command -v promtool || true)
    [ -n "$promtool" ] || {
        say "ERROR: the prometheus package is installed but promtool is not on PATH."
        exit 1
    }
fi

nats_server="$peers/nats-server-$NATS_SERVER_VERSION"
pc_stream="$peers/process-compose-$PROCESS_COMPOSE_VERSION"
pc_poll="$peers/process-compose-$PROCESS_COMPOSE_POLL_VERSION"
# The versions as the binaries themselves report them, for every run to print.
versions="nats-server $("$nats_server" --version | sed 's/^nats-server: //'),"
versions+=" process-compose $("$pc_stream" version --short 2>/dev/null) (state stream)"
versions+=" and $("$pc_poll" version --short 2>/dev/null) (before the stream),"
versions+=" $("$chromedriver" --version | cut -d' ' -f1-2),"
versions+=" promtool $("$promtool" --version 2>&1 | sed -n 's/^promtool, version \([^ ]*\).*/\1/p')"
cat >"$peers/env" <<ENV
export TEST_NATS_SERVER='$nats_server'
export TEST_PROCESS_COMPOSE='$pc_stream'
export TEST_PROCESS_COMPOSE_POLL='$pc_poll'
export TEST_PEER_VERSIONS='$versions'
export TEST_PYTHON='$venv/bin/python'
export TEST_CHROMIUM='$chromium'
export TEST_CHROMEDRIVER='$chromedriver'
export TEST_PROMTOOL='$promtool'
ENV
say "peers: $versions"
echo "$peers/env"
