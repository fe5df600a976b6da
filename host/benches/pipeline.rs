//! The host's hot path, stage by stage, on realistic points: each decoder, the
//! built-in chain (validate -> normalize -> flip-single-fields) in the sandbox and
//! compiled natively, the batch codec on the host's side, and line-protocol
//! encoding with gzip.
//!
//! `cargo bench -p boulder --bench pipeline` (after `scripts/build-guests.sh`).
//! After criterion's figures it prints the sandbox's cost as a ratio, measured by
//! alternating the two variants in one run so that machine noise hits both alike,
//! and what a chain of stages that change nothing (tests/guests/keep-all) costs:
//! the boundary's share of the sandboxed chain. The `limits` group is what a
//! tenant's ingestion limits cost per point: a rate whose bucket has room (the
//! usual case), and active series (every point hashed and looked up).

use boulder::config::Config;
use boulder::decode::{self, Precision};
use boulder::encode::line_protocol;
use boulder::runtime::{Chain, Router, Runtime, RuntimeSettings};
use boulder::sink::gzip::Gzip;
use boulder_batch::{Batch, Format};
use criterion::{criterion_group, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

const BATCH_POINTS: usize = 1000;
const LINES_PER_MESSAGE: usize = 100;

/// A small deterministic generator (xorshift), so every run sees the same points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const MEASUREMENTS: [&str; 8] = [
    "cpu",
    "mem",
    "disk_io",
    "net",
    "http_requests",
    "Load.Avg",
    "temp-sensor",
    "nginx",
];

/// Line protocol shaped like the benchmark's: 3 tags and 3 fields on average (1 to
/// 5 each), 20% of points with a single field, floats mostly, some integers.
fn line_protocol_points(n: usize) -> Vec<String> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t0 = 1_764_000_000_000_000_000i64;
    (0..n)
        .map(|i| {
            let m = MEASUREMENTS[rng.below(8) as usize];
            let mut line = format!("{m},host=host-{:03}", rng.below(200));
            for t in 0..rng.below(3) + 1 {
                line += &format!(",tag{t}=value-{}", rng.below(50));
            }
            let fields = if rng.below(5) == 0 {
                1
            } else {
                rng.below(4) + 2
            };
            for f in 0..fields {
                let sep = if f == 0 { ' ' } else { ',' };
                if f % 3 == 2 {
                    line += &format!("{sep}Count{f}={}i", rng.below(1_000_000));
                } else {
                    line += &format!("{sep}usage_{f}={:.3}", rng.below(100_000) as f64 / 7.0);
                }
            }
            line += &format!(" {}", t0 + i as i64 * 1000);
            line
        })
        .collect()
}

