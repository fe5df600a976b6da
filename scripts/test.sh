#!/usr/bin/env bash
# Runs every check and test, from a fresh clone on a fresh Debian 12 machine:
# installs what is missing, builds the guests to components, then formatting,
# clippy, and the workspace's tests (unit tests beside the code; integration tests
# in tests/ against the real runtime, the real components, a real Kafka-protocol
# broker and real VictoriaMetrics, which scripts/services.sh starts on loopback),
# then a smoke run of the end-to-end benchmark (scripts/bench.sh --smoke) and a
# short run of every fuzz target (scripts/fuzz.sh --seconds 10).
set -euo pipefail
cd "$(dirname "$0")/.."

# One full run builds each crate once, so incremental caches only cost disk
# (gigabytes, with wasmtime and rdkafka); a developer's own setting wins.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

scripts/install-deps.sh
scripts/build-guests.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The integration tests run the `boulder` binary, which `cargo test` alone does not
# build. Binaries and tests in one invocation share one feature resolution (the
# dev-dependencies' features included): built apart, wasmtime and cranelift were
# compiled twice. Built now, before the services start, so that nothing heavy runs
# beside the services while they wait.
cargo build --workspace --bins --tests --quiet

# The end-to-end tests need a broker and VictoriaMetrics, started only now so that
# they are fresh when the tests begin; stop what we started, and if a test fails,
# show whether the services were still up and what they logged.
started_services=false
# Read whole before searching: `status | grep -q` under pipefail fails whenever
# grep exits before status has written its last line, which read as "all up"
# and left the services unstarted.
services_status=$(scripts/services.sh status)
if [[ $services_status != *down* ]]; then
    echo "test: services already running; leaving them running" >&2
else
    scripts/services.sh start
    started_services=true
fi
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        scripts/services.sh status >&2 || true
        scripts/services.sh logs >&2 || true
    fi
    if $started_services; then scripts/services.sh stop; fi
    exit "$rc"
}
trap on_exit EXIT
cargo test --workspace
# The end-to-end benchmark, small: Kafka -> wasm (and native) chain -> VictoriaMetrics,
# on the services above (it leaves them running; on_exit stops what we started).
# It checks that the harness works, not how fast Boulder is, so it runs the debug
# binary built above: a release build as well would add minutes and 1.4 GB.
BENCH_BOULDER="$PWD/target/debug/boulder" scripts/bench.sh --smoke
# A short run of every fuzz target (host/fuzz: the decoders, a guest's answer, the
# config loader, line protocol's round trip), to keep them building and to catch
# what the seeds and ten seconds each find; the long runs are scripts/fuzz.sh's
# (docs/FUZZING.md). The services are not needed; they stop after this.
scripts/fuzz.sh --seconds 10
