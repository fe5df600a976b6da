#!/usr/bin/env bash
# End-to-end benchmark of `boulder run`: Kafka -> decode -> router -> a tenant's
# 3-stage chain -> gzip'd batch writes to VictoriaMetrics, against the real broker
# and VictoriaMetrics on loopback that scripts/services.sh provides.
#
#   1. builds the release binary and the guests, starts the services if they are
#      not up (and stops them at exit only if it started them);
#   2. generates N points of line protocol once (scripts/bench-gen.py: 300
#      series, 1-5 tags and 1-5 fields, 3 of each on average, 20% single-field,
#      floats and some integers, nanosecond timestamps in the last hour) into
#      target/bench/points.lp;
#   3. K rounds of one run of each variant (wasm: the chain as WebAssembly
#      components; native: `[runtime] native_builtins = true`, skipped with a note
#      when this build does not know the key); each run:
#        - preloads the points into a fresh topic, bench-<this run's id>
#          (P partitions, 100 lines per message), untimed;
#        - starts `boulder run` on that topic with a new consumer group (so from
#          the earliest offset), waits until VictoriaMetrics holds every sample of
#          the run, sampling the process's CPU time and peak RSS, and stops it with
#          SIGTERM;
#   4. once more with the WebAssembly chain and an output that refuses every
#      connection (a stalled sink), until the in-flight budget is full: the peak RSS
#      then, against the budget (points in flight are held as line protocol, so
#      the budget in bytes is the points times their average line length);
#   5. prints a table (medians over the K runs) and appends it to
#      target/bench/results.md.
#
# CPU placement: `boulder` runs on the first half of the CPUs this script may use
# and the broker and VictoriaMetrics on the other half (taskset; services that were
# already running get their placement back at exit). The figure is Boulder's own
# CPU time, and the services, which burn about twice as much during a run, are the
# benchmark's load, not what it measures: sharing cores with them, Boulder's CPU time
# measured 2-15% more, depending on the hour, and moved more from round to round
# (docs/PERFORMANCE.md). --no-pin shares every core, as before.
#
# Tansu keeps topics in memory: each run adds about 3 times the size of points.lp
# to its RSS (~700 MiB for 2M points) until it is restarted (`scripts/services.sh
# stop`, then `start`).
#
# Every field of every point is one sample in VictoriaMetrics (single-field points
# are flipped to `M_F value=v`, and it runs with -influxSkipSingleField), so a run
# is complete when VictoriaMetrics holds exactly as many samples as the generator
# wrote fields, and Boulder's /metrics says it wrote exactly N points.
#
# Usage: scripts/bench.sh [--points N] [--runs K] [--partitions P] [--perf] [--no-pin] [--smoke]
#   --points N      points to generate (default 2,000,000; or BENCH_POINTS)
#   --runs K        runs per variant; the table shows medians (default 1; BENCH_RUNS)
#   --partitions P  partitions of the topic (default 4; BENCH_PARTITIONS)
#   --perf          also record each run's CPU profile (perf record -g; perf costs
#                   CPU too, so its runs' figures are not for the table) next to its log
#   --no-pin        let boulder share every CPU with the services (BENCH_PIN=0)
#   --smoke         N = 20,000: a quick end-to-end check (what scripts/test.sh runs)
# Environment: BENCH_BOULDER (a boulder binary to run instead of building one, to
# compare two builds in alternating invocations), BENCH_KAFKA_OPTIONS (the
# consumer's librdkafka options, see below),
# BENCH_PIPELINE (lines for the config's [pipeline] table),
# BOULDER_KAFKA_PORT, BOULDER_VM_A_PORT, BOULDER_SERVICES_DIR (as scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

usage() { sed -n '/^# Usage:/,/^#   --smoke/s/^# //p' "$0"; }

# ---- options ----
points=${BENCH_POINTS:-2000000}
runs=${BENCH_RUNS:-1}
partitions=${BENCH_PARTITIONS:-4}
smoke=false
profile=false
pin=true
[ "${BENCH_PIN:-1}" != 0 ] || pin=false
while [ $# -gt 0 ]; do
    case $1 in
    --points) points=${2:?--points needs a number}; shift 2 ;;
    --points=*) points=${1#*=}; shift ;;
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    --runs=*) runs=${1#*=}; shift ;;
    --partitions) partitions=${2:?--partitions needs a number}; shift 2 ;;
    --partitions=*) partitions=${1#*=}; shift ;;
    --perf) profile=true; shift ;;
    --no-pin) pin=false; shift ;;
    --smoke) points=20000; smoke=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
