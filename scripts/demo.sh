#!/usr/bin/env bash
# The demo, from a fresh clone on a fresh Debian 12 machine:
#   1. installs what is missing, builds Boulder and the built-in transforms;
#   2. starts a Kafka-protocol broker (Tansu) and two VictoriaMetrics on loopback;
#   3. starts `boulder run` with boulder.example.toml (two tenants, four formats);
#   4. produces a sample stream (tests/fixtures/sample*) in all four formats;
#   5. queries VictoriaMetrics to show what arrived, and where the rest went.
# Boulder and the services keep running; `scripts/demo.sh stop` stops them.
set -euo pipefail
cd "$(dirname "$0")/.."

demo=target/demo
boulder=target/release/boulder
vm_ops=http://127.0.0.1:18428
vm_web=http://127.0.0.1:18429

if [ "${1:-}" = stop ]; then
    if [ -f $demo/boulder.pid ]; then
        kill -TERM "$(cat $demo/boulder.pid)" 2>/dev/null || true
        rm -f $demo/boulder.pid
        echo "demo: boulder stopped"
    fi
    scripts/services.sh stop
    exit 0
fi

scripts/install-deps.sh
scripts/build-guests.sh validate normalize flip-single-fields route
echo "demo: building boulder (release; the first build takes several minutes)" >&2
cargo build --release --quiet -p boulder
scripts/services.sh start
$boulder check --config boulder.example.toml

# The sample stream, stamped now (VictoriaMetrics answers queries about recent
# data). Produced before Boulder starts, so that its topics exist; a new consumer
# group starts from the earliest offset, so nothing is missed.
now_s=$(date +%s)
now_ms=$((now_s * 1000))
now_rfc3339=$(date -u -d "@$now_s" +%Y-%m-%dT%H:%M:%SZ)
stamp() { sed -e "s/@NOW_S@/$now_s/g" -e "s/@NOW_MS@/$now_ms/g" -e "s/@NOW_RFC3339@/$now_rfc3339/g" "$1"; }
produce() { $boulder produce --config boulder.example.toml "$@"; }

# Line protocol without its timestamps: points take the Kafka message's time.
sed -E 's/ [0-9]{19}$//' tests/fixtures/sample.lp | produce --topic metrics --lines-per-message 5
printf 'page_views,page=/home count=12i\nerrors,page=/cart count=1i\n' | produce --topic team-web-frontend
stamp tests/fixtures/sample-telegraf.json | produce --topic telegraf --lines-per-message 1
stamp tests/fixtures/sample-prometheus.json | produce --topic prometheus --lines-per-message 1
stamp tests/fixtures/sample-opentsdb.json | produce --topic opentsdb --lines-per-message 1

mkdir -p $demo
if [ -f $demo/boulder.pid ] && kill -0 "$(cat $demo/boulder.pid)" 2>/dev/null; then
    echo "demo: boulder already running (pid $(cat $demo/boulder.pid))"
else
    nohup $boulder run --config boulder.example.toml >$demo/boulder.log 2>&1 &
    echo $! >$demo/boulder.pid
    for _ in $(seq 100); do
        grep -q "boulder running" $demo/boulder.log && break
        sleep 0.2
    done
    grep -q "boulder running" $demo/boulder.log || {
        cat $demo/boulder.log
        exit 1
    }
    echo "demo: boulder running (pid $(cat $demo/boulder.pid), log $demo/boulder.log)"
fi

show() { # vm tenant
    python3 - "$1" "$2" <<'EOF'
import json, sys, time, urllib.parse, urllib.request
vm, tenant = sys.argv[1], sys.argv[2]
# Series without a `test` label: the integration tests' data carries one.
query = 'sort_by_label({__name__!="", test=""}, "__name__")'
url = f"{vm}/api/v1/query?" + urllib.parse.urlencode({"query": query})
# Wait until the number of series has stopped growing for two seconds.
result, stable = [], 0
for _ in range(60):
    now = json.load(urllib.request.urlopen(url))["data"]["result"]
    stable = stable + 1 if now and len(now) == len(result) else 0
    result = now
    if stable >= 4:
        break
    time.sleep(0.5)
print(f"\n=== tenant {tenant}: {vm}/api/v1/query?query={query}  ({len(result)} series) ===")
for r in result:
    m = dict(r["metric"])
    name = m.pop("__name__")
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(m.items()))
    print(f"  {name}{{{labels}}} {r['value'][1]}")
EOF
}
show $vm_ops ops
show $vm_web web

cat <<EOF

What did not land is in the dead-letter topic boulder-dlq, with its reason in the
__connect.errors.* headers (a bad line, a truncated JSON document, a NaN reading,
a point with only a string field, an unparsable measurement name...).

Look further:
  VictoriaMetrics UI    $vm_ops/vmui (tenant ops)   $vm_web/vmui (tenant web)
  Boulder's metrics     http://127.0.0.1:9107/metrics   (/health, /ready)
  Boulder's log         $demo/boulder.log
  Produce more          $boulder produce --config boulder.example.toml --topic metrics FILE
  Try a chain offline   $boulder transform --config boulder.example.toml --route --tenant ops tests/fixtures/sample.lp
Stop everything:        scripts/demo.sh stop
EOF
