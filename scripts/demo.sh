#!/usr/bin/env bash
# The demo stack: nats-server (JetStream) + process-compose running a demo project that includes
# pc-eventd itself as its `event-adapter` (restart: always), a process that crashes now and then,
# one with a readiness probe that flaps, one that crashes for good unless something restarts it,
# one that grows over its memory threshold, one that goes silent now and then,
# and `pc-eventd remediate` (allowed to touch those two only) as `remediator`; `pc-eventd watch`
# runs in the foreground, with `watch --remediation` beside it, and `pc-eventd dashboard` serves the
# live page on http://127.0.0.1:9480/ (DEMO_DASHBOARD_PORT; a free port when 9480 is taken).
# Ctrl-C ends it, or DEMO_SECONDS=N ends it after N seconds. Everything listens on 127.0.0.1.
# DEMO_SCREENSHOT=FILE.png saves a picture of the dashboard a minute in (the README's picture).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

peers_env=$(scripts/install-peers.sh) || exit 1
# shellcheck disable=SC1090
source "$peers_env"
cargo build --quiet --bin pc-eventd
pc_eventd="$root/target/debug/pc-eventd"

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nats_port=${DEMO_NATS_PORT:-$(free_port)}
pc_port=${DEMO_PC_PORT:-$(free_port)}
nats_url="nats://127.0.0.1:$nats_port"

"$TEST_NATS_SERVER" -js -a 127.0.0.1 -p "$nats_port" -sd "$work/nats" -l "$work/nats.log" &
pids+=($!)
for _ in $(seq 150); do
    grep -q "Server is ready" "$work/nats.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "Server is ready" "$work/nats.log" || { echo "demo: nats-server did not start" >&2; exit 1; }

cat >"$work/pc-eventd.toml" <<TOML
[remediate]
# memmon's way too: a process over its memory threshold is restarted.
on = ["crashed", "unhealthy", "resource_pressure"]
allow = ["fragile", "hog"]
[remediate.policy]
max_attempts = 3
window = "2m"

[conditions]
sample_interval = "2s"
[[conditions.pressure]]
processes = ["hog"]
memory = "64MiB"
for = "4s"
[[conditions.silence]]
processes = ["batch"]
after = "8s"
TOML

cat >"$work/process-compose.yaml" <<YAML
version: "0.5"
processes:
  event-adapter:
    command: "$pc_eventd run --config $work/pc-eventd.toml --compose-port $pc_port --nats-url $nats_url --poll-interval 500ms"
    environment:
      - "PC_EVENTD_DAEMON__STATE_DIR=$work/state"
      - "PC_EVENTD_PROCESS_COMPOSE__SOURCE=demo-host"
    availability:
      restart: always
  web:
    # ready while its flag file exists; the flag comes and goes every 20 s
    command: "while true; do touch $work/web.ready; sleep 20; rm -f $work/web.ready; sleep 20; done"
    readiness_probe:
      exec:
        command: "test -f $work/web.ready"
      period_seconds: 2
      failure_threshold: 1000
  flaky:
    # crashes with exit 3 after 5 to 12 seconds, and is restarted; its crash carries its last
    # lines, the password redacted
    command: "echo 'connecting with DB_PASSWORD=hunter2'; sleep \$((RANDOM % 8 + 5)); echo 'lost the database: giving up'; exit 3"
    availability:
      restart: always
      backoff_seconds: 2
  fragile:
    # crashes after 15 s and has no restart policy: the remediator brings it back, three times
    # in two minutes at most
    command: "sleep 15; exit 4"
  hog:
    # after 20 s holds 96 MiB, over its 64 MiB threshold: resource_pressure, and the remediator
    # restarts it
    command: "exec python3 -c 'import time; time.sleep(20); held = bytes([120]) * (96 << 20); time.sleep(100000)'"
  batch:
    # prints for 10 s, then nothing for 20 s: silent, then output_resumed
    command: "while true; do for i in 1 2 3 4 5; do echo working; sleep 2; done; sleep 20; done"
  remediator:
    command: "$pc_eventd remediate --config $work/pc-eventd.toml --compose-port $pc_port --nats-url $nats_url"
    availability:
      restart: always
  nightly-report:
    command: "echo report"
    disabled: true
YAML

echo "demo: peers: $TEST_PEER_VERSIONS"
echo "demo: nats-server on $nats_url, process-compose on 127.0.0.1:$pc_port"
echo "demo: files in $work; Ctrl-C to stop"
"$TEST_PROCESS_COMPOSE" up -f "$work/process-compose.yaml" -t=false --address 127.0.0.1 -p "$pc_port" \
    -L "$work/process-compose.log" >/dev/null 2>&1 &
pids+=($!)

dashboard_port=${DEMO_DASHBOARD_PORT:-9480}
if ! python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', $dashboard_port))" 2>/dev/null; then
    dashboard_port=$(free_port)
    echo "demo: 127.0.0.1:${DEMO_DASHBOARD_PORT:-9480} is taken; the dashboard uses $dashboard_port"
fi
# It prints its URL once it listens.
"$pc_eventd" dashboard --listen "127.0.0.1:$dashboard_port" --nats-url "$nats_url" \
    2>"$work/dashboard.log" &
pids+=($!)

"$pc_eventd" watch --remediation --nats-url "$nats_url" &
pids+=($!)
if [ -n "${DEMO_SCREENSHOT:-}" ]; then
    scripts/dashboard-screenshot.py "http://127.0.0.1:$dashboard_port/" "$DEMO_SCREENSHOT" 60 &
    pids+=($!)
fi
watch_args=(watch --crash-output --nats-url "$nats_url")
if [ -n "${DEMO_SECONDS:-}" ]; then
    timeout --signal=INT --preserve-status "$DEMO_SECONDS" "$pc_eventd" "${watch_args[@]}" || true
else
    "$pc_eventd" "${watch_args[@]}" || true
fi