if $profile && ! command -v perf >/dev/null; then
    echo "bench: --perf needs perf: apt-get install linux-perf" >&2
    exit 2
fi
for v in points runs partitions; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench: --$v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
# librdkafka options for `boulder run`'s consumer, inside a TOML inline table.
# With librdkafka's default fetch.wait.max.ms (500 ms), Tansu hands out about one
# 1 MiB fetch per partition every 0.2-0.3 s even with plenty of data waiting, so
# the runs measure the broker (~150k points/s here, whatever the chain); 50 ms
# takes it out of the way. BENCH_KAFKA_OPTIONS="" runs with librdkafka's defaults.
kafka_options=${BENCH_KAFKA_OPTIONS-'"fetch.wait.max.ms" = "50"'}
# BENCH_PIPELINE: lines for the [pipeline] table, to try other batch sizes, e.g.
# BENCH_PIPELINE='batch_bytes = "256KiB"'. Default: Boulder's defaults.
pipeline_options=${BENCH_PIPELINE-}
for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "bench: needs $tool (apt-get install $tool)" >&2; exit 1; }
done

# ---- where things are ----
kafka=127.0.0.1:${BOULDER_KAFKA_PORT:-19092}
vm=http://127.0.0.1:${BOULDER_VM_A_PORT:-18428}
boulder=${BENCH_BOULDER:-$root/target/release/boulder}
bench=$root/target/bench
id=$(date -u +%Y%m%d-%H%M%S)-$$       # names this invocation's runs: topics, groups, run tags
dir=$bench/runs/$id                    # its configs and logs
data=$bench/points.lp                  # the generated points (overwritten each time)
mkdir -p "$dir"

log() { echo "bench: $*" >&2; }

