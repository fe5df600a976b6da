#!/usr/bin/env python3
"""Generates benchmark points for scripts/bench.sh: InfluxDB line protocol on stdout.

Usage: scripts/bench-gen.py POINTS [SEED]

The points carry nothing that names a run: bench.sh has VictoriaMetrics add a
`test` label to each run's samples (the output URL's `extra_label`), so that runs
are counted apart without making every line longer than the shape below (and the
demo, which shows only series without a `test` label, leaves them out).

The shape, meant to look like a Telegraf fleet:
  - a few hundred series (300), each with a fixed schema: a measurement, 1-5 tags
    (3 on average; the first is always a unique `host`, so series never collide),
    and a fixed set of fields;
  - 20% of the series have one field (so 20% of the points are single-field, which
    flip-single-fields rewrites), the others 2-5 (3.5 on average: 3 overall);
  - fields are floats, some (about 1 in 6) integers (`42i`);
  - a few measurement and key names need validate/normalize (dots, dashes, capitals)
    and stay distinct after them;
  - points go round-robin over the series in time order, nanosecond timestamps in
    the last hour, distinct per series even at VictoriaMetrics' millisecond
    resolution, so every field of every point is one distinct sample.

The last line on stderr is `points=N samples=S single_field_points=K series=M`:
S (the number of fields written) is what VictoriaMetrics must hold at the end.
"""
import random
import sys
import time

SERIES = 300
HOUR_MS = 3_600_000

MEASUREMENTS = {
    # measurement: field names (the first ones are used first)
    "cpu": ["usage_user", "usage_system", "usage_idle", "usage_iowait", "usage_steal"],
    "mem": ["used_percent", "available", "cached", "buffered", "free"],
    "disk": ["used_percent", "free", "inodes_used", "inodes_free", "total"],
    "diskio": ["reads", "writes", "read_bytes", "write_bytes", "io_time"],
    "net": ["bytes_recv", "bytes_sent", "packets_recv", "packets_sent", "err_in"],
    "system": ["load1", "load5", "load15", "n_users", "uptime"],
    "http_requests": ["rate", "p50_ms", "p99_ms", "errors", "bytes"],
    "nginx-ingress": ["requests", "active", "reading", "writing", "waiting"],
    "JVM.memory": ["HeapUsed", "HeapMax", "NonHeapUsed", "gc_pause_ms", "threads"],
    "postgresql": ["numbackends", "xact_commit", "xact_rollback", "blks_read", "blks_hit"],
    "redis": ["used_memory", "connected_clients", "keyspace_hits", "keyspace_misses", "ops"],
    "kafka_consumer": ["lag", "records_consumed_rate", "fetch_latency_ms", "commits", "rebalances"],
}
TAGS = {
    # key: values (the first tag is always host)
    "region": ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1"],
    "env": ["prod", "staging", "dev"],
    "service": ["api", "web", "billing", "search", "auth", "checkout", "ingest"],
    "dc": ["dc1", "dc2", "dc3"],
    "Team": ["core", "growth", "data", "infra"],
    "instance": [f"i-{n:04x}" for n in range(64)],
}


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    n = int(sys.argv[1])
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) == 3 else 1)
    per_series = -(-n // SERIES)  # points of the busiest series
    step_ms = HOUR_MS // max(per_series, 1)
    if step_ms < 2:
        sys.exit(f"{n} points do not fit in an hour at 2 ms per series: use fewer")
    # Start an hour ago, so that the last point is just before now.
    start_ms = int(time.time() * 1000) - HOUR_MS

    series = []  # (format string, value makers, field count)
    names = list(MEASUREMENTS)
    tag_keys = list(TAGS)
    for s in range(SERIES):
        m = names[s % len(names)]
        ntags = rng.choices([1, 2, 3, 4, 5], weights=[1, 2, 4, 2, 1])[0]
        tags = [("host", f"host-{s:03d}")]
        for key in rng.sample(tag_keys, ntags - 1):
            tags.append((key, rng.choice(TAGS[key])))
        # Every fifth series single-field: exactly 20% of the series.
        nfields = 1 if s % 5 == 0 else rng.randint(2, 5)
        fields = []
        for f in MEASUREMENTS[m][:nfields]:
            if rng.random() < 1 / 6:
                fields.append((f, "%di", lambda r=rng: r.randrange(0, 100_000)))
            else:
                scale = rng.choice([1.0, 100.0, 1e6])
                fields.append((f, "%.3f", lambda r=rng, k=scale: r.random() * k))
        head = m + "".join(f",{k}={v}" for k, v in tags)
        fmt = head + " " + ",".join(f"{f}={spec}" for f, spec, _ in fields) + " %d\n"
        makers = [mk for _, _, mk in fields]
        # Spread the series within a step so that their timestamps interleave.
        offset_ms = rng.randrange(step_ms // 2) if step_ms > 1 else 0
        series.append((fmt, makers, nfields, offset_ms))

    out = sys.stdout
    samples = single = 0
    buf = []
    for i in range(n):
        s, j = i % SERIES, i // SERIES
        fmt, makers, nfields, offset_ms = series[s]
        ts_ms = start_ms + j * step_ms + offset_ms
        # Nanoseconds with a sub-millisecond part below half a millisecond, so
        # that VictoriaMetrics' millisecond keeps the timestamps distinct whether
        # it truncates or rounds.
        ts_ns = ts_ms * 1_000_000 + rng.randrange(500_000)
        buf.append(fmt % (*[mk() for mk in makers], ts_ns))
        samples += nfields
        single += nfields == 1
        if len(buf) >= 10_000:
            out.write("".join(buf))
            buf.clear()
    out.write("".join(buf))
    out.flush()
    print(
        f"points={n} samples={samples} single_field_points={single} series={min(n, SERIES)}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
