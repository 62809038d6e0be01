#!/usr/bin/env bash
# Mutation testing with cargo-mutants (pinned) of the pure and delivery-critical code, and the
# score per file into docs/testing.md (the table between its markers).
#
#   scripts/mutants.sh            all groups below (about two hours on 2 cores); the doc rewritten
#   scripts/mutants.sh pure       one group: pure, kinds, outbox, config, relay or dashboard; the doc rewritten
#                                 with the groups that have results in target/mutants/
#
# Groups, each with the tests that state its behaviour:
#   pure    src/diff/ (but its tests), events/src/event.rs, src/commands/remediate/policy.rs,
#           src/commands/alert/episode.rs, events/src/retry.rs: unit tests
#   kinds   the later event kinds' parts: src/diff/conditions.rs, src/diff/settings.rs,
#           src/source/output.rs (its read against loopback listeners), src/ops/process_metrics.rs,
#           events/src/pattern.rs: unit tests
#   outbox  src/delivery/outbox.rs: unit tests
#   config  src/config/mod.rs and each section's config.rs: unit tests
#   relay   src/delivery/relay.rs: the integration tests that drive it (faults::, lifecycle::), against
#           the real peers
#   dashboard  src/commands/dashboard/ but its I/O (the feed's subscriptions, the handlers, the
#           history's read): unit tests. The I/O is stated by the browser tests (dashboard::),
#           each checked by hand against a mutant (docs/testing.md).
#
# Mutants that no test can tell apart from the original are excluded, each with its reason, in
# .cargo/mutants.toml. Not part of CI: too slow there.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_MUTANTS_VERSION=27.1.0
if [ "$(cargo mutants --version 2>/dev/null | awk '{ print $2 }')" != "$CARGO_MUTANTS_VERSION" ]; then
    echo "mutants: installing cargo-mutants $CARGO_MUTANTS_VERSION" >&2
    cargo install cargo-mutants --version "$CARGO_MUTANTS_VERSION" --locked --quiet
fi

run() {
    local group=$1
    shift
    echo "mutants: $group" >&2
    # cargo-mutants exits 2 when mutants were missed and 3 when some timed out (a mutant that
    # hangs the tests is caught by the timeout): results, not failures here.
    local status=0
    mkdir -p target/mutants
    # --workspace: the files named in the library crate (events/) are mutated too; without it
    # only the root package's are, silently.
    cargo mutants --workspace --profile mutants -j 2 --no-shuffle --output "target/mutants/$group" "$@" || status=$?
    [ "$status" -eq 0 ] || [ "$status" -eq 2 ] || [ "$status" -eq 3 ]
}

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(pure kinds outbox config relay dashboard)
for group in "${groups[@]}"; do
    case $group in
    pure)
        run pure -f src/diff/mod.rs -f src/diff/rules.rs -f src/diff/snapshot.rs \
            -f events/src/event.rs -f src/commands/remediate/policy.rs \
            -f src/commands/alert/episode.rs -f events/src/retry.rs \
            --cargo-test-arg=--lib
        ;;
    kinds)
        run kinds -f src/diff/conditions.rs -f src/diff/settings.rs -f src/source/output.rs \
            -f src/ops/process_metrics.rs -f events/src/pattern.rs --cargo-test-arg=--lib
        ;;
    outbox) run outbox -f src/delivery/outbox.rs --cargo-test-arg=--lib ;;
    config)
        run config -f src/config/mod.rs -f src/source/config.rs -f src/commands/remediate/config.rs \
            -f src/commands/alert/config.rs --cargo-test-arg=--lib
        ;;
    relay)
        peers_env=$(scripts/install-peers.sh) || exit 1
        # shellcheck disable=SC1090
        source "$peers_env"
        run relay -f src/delivery/relay.rs --cargo-test-arg=--test --cargo-test-arg=it \
            --cargo-test-arg=-- --cargo-test-arg=faults:: --cargo-test-arg=lifecycle::
        ;;
    dashboard)
        run dashboard -f src/commands/dashboard/feed.rs -f src/commands/dashboard/history.rs \
            -f src/commands/dashboard/server.rs -f src/commands/dashboard/config.rs \
            --exclude-re "(Dashboard::|Feed<'_>::|Page::| run with | feed ->|subscribe_|next_|open_fresh|current_state| read( ->|$)|(sign_in|full|html|text|empty) ->)" \
            --cargo-test-arg=--lib
        ;;
    *)
        echo "mutants: no group $group (pure, kinds, outbox, config, relay, dashboard)" >&2
        exit 2
        ;;
    esac
done
python3 scripts/mutants_table.py target/mutants docs/testing.md
