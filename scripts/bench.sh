#!/usr/bin/env bash
# The benchmarks (benches/pipeline.rs, benches/dashboard.rs in Debian's chromium, and
# benches/fleet.rs, a fleet of hosts publishing into a 3-node hub) on this machine: installs
# the pinned peers and the browser if missing (see install-peers.sh), runs
# `cargo bench` (a release build), and rewrites the results section of docs/benchmarks.md with
# the tables, the date, the machine and the versions.
#
#   scripts/bench.sh                      everything (about 17 minutes plus the build), doc rewritten
#   scripts/bench.sh latency crashloop    only these sections (latency, crashloop, throughput,
#                                         resources, conditions, scale, dashboard, fleet); printed,
#                                         the doc is left alone
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "bench: cargo is needed (https://rustup.rs)" >&2
    exit 1
fi
peers_env=$(scripts/install-peers.sh) || exit 1
# shellcheck disable=SC1090
source "$peers_env"
echo "bench: peers: $TEST_PEER_VERSIONS" >&2

doc=docs/benchmarks.md
begin='<!-- results:begin (written by scripts/bench.sh) -->'
end='<!-- results:end -->'
if [ $# -eq 0 ] && ! { grep -qxF "$begin" "$doc" && grep -qxF "$end" "$doc"; }; then
    echo "bench: $doc lacks the results markers; nothing would be rewritten" >&2
    exit 1
fi

tables=$(mktemp)
section=$(mktemp)
trap 'rm -f "$tables" "$section"' EXIT
started=$(date +%s)
when=$(date -u '+%Y-%m-%d %H:%M UTC')
# The tables go to stdout (kept), progress and cargo's output to stderr.
pipeline_sections=()
dashboard=$(($# == 0))
fleet=$(($# == 0))
for section in "$@"; do
    case "$section" in
        dashboard) dashboard=1 ;;
        fleet) fleet=1 ;;
        *) pipeline_sections+=("$section") ;;
    esac
done
if [ $# -eq 0 ] || [ ${#pipeline_sections[@]} -gt 0 ]; then
    cargo bench --locked --bench pipeline -- "${pipeline_sections[@]}" >"$tables"
fi
if [ "$dashboard" -eq 1 ]; then
    cargo bench --locked --bench dashboard >>"$tables"
fi
if [ "$fleet" -eq 1 ]; then
    cargo bench --locked --bench fleet >>"$tables"
fi
took=$(($(date +%s) - started))
cat "$tables"

if [ $# -gt 0 ]; then
    echo "bench: partial run ($*): $doc left as it was" >&2
    exit 0
fi

model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
memory=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
    revision="$revision, with uncommitted changes"
fi
{
    echo "$begin"
    echo
    echo "Measured $when by \`scripts/bench.sh\` in one run of $took s, cargo's build step included."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| machine | $(nproc) CPUs (\`nproc\`), ${model:-unknown model} (\`/proc/cpuinfo\`), $memory RAM, Linux $(uname -r) |"
    echo "| pc-eventd | $version ($revision), \`cargo bench\` profile (release) |"
    echo "| toolchain | $(rustc --version) |"
    echo "| nats-server | $("$TEST_NATS_SERVER" --version 2>&1 | head -n 1 | sed 's/^nats-server: //') (\`-js\`, file store in a temp dir, 127.0.0.1) |"
    echo "| process-compose | $("$TEST_PROCESS_COMPOSE" version --short 2>/dev/null) (\`--tui=false\`, 127.0.0.1), as \`scripts/install-peers.sh\` installs it |"
    echo "| browser | $("$TEST_CHROMIUM" --version) with $("$TEST_CHROMEDRIVER" --version | cut -d' ' -f1-2) (the dashboard's section) |"
    echo
    cat "$tables"
    echo
    echo "$end"
} >"$section"

# Replace everything between the markers (inclusive) with the new section.
awk -v begin="$begin" -v end="$end" -v section="$section" '
    $0 == begin { while ((getline line < section) > 0) print line; skipping = 1; next }
    $0 == end { skipping = 0; next }
    !skipping { print }
' "$doc" >"$doc.new"
mv "$doc.new" "$doc"
echo "bench: $doc rewritten (results of $when)" >&2