# Microseconds since the epoch, from bash's clock (no fork).
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo $((10#$t)); }
# Microseconds as seconds with 2 decimals; and a ratio with N decimals.
secs() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" -v d="${3:-0}" 'BEGIN { if (b > 0) printf "%.*f", d, a / b; else printf "-" }'; }

# ---- CPU placement (see the top of this file) ----
# The CPUs this script may use (a container may allow fewer than the machine has,
# and not from 0), split in two halves: boulder's, then the services'.
mapfile -t cpus < <(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)), sep="\n")')
boulder_cpus="" services_cpus="" all_cpus=$(IFS=,; echo "${cpus[*]}")
if $pin && [ "${#cpus[@]}" -ge 2 ] && command -v taskset >/dev/null; then
    half=$((${#cpus[@]} / 2))
    boulder_cpus=$(IFS=,; echo "${cpus[*]:0:half}")
    services_cpus=$(IFS=,; echo "${cpus[*]:half}")
elif $pin; then
    log "note: not pinning (needs taskset and 2 CPUs; ${#cpus[@]} available): boulder shares the CPUs with the services"
    pin=false
fi
# Prefix of every timed `boulder` command.
on_boulder_cpus=()
$pin && on_boulder_cpus=(taskset -c "$boulder_cpus")
pinned_services=()

# pin_services: puts every thread of the running services on their CPUs.
pin_services() {
    $pin || return 0
    local name pid
    for name in kafka vm-a vm-b; do
        pid=$(cat "$services_dir/$name.pid" 2>/dev/null) && alive "$pid" || continue
        if taskset -a -p -c "$services_cpus" "$pid" >/dev/null; then
            pinned_services+=("$pid")
        else
            log "note: could not pin $name (pid $pid) to CPUs $services_cpus"
        fi
    done
}

# ---- cleanup: stop our boulder, and the services if we started them ----
boulder_pid=""
started_services=false
on_exit() {
    local rc=$?
    if [ -n "$boulder_pid" ] && kill -0 "$boulder_pid" 2>/dev/null; then
        kill -KILL "$boulder_pid" 2>/dev/null || true
        wait "$boulder_pid" 2>/dev/null || true
    fi
    if $started_services; then
        scripts/services.sh stop || true
    else
        # Services that were running before get every CPU back.
        for pid in "${pinned_services[@]}"; do taskset -a -p -c "$all_cpus" "$pid" >/dev/null 2>&1 || true; done
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# ---- 1. build, then services ----
if [ -n "${BENCH_BOULDER:-}" ]; then
    log "using $boulder (BENCH_BOULDER); building the guests"
else
    log "building boulder (release) and the guests"
    cargo build --release --quiet -p boulder
fi
scripts/build-guests.sh

services_status=$(scripts/services.sh status)
if [[ $services_status != *down* ]]; then
    log "services already running; leaving them running"
else
    scripts/services.sh start
    started_services=true
fi

# ---- 2. generate the points ----
log "generating $points points into $data"
gen_start_us=$(now_us)
python3 scripts/bench-gen.py "$points" >"$data" 2>"$dir/gen.txt" || { cat "$dir/gen.txt" >&2; exit 1; }
gen_end_us=$(now_us)
# The generator's summary: points=N samples=S single_field_points=K series=M
summary=$(tail -n 1 "$dir/gen.txt")
samples=$(sed -n 's/.*samples=\([0-9]*\).*/\1/p' <<<"$summary")
[ -n "$samples" ] || { log "no summary from the generator: $summary"; exit 1; }
data_mb=$(awk -v b="$(stat -c %s "$data")" 'BEGIN { printf "%.1f", b / 1048576 }')
log "generated in $(secs $((gen_end_us - gen_start_us))) s: $summary, $data_mb MiB"
if [ "${data_mb%.*}" -ge 100 ]; then
    log "note: Tansu keeps every run's topic in memory, ~$((${data_mb%.*} * 3)) MiB per run, until it is restarted"
fi

# ---- 3. the runs ----

# Preloading.
# Each run gets its own topic, preloaded before `boulder run` starts (not timed).
# VictoriaMetrics counts each run's samples apart by a `test` label set to the
# topic's name, which it adds itself to everything written through the run's
# output URL (`?extra_label=`; VictoriaMetrics 1.79 ignores `bucket`). Until
# 2026-11-26 (06303b7) the label was a tag in every point, ~35 bytes that made each
# line a quarter longer than the shape the issue asks for, for decoding, the guests
# and gzip alike. The label is `test` because the demo shows only series without one.
#
# `boulder produce` awaits each message before sending the next, so librdkafka's
# default linger.ms (5 ms) would cost 5 ms per message: 100 s for 2M points. A
# producer-only config sets linger.ms = 0 (else the same as --brokers).
cat >"$dir/produce.toml" <<EOF
[kafka]
brokers = "$kafka"
options = { "linger.ms" = "0" }
EOF
messages=$(((points + 99) / 100))

# preload RUN_ID: produces the points to topic bench-RUN_ID; appends the time it
# took (µs) to $dir/produce.tsv.
preload() {
    local t
    t=$(now_us)
    "$boulder" produce --config "$dir/produce.toml" --topic "bench-$1" --partitions "$partitions" \
        --lines-per-message 100 - <"$data" 2>"$dir/produce.log" || { cat "$dir/produce.log" >&2; exit 1; }
    t=$(($(now_us) - t))
    echo "$t" >>"$dir/produce.tsv"
    log "preloaded topic bench-$1 ($partitions partitions, $messages messages of 100 lines) in $(secs "$t") s:" \
        "$(ratio "$points" "$(secs "$t")") points/s"
}

# write_config VARIANT RUN_ID FILE: the config of one run.
write_config() {
    local native=""
    [ "$1" = native ] && native="native_builtins = true"
    cat >"$3" <<EOF
# Written by scripts/bench.sh: run $2 ($1).
[runtime]
components_dir = "$root/target/components"
cache_dir = "$bench/cache"
$native

[kafka]
brokers = "$kafka"
group_id = "bench-$2"          # new: starts from the earliest offset
options = { $kafka_options }

[[inputs]]
topics = ["bench-$2"]
format = "influx-line"
precision = "ns"

[dlq]
topic = "bench-$2-dlq"

[http]
listen = "127.0.0.1:0"         # the port is read from the log

[pipeline]
$pipeline_options

[router]
component = "route"
params = { default = "ops", unrouted = "dead-letter", rules = [{ tag = "tenant" }] }

# As boulder.example.toml's ops tenant.
[[tenants]]
name = "ops"
chain = [
    { component = "validate", params = { non_finite = "drop-field", strings = "drop-field" } },
    { component = "normalize", params = { tag_values = false } },
    { component = "flip-single-fields", params = { except = [] } },
]
limits = { memory = "64MiB", cpu_per_batch = "1s", max_output_ratio = 8, quarantine_after = 5 }
outputs = [{ url = "$vm/api/v2/write?extra_label=test%3Dbench-$2", org = "ops", bucket = "metrics",
             gzip = true, gzip_level = 1, batch_points = 10000, batch_age = "1s",
             timeout = "10s", max_retry_time = "1h" }]
EOF
}

# vm_samples RUN_ID: the samples VictoriaMetrics holds for a run, test="bench-RUN_ID".
# A flush first, since freshly ingested data becomes searchable only after one;
# then one instant query counting over a window that covers every generated
# timestamp (an export of millions of samples would itself take seconds);
# nocache=1 so that no cached partial result answers.
vm_samples() {
    local now_s=$(($(now_us) / 1000000))
    local window=$((now_s - gen_start_us / 1000000 + 3600 + 60))
    curl -sf --max-time 10 "$vm/internal/force_flush" >/dev/null || true
    curl -sf --max-time 30 "$vm/api/v1/query" \
        --data-urlencode "query=sum(count_over_time({test=\"bench-$1\"}[${window}s]))" \
        --data-urlencode "time=$now_s" --data-urlencode "nocache=1" |
        sed -n 's/.*"value":\[[^,]*,"\([0-9.e+]*\)"\].*/\1/p' | awk '{ printf "%d", $1 + 0 }' || true
}

# alive PID: the process runs (exists and is not a zombie).
alive() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) && [ -n "$state" ] && [ "$state" != Z ]
}

# metric_sum TEXT NAME: the sum of a metric's samples, all labels together.
metric_sum() { awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.6f", s + 0 }' <<<"$1"; }

# fail_run MESSAGE: says why a run failed, with the end of boulder's log.
fail_run() {
    log "FAILED: $1"
    log "the last 30 lines of $run_log:"
    tail -n 30 "$run_log" >&2 || true
    exit 1
}

clk_tck=$(getconf CLK_TCK)
services_dir=${BOULDER_SERVICES_DIR:-$root/target/services}

# svc_ticks NAME: CPU ticks so far of a service scripts/services.sh started (its
# pid file), or -1 when unknown.
svc_ticks() {
    local pid
    pid=$(cat "$services_dir/$1.pid" 2>/dev/null) && alive "$pid" &&
        awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo -1
}
# svc_delta BEFORE AFTER: ticks between two readings, or -1.
svc_delta() { if [ "$1" -ge 0 ] && [ "$2" -ge 0 ]; then echo $(($2 - $1)); else echo -1; fi; }
timeout_s=$((60 + points / 20000))

# run_once VARIANT K: one run; appends a line to $dir/results.tsv:
# variant wall_us cpu_ticks hwm_kb first_write_us write_span_us guest_s vm_ticks kafka_ticks
run_once() {
    local variant=$1 run_id="$id-$1-$2"
    local cfg="$dir/$variant-$2.toml"
    run_log="$dir/$variant-$2.log"
    write_config "$variant" "$run_id" "$cfg"
    preload "$run_id"

    log "run $variant #$2: boulder run --config $cfg (log $run_log)"
    local t0 deadline now addr="" text="" written=0 first_us=0 all_us=0 have=0
    local ticks=0 hwm=0 i=0 vm0 kafka0
    vm0=$(svc_ticks vm-a)
    kafka0=$(svc_ticks kafka)
    t0=$(now_us)
    deadline=$((t0 + timeout_s * 1000000))
    BOULDER_LOG=info "${on_boulder_cpus[@]}" "$boulder" run --config "$cfg" >/dev/null 2>"$run_log" &
    boulder_pid=$!
    if $profile; then
        # Attached once boulder is past exec (attaching at once records nothing);
        # ends by itself when boulder exits.
        (sleep 0.5 && exec perf record -q -e cpu-clock -g -p "$boulder_pid" \
            -o "$dir/$variant-$2.perf" >/dev/null 2>"$dir/$variant-$2.perf.log") &
        log "run $variant #$2: profile in $dir/$variant-$2.perf (perf report -i ...)"
    fi
    while :; do
        sleep 0.2
        i=$((i + 1))
        now=$(now_us)
        alive "$boulder_pid" || fail_run "boulder exited before VictoriaMetrics held every sample"
        # CPU time (utime + stime, all threads) and peak RSS so far.
        ticks=$(awk '{ print $14 + $15 }' "/proc/$boulder_pid/stat" 2>/dev/null || echo "$ticks")
        hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$boulder_pid/status" 2>/dev/null || echo "$hwm")
        # Points written, from its status endpoint (port 0: the port is in the log).
        [ -n "$addr" ] || addr=$(sed -n 's/.*status endpoint listening.*addr=\([0-9.:]*\).*/\1/p' "$run_log" | head -n 1)
        if [ -n "$addr" ] && text=$(curl -sf --max-time 2 "http://$addr/metrics"); then
            written=$(metric_sum "$text" boulder_points_written_total | cut -d. -f1)
            [ "$first_us" -gt 0 ] || [ "$written" -eq 0 ] || first_us=$now
            [ "$all_us" -gt 0 ] || [ "$written" -lt "$points" ] || all_us=$now
        fi
        # VictoriaMetrics cannot hold everything before Boulder wrote everything:
        # ask it only then (or every 2 s when the status endpoint does not answer).
        if [ "$written" -ge "$points" ] || { [ -z "$text" ] && [ $((i % 10)) -eq 0 ]; }; then
            have=$(vm_samples "$run_id")
            [ "${have:-0}" -lt "$samples" ] || break
        fi
        if [ "$now" -gt "$deadline" ]; then
            log "boulder's counters: written=$written" \
                "dropped=$(metric_sum "$text" boulder_points_dropped_total)" \
                "dead-lettered=$(metric_sum "$text" boulder_points_dead_lettered_total)"
            fail_run "VictoriaMetrics holds ${have:-0} of $samples samples for test=\"bench-$run_id\" after ${timeout_s} s ($written of $points points written)"
        fi
    done
    local wall_us=$(($(now_us) - t0))
    # Final readings while it is still up.
    local vm_ticks kafka_ticks
    vm_ticks=$(svc_delta "$vm0" "$(svc_ticks vm-a)")
    kafka_ticks=$(svc_delta "$kafka0" "$(svc_ticks kafka)")
    ticks=$(awk '{ print $14 + $15 }' "/proc/$boulder_pid/stat")
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$boulder_pid/status")
    text=$(curl -sf --max-time 2 "http://$addr/metrics" || true)
    echo "$text" >"$dir/$variant-$2.metrics"
    written=$(metric_sum "$text" boulder_points_written_total | cut -d. -f1)
    local guest_s
    guest_s=$(metric_sum "$text" boulder_guest_seconds_sum)

    # Stop: SIGTERM, then wait (it has pipeline.shutdown_timeout, 30 s, to finish).
    kill -TERM "$boulder_pid"
    for _ in $(seq 400); do alive "$boulder_pid" || break; sleep 0.1; done
    if alive "$boulder_pid"; then
        log "boulder did not stop within 40 s of SIGTERM; killing it"
        kill -KILL "$boulder_pid" 2>/dev/null || true
    fi
    local rc=0
    wait "$boulder_pid" || rc=$?
    boulder_pid=""
    [ "$rc" -eq 0 ] || fail_run "boulder exited with status $rc after SIGTERM"

    # Exactly: more samples would be duplicates, more points a miscount.
    [ "$have" -eq "$samples" ] || fail_run "VictoriaMetrics holds $have samples for test=\"bench-$run_id\", expected exactly $samples"
    [ "$written" -eq "$points" ] || fail_run "boulder wrote $written points, expected exactly $points"
    [ "$first_us" -gt 0 ] || first_us=$t0
    [ "$all_us" -gt 0 ] || all_us=$now
    log "run $variant #$2: $samples samples in VictoriaMetrics after $(secs "$wall_us") s," \
        "CPU $(ratio "$ticks" "$clk_tck" 2) s, peak RSS $((hwm / 1024)) MiB"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$wall_us" "$ticks" "$hwm" \
        "$((first_us - t0))" "$((all_us - first_us))" "$guest_s" "$vm_ticks" "$kafka_ticks" >>"$dir/results.tsv"
}

# run_stalled: the wasm chain with an output that refuses connections (nothing
# listens on port 9), so that every point consumed stays in flight; waits until
# nothing more is taken in for 3 s (the budget is full), then records the budget,
# the points in flight, the RSS before the first point and the peak RSS
# (stalled.tsv: budget in_flight start_kb hwm_kb).
run_stalled() {
    local run_id="$id-stalled" cfg="$dir/stalled.toml" budget=200000
    # The smoke run has fewer points than the default budget: fill a smaller one.
    $smoke && budget=5000
    run_log="$dir/stalled.log"
    write_config wasm "$run_id" "$cfg"
    sed -i -e 's|url = "[^"]*/api/v2/write?|url = "http://127.0.0.1:9/api/v2/write?|' \
        -e "s|^\[pipeline\]|[pipeline]\nmax_in_flight_points = $budget|" "$cfg"
    preload "$run_id"
    log "stalled run: boulder run --config $cfg (log $run_log)"
    BOULDER_LOG=info "${on_boulder_cpus[@]}" "$boulder" run --config "$cfg" >/dev/null 2>"$run_log" &
    boulder_pid=$!
    local addr="" text="" in_flight=0 start_kb="" last=-1 still=0 deadline
    deadline=$(($(now_us) + timeout_s * 1000000))
    while [ "$still" -lt 15 ]; do
        sleep 0.2
        alive "$boulder_pid" || fail_run "boulder exited during the stalled run"
        [ "$(now_us)" -lt "$deadline" ] || fail_run "the in-flight budget did not fill within $timeout_s s"
        [ -n "$addr" ] || addr=$(sed -n 's/.*status endpoint listening.*addr=\([0-9.:]*\).*/\1/p' "$run_log" | head -n 1)
        [ -n "$addr" ] || continue
        text=$(curl -sf --max-time 2 "http://$addr/metrics") || continue
        # RSS once it runs but before it has consumed anything.
        [ -n "$start_kb" ] || start_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$boulder_pid/status")
        in_flight=$(metric_sum "$text" boulder_points_in_flight | cut -d. -f1)
        # Full: the budget admits whole batches, so it stops just under or at it.
        if [ "$in_flight" -gt 0 ] && [ "$in_flight" -eq "$last" ]; then
            still=$((still + 1))
        else
            still=0
        fi
        last=$in_flight
    done
    local hwm
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$boulder_pid/status")
    kill -KILL "$boulder_pid" 2>/dev/null || true
    wait "$boulder_pid" 2>/dev/null || true
    boulder_pid=""
    printf '%s\t%s\t%s\t%s\n' "$budget" "$in_flight" "$start_kb" "$hwm" >"$dir/stalled.tsv"
    log "stalled run: $in_flight points in flight (budget $budget), RSS $((start_kb / 1024)) MiB at start, peak $((hwm / 1024)) MiB"
}

# check VARIANT: validates the variant's config and compiles its components into
# the cache (so that no run pays for compiling). Returns 3 when this build does
# not know native_builtins.
check() {
    local cfg="$dir/$1-check.toml"
    write_config "$1" "$id-$1-check" "$cfg"
    if "$boulder" check --config "$cfg" >"$dir/$1-check.log" 2>&1; then return 0; fi
    if [ "$1" = native ] && grep -q native_builtins "$dir/$1-check.log"; then return 3; fi
    log "boulder check refused the $1 config $cfg:"
    cat "$dir/$1-check.log" >&2
    exit 1
}

: >"$dir/results.tsv"
variants=()
native_note=""
for variant in wasm native; do
    rc=0
    check "$variant" || rc=$?
    if [ "$rc" -eq 3 ]; then
        native_note="native variant unavailable: this boulder does not know [runtime] native_builtins ($(grep -m 1 'unknown field' "$dir/native-check.log" || head -n 1 "$dir/native-check.log"))"
        log "NOTE: $native_note"
        continue
    fi
    variants+=("$variant")
done
pin_services
# Rounds of one run per variant, so that the machine's drift over the minutes of
# a benchmark (VictoriaMetrics merging what earlier runs wrote, among others)
# weighs on both variants alike, and each round gives a ratio of its own.
for ((k = 1; k <= runs; k++)); do
    for variant in "${variants[@]}"; do run_once "$variant" "$k"; done
done
run_stalled

# ---- 4. the table ----
# median VARIANT COLUMN: the median of a column of results.tsv over a variant's runs.
median() {
    awk -F'\t' -v v="$1" -v c="$2" '$1 == v { print $c }' "$dir/results.tsv" | sort -g |
        awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.6f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

cpu_model=$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit+=" (with uncommitted changes)"
{
    echo "## $(date -u '+%Y-%m-%d %H:%M:%S UTC'): $points points$($smoke && echo ' (smoke)'), $runs run(s) per variant"
    echo
    echo "machine: $(nproc) cores, $cpu_model; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "commit $commit; $partitions partitions; $samples samples expected per run (every field of every point)"
    echo "consumer options: { $kafka_options }"
    if $pin; then
        echo "CPUs: boulder on $boulder_cpus, the broker and VictoriaMetrics on $services_cpus (taskset; --no-pin shares them)"
    else
        echo "CPUs: boulder and the services share $all_cpus (not pinned)"
    fi
    produce_us=$(sort -g "$dir/produce.tsv" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
    echo "preload (boulder produce, linger.ms=0, untimed): $points points, $messages messages, $data_mb MiB in" \
        "$(secs "$produce_us") s = $(ratio "$points" "$(secs "$produce_us")") points/s (median)"
    echo
    echo "| variant | points | wall s | points/wall-s | CPU s | points/CPU-s | peak RSS MiB | 1st write s | write span s | guest s | VM CPU s | broker CPU s |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for variant in "${variants[@]}"; do
        wall=$(secs "$(median "$variant" 2)")
        cpu=$(ratio "$(median "$variant" 3)" "$clk_tck" 2)
        rss=$(ratio "$(median "$variant" 4)" 1024)
        first=$(secs "$(median "$variant" 5)")
        span=$(secs "$(median "$variant" 6)")
        guest=$(awk -v g="$(median "$variant" 7)" 'BEGIN { printf "%.2f", g }')
        vm_cpu=$(ratio "$(median "$variant" 8)" "$clk_tck" 2)
        kafka_cpu=$(ratio "$(median "$variant" 9)" "$clk_tck" 2)
        [[ $vm_cpu != -* ]] || vm_cpu=-
        [[ $kafka_cpu != -* ]] || kafka_cpu=-
        echo "| $variant | $points | $wall | $(ratio "$points" "$wall") | $cpu | $(ratio "$points" "$cpu") | $rss | $first | $span | $guest | $vm_cpu | $kafka_cpu |"
        eval "cpu_$variant=$cpu"
    done
    echo
    if [ -n "$native_note" ]; then
        echo "$native_note"
    else
        # Each round's ratio too: the same drift was on both of its runs.
        rounds=$(awk -F'\t' '$1 == "wasm" { w[++nw] = $3 } $1 == "native" { n[++nn] = $3 }
            END { for (i = 1; i <= nw && i <= nn; i++) printf "%s%.2f", (i > 1 ? ", " : ""), w[i] / n[i] }' \
            "$dir/results.tsv")
        echo "CPU s wasm/native: $(ratio "$cpu_wasm" "$cpu_native" 2) (of the medians); by round: $rounds"
    fi
    echo
    read -r s_budget s_in_flight s_start s_hwm <"$dir/stalled.tsv"
    # Bytes of line protocol per point, from the generated file.
    line_bytes=$(awk -v b="$(stat -c %s "$data")" -v n="$points" 'BEGIN { printf "%d", b / n }')
    budget_mib=$(awk -v n="$s_budget" -v l="$line_bytes" 'BEGIN { printf "%.0f", n * l / 1048576 }')
    echo "stalled sink (wasm): $s_in_flight points in flight of a budget of $s_budget (~$line_bytes bytes of line protocol each: $budget_mib MiB);" \
        "RSS $(ratio "$s_start" 1024) MiB before consuming, peak $(ratio "$s_hwm" 1024) MiB;" \
        "peak - budget = $(awk -v h="$s_hwm" -v b="$budget_mib" 'BEGIN { printf "%.0f", h / 1024 - b }') MiB (target: at most 100)"
    echo
    echo "wall: from \`boulder run\` starting to VictoriaMetrics holding every sample (process start, group join, consume, transform, write, VM flush;"
    echo "the last partial batch waits batch_age = 1s);"
    echo "1st write: start to the first point written; write span: first to last point written (both from /metrics, polled every 0.2 s);"
    echo "CPU: utime+stime of the boulder process; guest: boulder_guest_seconds_sum (time in the tenant's chain, summed over workers);"
    echo "VM, broker CPU: of vm-a and Tansu during the run (- when scripts/services.sh's pid files are not there); medians of $runs run(s)."
    echo
} >"$dir/results.md"
cat "$dir/results.md"
cat "$dir/results.md" >>"$bench/results.md"
log "appended to $bench/results.md; configs and logs in $dir"
