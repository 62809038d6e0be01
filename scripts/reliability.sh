#!/usr/bin/env bash
# Runs the fault tests against real peers and writes their outcome as the reliability table in
# docs/reliability.md: per scenario, the events expected, delivered (distinct ids in the
# stream), stored twice, and missing. The tests themselves assert the exact figures; this only
# records what one run saw.
#
#   scripts/reliability.sh            # about 5 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=/dev/null
source "$(scripts/install-peers.sh)"
echo "reliability: peers: $TEST_PEER_VERSIONS" >&2

out=docs/reliability.md
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT

tests=(
  faults::a_nats_outage_delays_events_without_losing_reordering_or_repeating_them
  lifecycle::events_in_the_outbox_survive_kill_9_while_nats_is_down
  lifecycle::kill_9_in_a_burst_then_restart_loses_and_repeats_nothing
  stream::a_restarted_process_compose_flips_readiness_and_is_caught_up
  faults::a_full_outbox_drops_loudly_and_puts_a_loss_marker_on_the_bus
  faults::a_three_node_cluster_with_r3_loses_nothing_when_a_node_dies
  fleet::a_fleet_through_leaf_nodes_loses_and_repeats_nothing_through_hub_leaf_and_daemon_faults
)
cargo test --locked --test it -- --exact --nocapture --test-threads 1 "${tests[@]}" \
  | tee /dev/stderr | grep -o -E '(RELIABILITY|FLEET)\b.*' >>"$rows"

# What follows this line in the doc is written by hand, and kept.
by_hand='<!-- written by hand below: scripts/reliability.sh keeps it -->'
kept=$(awk -v mark="$by_hand" '$0 == mark { on = 1 } on' "$out" 2>/dev/null || true)

# row FIELDS...: one table row of a RELIABILITY line.
row() {
  local _ test scenario expected delivered duplicates lost marker
  IFS=$'\t' read -r _ test scenario expected delivered duplicates lost marker <<<"$1"
  echo "| $scenario | $expected | $delivered | $duplicates | $lost | $marker | \`source \"\$(scripts/install-peers.sh)\" && cargo test --test it -- --exact $test\` |"
}
header() {
  echo "| scenario | expected | delivered | duplicates | lost | marker | reproduce |"
  echo "|---|---:|---:|---:|---:|---:|---|"
}

{
  echo "# Reliability"
  echo
  echo "Written by \`scripts/reliability.sh\` on $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -sr));"
  echo "nats-server and process-compose as \`scripts/install-peers.sh\` installs them"
  echo "($TEST_PEER_VERSIONS). Each row is one run of an integration test"
  echo "that asserts these figures itself; *delivered* counts distinct event ids in the stream"
  echo "afterwards, *duplicates* ids stored more than once, *lost* expected events missing, and *marker*"
  echo "what the \`events_lost\` markers on the bus reported (see docs/running.md, \"The outbox\")."
  echo
  header
  grep '^RELIABILITY' "$rows" | grep -v $'\tfleet::' | while IFS= read -r line; do row "$line"; done
  echo
  echo "The full-outbox row loses events by design (a 6 KiB outbox, far below the 1 MiB minimum the"
  echo "configuration allows): what matters there is that the loss is announced, and that the"
  echo "marker's count equals \`pc_eventd_events_dropped_total\` (the test asserts it). The marker counts"
  echo "every dropped event, \`status_changed\` included; *lost* counts only the crashes and restarts."
  echo
  echo "## A fleet"
  echo
  echo "\`tests/it/fleet.rs\`: a 3-node hub cluster from \`packaging/nats/hub.conf\` holding the R3"
  echo "stream, and four simulated hosts, each a leaf node from \`packaging/nats/leaf.conf\` with its own"
  echo "process-compose running two crash loops and its own \`pc-eventd run\` (the binary the tests build)"
  echo "publishing through it in the by-source layout (see [deployment.md](deployment.md))."
  echo "In turn: a hub node is killed with SIGKILL (and started again once the fleet recovered),"
  echo "host-0's leaf node is killed for 60 s, host-1's daemon is killed with SIGKILL and started again."
  echo "Then the crash loops are stopped, and the test waits until each host's last events show the"
  echo "state its process-compose reports (status and restart count). *Expected* is, per host, the"
  echo "sum over its processes of the last per-process sequence number \`seq\`: the daemon numbers"
  echo "each process's events from 1 without a gap, so every number below the last must be in the"
  echo "stream once, and in order (the test asserts both)."
  echo
  header
  grep '^RELIABILITY' "$rows" | grep $'\tfleet::' | while IFS= read -r line; do row "$line"; done
  echo
  echo "How long each fault held events back, in this run:"
  echo
  grep '^FLEET' "$rows" | tr '\t' '\n' | tail -n +2 | sed 's/^/- /'
  echo
  if [ -n "$kept" ]; then
    echo "$kept"
  else
    echo "$by_hand"
  fi
} >"$out"
echo "reliability: wrote $out ($(grep -c '^RELIABILITY' "$rows") scenarios)"