/// The same points as messages of each JSON format, one point per metric.
fn json_messages(format: Format, lines: &[String]) -> Vec<Vec<u8>> {
    let mut all = Batch::new();
    let source = all.source("bench", Format::InfluxLine);
    let text = lines.join("\n");
    decode::decode(
        Format::InfluxLine,
        Precision::Ns,
        text.as_bytes(),
        0,
        source,
        &mut all,
    );
    let docs: Vec<String> = all
        .iter()
        .map(|p| {
            let tags: Vec<String> = p
                .tags()
                .map(|(k, v)| format!("\"{k}\":\"{v}\""))
                .collect();
            let value = match p.fields().next() {
                Some((_, boulder_batch::FieldValue::Float(v))) => v,
                Some((_, boulder_batch::FieldValue::Int(v))) => v as f64,
                _ => 0.0,
            };
            let ts = p.timestamp_ns();
            match format {
                Format::InfluxJson => {
                    let fields: Vec<String> = p
                        .fields()
                        .map(|(k, v)| match v {
                            boulder_batch::FieldValue::Int(i) => format!("\"{k}\":{i}"),
                            boulder_batch::FieldValue::Float(f) => format!("\"{k}\":{f}"),
                            _ => format!("\"{k}\":0"),
                        })
                        .collect();
                    format!(
                        r#"{{"name":"{}","tags":{{{}}},"fields":{{{}}},"timestamp":{}}}"#,
                        p.measurement(),
                        tags.join(","),
                        fields.join(","),
                        ts / 1_000_000_000
                    )
                }
                Format::PrometheusJson => format!(
                    r#"{{"timestamp":"2025-11-24T16:00:00.123456789Z","value":"{value}","name":"{}","labels":{{"__name__":"{}",{}}}}}"#,
                    p.measurement(),
                    p.measurement(),
                    tags.join(",")
                ),
                _ => format!(
                    r#"{{"metric":"{}","timestamp":{},"value":{value},"tags":{{{}}}}}"#,
                    p.measurement(),
                    ts / 1_000_000,
                    tags.join(",")
                ),
            }
        })
        .collect();
    match format {
        // Telegraf batches: {"metrics":[...]}; the others: an array, or one object.
        Format::InfluxJson => docs
            .chunks(LINES_PER_MESSAGE)
            .map(|c| format!(r#"{{"metrics":[{}]}}"#, c.join(",")).into_bytes())
            .collect(),
        Format::OpentsdbJson => docs
            .chunks(LINES_PER_MESSAGE)
            .map(|c| format!("[{}]", c.join(",")).into_bytes())
            .collect(),
        _ => docs.into_iter().map(String::into_bytes).collect(),
    }
}

fn decode_all(format: Format, messages: &[Vec<u8>]) -> Batch {
    let mut batch = Batch::with_capacity(BATCH_POINTS);
    let source = batch.source("bench", format);
    for m in messages {
        let errors = decode::decode(format, Precision::Ns, m, 0, source, &mut batch);
        assert!(errors.is_empty(), "{format:?}: {errors:?}");
    }
    batch
}

fn decoders(c: &mut Criterion) {
    let lines = line_protocol_points(BATCH_POINTS);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(BATCH_POINTS as u64));
    let influx: Vec<Vec<u8>> = lines
        .chunks(LINES_PER_MESSAGE)
        .map(|c| c.join("\n").into_bytes())
        .collect();
    for (format, messages) in [
        (Format::InfluxLine, influx),
        (
            Format::InfluxJson,
            json_messages(Format::InfluxJson, &lines),
        ),
        (
            Format::PrometheusJson,
            json_messages(Format::PrometheusJson, &lines),
        ),
        (
            Format::OpentsdbJson,
            json_messages(Format::OpentsdbJson, &lines),
        ),
    ] {
        let points = decode_all(format, &messages).len();
        assert!(points >= BATCH_POINTS, "{format:?}: {points} points");
        group.bench_function(format.name(), |b| {
            b.iter(|| black_box(decode_all(format, &messages)))
        });
    }
    group.finish();
}

/// The built-in chain of the example config's `ops` tenant, and its router.
fn load(native: bool) -> (Runtime, Chain, Router) {
    load_chain(
        native,
        r#"[
            { component = "validate", params = { non_finite = "drop-field", strings = "drop-field" } },
            { component = "normalize" },
            { component = "flip-single-fields" },
        ]"#,
    )
}

/// A chain of three `keep-all` stages (tests/guests/keep-all), which keep every
/// point as it is: what crossing the sandbox costs, with no transform to run.
fn load_boundary() -> (Runtime, Chain, Router) {
    load_chain(
        false,
        r#"[{ component = "keep-all" }, { component = "keep-all" }, { component = "keep-all" }]"#,
    )
}

fn load_chain(native: bool, chain: &str) -> (Runtime, Chain, Router) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let components = root.join("target/components");
    assert!(
        components.join("validate.wasm").exists(),
        "no components in {}: run scripts/build-guests.sh first",
        components.display()
    );
    let text = format!(
        r#"
        [runtime]
        components_dir = "{}"
        native_builtins = {native}
        [router]
        component = "route"
        params = {{ default = "ops", rules = [{{ tag = "tenant" }}] }}
        [[tenants]]
        name = "ops"
        chain = {chain}
        "#,
        components.display()
    );
    let config = Config::parse(&text, &root.join("bench.toml")).expect("bench config");
    let runtime = Runtime::new(RuntimeSettings::from_config(&config)).expect("runtime");
    let chain = Chain::load(&runtime, &config, &config.tenants[0]).expect("chain");
    let router = Router::load(&runtime, &config)
        .expect("router")
        .expect("a router");
    (runtime, chain, router)
}

fn input_batch() -> Batch {
    let lines = line_protocol_points(BATCH_POINTS);
    decode_all(Format::InfluxLine, &[lines.join("\n").into_bytes()])
}

fn chains(c: &mut Criterion) {
    let input = input_batch();
    let mut group = c.benchmark_group("chain");
    group.throughput(Throughput::Elements(BATCH_POINTS as u64));
    for native in [false, true] {
        let variant = if native { "native" } else { "wasm" };
        let (_runtime, chain, router) = load(native);
        let out = chain.run(&input).expect("chain");
        assert!(out.rejected.is_empty(), "{:?}", out.rejected.first());
        group.bench_function(format!("validate-normalize-flip/{variant}"), |b| {
            b.iter(|| black_box(chain.run(&input).expect("chain")))
        });
        group.bench_function(format!("route/{variant}"), |b| {
            b.iter(|| black_box(router.route(&input).expect("route")))
        });
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let input = input_batch();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(BATCH_POINTS as u64));
    let mut text = Vec::new();
    group.bench_function("line-protocol", |b| {
        b.iter(|| {
            text.clear();
            black_box(line_protocol::write_batch(&input, &mut text));
        })
    });
    // gzip-1 is what outputs use by default (igzip); zlib-1 is zlib's level 1, which
    // they used before.
    for (name, gzip) in [
        ("gzip-1", Gzip::level(1)),
        ("zlib-1", Gzip::Zlib(flate2::Compression::fast())),
        ("gzip-6", Gzip::level(6)),
    ] {
        group.bench_function(format!("line-protocol+{name}"), |b| {
            b.iter(|| {
                text.clear();
                line_protocol::write_batch(&input, &mut text);
                black_box(gzip.compress(&text))
            })
        });
    }
    group.finish();
}

