#!/usr/bin/env bash
# Fuzzes what takes untrusted bytes, with cargo-fuzz (libFuzzer): the four
# decoders, the host's handling of a guest's answer, the config loader, and line
# protocol's decode -> encode -> decode. The targets are in host/fuzz/.
#
# Usage: scripts/fuzz.sh [--seconds N] [--runs N] [TARGET...]
#   --seconds N  how long each target runs (default 60)
#   --runs N     stop each target after N executions instead
#   TARGET       one or more of the targets (default: all of them)
# Prints, per target, the executions run, the time and the rate, and exits
# non-zero at the first crash (its input is in host/fuzz/artifacts/TARGET/).
#
# libFuzzer needs nightly compiler features; the installed stable toolchain has
# them behind RUSTC_BOOTSTRAP=1. The targets are built without a sanitizer:
# Boulder's code is safe Rust but for reviewed blocks, and an address sanitizer
# would reach the C code of its dependencies too (librdkafka's build refuses it).
# Each run starts from the seeds in host/fuzz/seeds/TARGET/ and keeps what it
# finds in host/fuzz/corpus/TARGET/ (not tracked).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/host"

seconds=60
runs=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo install cargo-fuzz (a minute or two, once)" >&2
    cargo install --locked --quiet cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
flags=(--release --sanitizer none)
mapfile -t all < <(cargo fuzz list)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

echo "fuzz: building ${#targets[@]} targets (the first build compiles Boulder's dependencies too)" >&2
cargo fuzz build "${flags[@]}"

limit=(-max_total_time="$seconds")
[ -n "$runs" ] && limit=(-runs="$runs")
printf '%-28s %14s %9s %12s\n' target executions seconds execs/s
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    seeds=()
    [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
    log="fuzz/corpus/$target.log"
    start=$(date +%s.%N)
    if ! cargo fuzz run "${flags[@]}" "$target" "$corpus" "${seeds[@]}" -- \
        "${limit[@]}" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz: $target crashed; the input is in host/fuzz/artifacts/$target/" >&2
        exit 1
    fi
    end=$(date +%s.%N)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    awk -v t="$target" -v n="${execs:-0}" -v s="$start" -v e="$end" \
        'BEGIN { d = e - s; printf "%-28s %14d %9.1f %12.0f\n", t, n, d, (d > 0 ? n / d : 0) }'
done
