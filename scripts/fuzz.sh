#!/usr/bin/env bash
# Fuzzes the process-compose JSON decoding and the diff engine with cargo-fuzz (libFuzzer),
# each target for a bounded time: FUZZ_SECONDS (default 60) each. Not part of CI.
# Findings land in fuzz/artifacts/<target>/; the corpus grows in fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet
fi
# cargo-fuzz passes nightly-only flags to rustc; RUSTC_BOOTSTRAP lets this stable toolchain
# accept them (no nightly toolchain can be fetched here).
export RUSTC_BOOTSTRAP=1
for target in decode diff; do
    echo "fuzz: $target for ${seconds}s" >&2
    cargo fuzz run --fuzz-dir fuzz "$target" -- -max_total_time="$seconds"
done