/// The sandboxed chain's time over the native chain's, each the median of
/// alternating rounds.
fn sandbox_ratio() {
    let input = input_batch();
    let (_rw, wasm, wasm_router) = load(false);
    let (_rn, native, native_router) = load(true);
    let (_rb, boundary, _) = load_boundary();
    let rounds = 30;
    let per_round = 20;
    let time = |f: &dyn Fn()| {
        let began = Instant::now();
        for _ in 0..per_round {
            f();
        }
        began.elapsed() / per_round
    };
    let mut samples: [Vec<Duration>; 5] = Default::default();
    for _ in 0..rounds {
        samples[0].push(time(&|| drop(black_box(wasm.run(&input)))));
        samples[1].push(time(&|| drop(black_box(native.run(&input)))));
        samples[2].push(time(&|| drop(black_box(wasm_router.route(&input)))));
        samples[3].push(time(&|| drop(black_box(native_router.route(&input)))));
        samples[4].push(time(&|| drop(black_box(boundary.run(&input)))));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let [w, n, wr, nr, b] = samples.each_mut().map(median);
    let per_point = |d: Duration| d.as_nanos() as f64 / BATCH_POINTS as f64;
    println!();
    println!("sandbox cost, {BATCH_POINTS}-point batches (median of {rounds} alternating rounds)");
    println!("| stage(s)                  | wasm ns/point | native ns/point | wasm/native |");
    println!("|---------------------------|---------------|-----------------|-------------|");
    for (name, w, n) in [("validate-normalize-flip", w, n), ("route", wr, nr)] {
        println!(
            "| {name:<25} | {:>13.1} | {:>15.1} | {:>11.2} |",
            per_point(w),
            per_point(n),
            per_point(w) / per_point(n)
        );
    }
    println!(
        "the boundary alone (3 keep-all stages): {:.1} ns/point, {:.0}% of the sandboxed chain",
        per_point(b),
        100.0 * per_point(b) / per_point(w)
    );
}

/// The batch codec on the host's side of the boundary: what the host does to every
/// answer (check it in place), and to the chain's input and last answer.
fn codec(c: &mut Criterion) {
    let input = input_batch();
    let bytes = boulder_batch::codec::encode(&input);
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(BATCH_POINTS as u64));
    group.bench_function("encode", |b| {
        b.iter(|| black_box(boulder_batch::codec::encode(&input)))
    });
    group.bench_function("check", |b| {
        b.iter(|| black_box(boulder_batch::codec::check(&bytes)).unwrap())
    });
    group.bench_function("decode-trusted", |b| {
        b.iter(|| black_box(boulder_batch::codec::decode_trusted(&bytes)).unwrap())
    });
    group.finish();
}

fn limits(c: &mut Criterion) {
    use boulder::config::Limits;
    use boulder::pipeline::limits::TenantLimits;
    let input = input_batch();
    let mut group = c.benchmark_group("limits");
    group.throughput(Throughput::Elements(BATCH_POINTS as u64));
    let rate = TenantLimits::new(&Limits {
        points_per_second: Some(u32::MAX),
        ..Limits::default()
    })
    .expect("a limit");
    group.bench_function("rate", |b| {
        b.iter(|| black_box(rate.admit_all(black_box(BATCH_POINTS), Instant::now())))
    });
    // Room for every series of the input: each point is looked up, none refused.
    let series = TenantLimits::new(&Limits {
        max_series: Some(100_000),
        ..Limits::default()
    })
    .expect("a limit");
    group.bench_function("series", |b| {
        b.iter(|| {
            let over = series.over(&input, Instant::now());
            assert!(over.is_empty());
            black_box(over)
        })
    });
    group.finish();
}

criterion_group!(benches, decoders, chains, codec, encoding, limits);

fn main() {
    // As `boulder` itself runs.
    boulder::allocator::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs this in test mode: skip the extra timing there.
    if !std::env::args().any(|a| a == "--test") {
        sandbox_ratio();
    }
}
