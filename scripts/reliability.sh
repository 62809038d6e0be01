#!/usr/bin/env bash
# Runs the fault tests against real peers and writes their outcome as the reliability table in
# docs/reliability.md: per scenario, the events expected, delivered (distinct ids in the
# stream), stored twice, and missing. The tests themselves assert the exact figures; this only
# records what one run saw.
#
#   scripts/reliability.sh            # about 2 minutes
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
)
cargo test --locked --test it -- --exact --nocapture --test-threads 1 "${tests[@]}" \
  | tee /dev/stderr | grep -o 'RELIABILITY.*' >>"$rows"
# Three nats-servers electing leaders want the machine to themselves.
cluster=faults::a_three_node_cluster_with_r3_loses_nothing_when_a_node_dies
cargo test --locked --test it -- --exact --nocapture --ignored "$cluster" \
  | tee /dev/stderr | grep -o 'RELIABILITY.*' >>"$rows"

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
  echo "| scenario | expected | delivered | duplicates | lost | marker | reproduce |"
  echo "|---|---:|---:|---:|---:|---:|---|"
  while IFS=$'\t' read -r _ test scenario expected delivered duplicates lost marker; do
    ignored=""
    [[ $test == "$cluster" ]] && ignored=" --ignored"
    echo "| $scenario | $expected | $delivered | $duplicates | $lost | $marker | \`source \"\$(scripts/install-peers.sh)\" && cargo test --test it -- --exact$ignored $test\` |"
  done <"$rows"
  echo
  echo "The full-outbox row loses events by design (a 6 KiB outbox, far below the 1 MiB minimum the"
  echo "configuration allows): what matters there is that the loss is announced, and that the"
  echo "marker's count equals \`pc_eventd_events_dropped_total\` (the test asserts it). The marker counts"
  echo "every dropped event, \`status_changed\` included; *lost* counts only the crashes and restarts."
} >"$out"
echo "reliability: wrote $out ($(wc -l <"$rows") scenarios)"
