#!/usr/bin/env bash
# Starts, checks or stops the real services Boulder's tests and demo run against,
# all on loopback, on ports chosen not to clash with default installs:
#
#   kafka  Tansu (Kafka protocol, in-memory storage)   127.0.0.1:${BOULDER_KAFKA_PORT:-19092}
#   vm-a   VictoriaMetrics, -influxSkipSingleField     127.0.0.1:${BOULDER_VM_A_PORT:-18428}
#   vm-b   VictoriaMetrics, -influxSkipSingleField     127.0.0.1:${BOULDER_VM_B_PORT:-18429}
#
# Two VictoriaMetrics instances so that two tenants' outputs can be told apart.
# State (pid files, logs, VictoriaMetrics data) lives in ${BOULDER_SERVICES_DIR:-target/services}.
# `start` is idempotent: a service already answering is left alone. Whoever starts
# them stops them: `scripts/services.sh stop`.
#
# Usage: scripts/services.sh start|stop|status|logs|env
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state=${BOULDER_SERVICES_DIR:-$root/target/services}
kafka_port=${BOULDER_KAFKA_PORT:-19092}
vm_a_port=${BOULDER_VM_A_PORT:-18428}
vm_b_port=${BOULDER_VM_B_PORT:-18429}
tansu=${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
vm=${VICTORIA_METRICS:-/usr/bin/victoria-metrics}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name port seconds
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        if port_open "$2"; then return 0; fi
        sleep 0.1
    done
    echo "services: $1 did not open port $2 within $3 s; see $state/$1.log" >&2
    tail -n 20 "$state/$1.log" >&2 || true
    return 1
}

start_one() { # name port command...
    local name=$1 port=$2
    shift 2
    if port_open "$port"; then
        echo "services: $name already up on 127.0.0.1:$port" >&2
        return 0
    fi
    mkdir -p "$state"
    nohup "$@" >"$state/$name.log" 2>&1 &
    echo $! >"$state/$name.pid"
    wait_for "$name" "$port" 30
    echo "services: $name up on 127.0.0.1:$port (pid $(cat "$state/$name.pid"))" >&2
}

start_vm() { # name port
    "$vm" -version >/dev/null 2>&1 || {
        echo "services: no VictoriaMetrics at $vm; run scripts/install-deps.sh" >&2
        exit 1
    }
    start_one "$1" "$2" "$vm" -httpListenAddr="127.0.0.1:$2" \
        -storageDataPath="$state/$1-data" -retentionPeriod=100y \
        -influxSkipSingleField -search.latencyOffset=0s -loggerLevel=WARN
}

stop_one() {
    local pidfile="$state/$1.pid"
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        echo "services: $1 stopped" >&2
    fi
    rm -f "$pidfile"
}

case "${1:-}" in
start)
    [ -x "$tansu" ] || {
        echo "services: no tansu at $tansu; run scripts/install-deps.sh" >&2
        exit 1
    }
    start_one kafka "$kafka_port" "$tansu" broker \
        --listener-url "tcp://127.0.0.1:$kafka_port" \
        --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
        --storage-engine memory://tansu/
    start_vm vm-a "$vm_a_port"
    start_vm vm-b "$vm_b_port"
    ;;
stop)
    for s in kafka vm-a vm-b; do stop_one "$s"; done
    ;;
status)
    for s in "kafka $kafka_port" "vm-a $vm_a_port" "vm-b $vm_b_port"; do
        set -- $s
        if port_open "$2"; then echo "$1 up on 127.0.0.1:$2"; else echo "$1 down"; fi
    done
    ;;
logs)
    for s in kafka vm-a vm-b; do
        echo "--- $state/$s.log (last 20 lines)"
        tail -n 20 "$state/$s.log" 2>/dev/null || echo "(none)"
    done
    ;;
env)
    echo "BOULDER_KAFKA=127.0.0.1:$kafka_port"
    echo "BOULDER_VM_A=http://127.0.0.1:$vm_a_port"
    echo "BOULDER_VM_B=http://127.0.0.1:$vm_b_port"
    ;;
*)
    echo "usage: $0 start|stop|status|logs|env" >&2
    exit 2
    ;;
esac
