#!/usr/bin/env bash
# Fuzzes the process-compose JSON decoding and the diff engine with cargo-fuzz (libFuzzer),
# each target for a bounded time: FUZZ_SECONDS (default 60) each. CI runs it for 30 s a target
# (a smoke run: .ci/run); give it 600 or more for a real search.
# Findings land in fuzz/artifacts/<target>/ and fail the run; the corpus grows in
# fuzz/corpus/<target>/ (both outside git).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
CARGO_FUZZ_VERSION=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null | awk '{ print $2 }')" != "$CARGO_FUZZ_VERSION" ]; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi
# cargo-fuzz passes nightly-only flags to rustc; RUSTC_BOOTSTRAP lets this stable toolchain
# accept them (no nightly toolchain can be fetched here).
export RUSTC_BOOTSTRAP=1
for target in decode diff; do
    echo "fuzz: $target for ${seconds}s" >&2
    cargo fuzz run --fuzz-dir fuzz "$target" -- -max_total_time="$seconds"
done
