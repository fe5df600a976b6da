//! How a batch of points should cross the sandbox boundary: as the `boulder-batch`
//! bytes Boulder uses (`list<u8>`), or as typed WIT records (`list<point>`).
//!
//! Each variant is the whole round trip a stage pays: the host turns a `Batch` into
//! what crosses, the guest gets it, reads every point and hands it back, and the host
//! turns the answer into a `Batch` again. The guest is
//! `tests/guests/boundary-bench`; build it first with
//! `scripts/build-guests.sh boundary-bench`, then
//! `cargo bench -p boulder --bench boundary -- --warm-up-time 1 --measurement-time 3`.
//!
//! After criterion's report, a table gives ns per point for both and their ratio.

use anyhow::{bail, ensure, Context, Result};
use boulder::config::{Limits, RuntimeConfig};
use boulder::runtime::{Runtime, RuntimeSettings, EPOCH_TICK};
use boulder_batch::{codec, Batch, FieldValue, Format, SourceRecord};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};

wasmtime::component::bindgen!({
    path: "../tests/guests/boundary-bench/boundary.wit",
    world: "boundary",
});

use exports::boulder::bench::echo::{self, Field, Point, Tag};

const SIZES: [usize; 3] = [100, 1_000, 10_000];
const GROUP: &str = "boundary";
const GUEST: &str = "boundary-bench";

fn main() {
    // As `boulder` itself runs.
    boulder::allocator::keep_freed_memory();
    if let Err(e) = run() {
        eprintln!("boundary bench: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let wasm = guest_path();
    ensure!(
        wasm.is_file(),
        "{} is missing: build the bench guest first with `scripts/build-guests.sh {GUEST}`",
        wasm.display()
    );
    // Boulder's own engine (pooling allocator, epoch interruption, stack limit) with
    // its default sizes, so both variants pay exactly what a stage would.
    let runtime = Runtime::new(RuntimeSettings {
        max_memory: Limits::default().memory,
        max_wasm_stack: RuntimeConfig::default().max_wasm_stack,
        max_instances: RuntimeConfig::default().max_instances,
        components_dirs: Vec::new(),
        cache_dir: None,
    })?;
    let engine = runtime.engine();
    let component = Component::from_file(engine, &wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compiling {}", wasm.display()))?;
    let imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    ensure!(
        imports.is_empty(),
        "{} imports {}; the bench world must import nothing",
        wasm.display(),
        imports.join(", ")
    );

    let mut bytes_guest = Instance::new(engine, &component)?;
    let mut typed_guest = Instance::new(engine, &component)?;
    let batches: Vec<Batch> = SIZES.iter().map(|&n| points(n, 0xB0_17_DE_12)).collect();

    // Once, outside timing: both variants must hand back exactly the input points.
    for batch in &batches {
        let by_bytes = bytes_guest.bytes_round_trip(batch)?;
        let by_type = typed_guest.typed_round_trip(batch)?;
        ensure!(
            views(&by_bytes) == views(batch),
            "bytes round trip changed the points"
        );
        ensure!(
            views(&by_type) == views(batch),
            "typed round trip changed the points"
        );
    }

    let started = SystemTime::now();
    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group(GROUP);
    for batch in &batches {
        let n = batch.len();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("bytes", n), batch, |b, batch| {
            b.iter(|| {
                bytes_guest
                    .bytes_round_trip(batch)
                    .expect("bytes round trip")
            })
        });
        group.bench_with_input(BenchmarkId::new("typed", n), batch, |b, batch| {
            b.iter(|| {
                typed_guest
                    .typed_round_trip(batch)
                    .expect("typed round trip")
            })
        });
    }
    group.finish();
    criterion.final_summary();
    print_table(&criterion_dir(), started);
    Ok(())
}

/// `$BOULDER_COMPONENTS_DIR/boundary-bench.wasm`, else the workspace's
/// `target/components`, where `scripts/build-guests.sh` puts it.
fn guest_path() -> PathBuf {
    let dir = std::env::var_os("BOULDER_COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_target().join("components"));
    dir.join(format!("{GUEST}.wasm"))
}

fn workspace_target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// One instance in its own store, reused across calls as a stage's pool reuses them.
struct Instance {
    store: Store<StoreLimits>,
    bindings: Boundary,
    deadline_ticks: u64,
}

impl Instance {
    fn new(engine: &Engine, component: &Component) -> Result<Instance> {
        let limits = Limits::default();
        let mut store = Store::new(
            engine,
            StoreLimitsBuilder::new()
                .memory_size(limits.memory.as_u64() as usize)
                .build(),
        );
        store.limiter(|limits| limits);
        store.epoch_deadline_trap();
        let bindings = Boundary::instantiate(&mut store, component, &Linker::new(engine))
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!("instantiating {GUEST} (stale? rerun `scripts/build-guests.sh {GUEST}`)")
            })?;
        Ok(Instance {
            store,
            bindings,
            deadline_ticks: limits
                .deadline_per_call
                .as_nanos()
                .div_ceil(EPOCH_TICK.as_nanos()) as u64
                + 1,
        })
    }

    fn echo(&mut self) -> (&echo::Guest, &mut Store<StoreLimits>) {
        // A stage arms the deadline before every call; so do both variants.
        self.store.set_epoch_deadline(self.deadline_ticks);
        (self.bindings.boulder_bench_echo(), &mut self.store)
    }

    /// What Boulder does: encode, cross as bytes, decode (and validate) the answer.
    fn bytes_round_trip(&mut self, batch: &Batch) -> Result<Batch> {
        let input = codec::encode(batch);
        let (echo, store) = self.echo();
        let answer = match echo.call_bytes(store, &input)? {
            Ok(answer) => answer,
            Err(message) => bail!("the guest refused the batch: {message}"),
        };
        Ok(codec::decode(&answer)?)
    }

    /// The alternative: owned WIT records in, owned WIT records out.
    fn typed_round_trip(&mut self, batch: &Batch) -> Result<Batch> {
        let input = to_typed(batch);
        let (echo, store) = self.echo();
        let answer = echo.call_typed(store, &input)?;
        from_typed(&answer, batch)
    }
}

fn to_typed(batch: &Batch) -> Vec<Point> {
    batch
        .iter()
        .map(|p| Point {
            measurement: p.measurement().to_owned(),
            tags: p
                .tags()
                .map(|(key, value)| Tag {
                    key: key.to_owned(),
                    value: value.to_owned(),
                })
                .collect(),
            fields: p
                .fields()
                .map(|(key, value)| Field {
                    key: key.to_owned(),
                    value: match value {
                        FieldValue::Float(v) => echo::FieldValue::Float(v),
                        FieldValue::Int(v) => echo::FieldValue::Int(v),
                        FieldValue::UInt(v) => echo::FieldValue::Uint(v),
                        FieldValue::Bool(v) => echo::FieldValue::Bool(v),
                        FieldValue::String(s) => echo::FieldValue::String(s.to_owned()),
                    },
                })
                .collect(),
            timestamp_ns: p.timestamp_ns(),
            source: p.record().source,
            tenant: p.tenant().to_owned(),
            origin: p.origin(),
        })
        .collect()
}

/// Builds the flat batch the rest of the host works on. Sources did not cross (the
/// guest only reads them), so they come from the input; a source index is the one
/// thing the canonical ABI cannot check for us.
fn from_typed(points: &[Point], input: &Batch) -> Result<Batch> {
    let mut batch = Batch::with_capacity(points.len());
    for source in &input.sources {
        let topic = batch.push_str(input.str(source.topic));
        batch.sources.push(SourceRecord {
            topic,
            format: source.format,
        });
    }
    for p in points {
        ensure!(
            (p.source as usize) < batch.sources.len(),
            "point names source {} of {}",
            p.source,
            batch.sources.len()
        );
        let measurement = batch.push_str(&p.measurement);
        let index = batch.begin_point(measurement, p.timestamp_ns, p.source);
        for tag in &p.tags {
            let (key, value) = (batch.push_str(&tag.key), batch.push_str(&tag.value));
            batch.push_tag(key, value);
        }
        for field in &p.fields {
            let value = match &field.value {
                echo::FieldValue::Float(v) => FieldValue::Float(*v),
                echo::FieldValue::Int(v) => FieldValue::Int(*v),
                echo::FieldValue::Uint(v) => FieldValue::UInt(*v),
                echo::FieldValue::Bool(v) => FieldValue::Bool(*v),
                echo::FieldValue::String(s) => FieldValue::String(s),
            };
            batch.push_field_value(&field.key, value);
        }
        let tenant = batch.push_str(&p.tenant);
        let record = &mut batch.points[index];
        record.tenant = tenant;
        record.origin = p.origin;
    }
    Ok(batch)
}

type View<'a> = (
    &'a str,
    Vec<(&'a str, &'a str)>,
    Vec<(&'a str, FieldValue<'a>)>,
    i64,
    &'a str,
    Option<Format>,
    &'a str,
    u32,
);

// Compared through views, not records: equal points may sit at different arena
// offsets depending on who built the batch.
fn views(batch: &Batch) -> Vec<View<'_>> {
    batch
        .iter()
        .map(|p| {
            (
                p.measurement(),
                p.tags().collect(),
                p.fields().collect(),
                p.timestamp_ns(),
                p.source_topic(),
                p.format(),
                p.tenant(),
                p.origin(),
            )
        })
        .collect()
}

/// `n` points shaped like typical Telegraf output: a ~10-character measurement,
/// 3 tags, 3 fields on average (mostly floats, sometimes an int), and 20% of points
/// with a single field. Deterministic, so runs compare.
fn points(n: usize, seed: u64) -> Batch {
    let mut rng = SplitMix(seed);
    let mut batch = Batch::with_capacity(n);
    let source = batch.source("metrics", Format::InfluxLine);
    let base_ns = 1_700_000_000_000_000_000i64;
    for i in 0..n {
        let measurement = batch.push_str(&rng.word(8, 12));
        let index = batch.begin_point(measurement, base_ns + i as i64 * 1_000_000, source);
        for _ in 0..3 {
            let (key, value) = (rng.word(4, 8), rng.word(8, 16));
            let (key, value) = (batch.push_str(&key), batch.push_str(&value));
            batch.push_tag(key, value);
        }
        // 20% x 1 + 80% x 3.5 = 3 fields on average.
        let fields = if rng.below(5) == 0 {
            1
        } else {
            3 + rng.below(2)
        };
        for f in 0..fields {
            let key = rng.word(4, 10);
            let value = if f == fields - 1 && fields > 1 && rng.below(3) == 0 {
                FieldValue::Int(rng.next() as i64 >> 40)
            } else {
                FieldValue::Float((rng.next() >> 11) as f64 / (1u64 << 43) as f64)
            };
            batch.push_field_value(&key, value);
        }
        // The chain numbers input points by origin.
        batch.points[index].origin = i as u32;
    }
    batch
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn word(&mut self, min: u64, max: u64) -> String {
        let len = min + self.below(max - min + 1);
        (0..len)
            .map(|_| char::from(b'a' + self.below(26) as u8))
            .collect()
    }
}

/// Where criterion writes its estimates, found the way criterion finds it.
fn criterion_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(dir);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(workspace_target)
        .join("criterion")
}

/// Criterion keeps its estimates to itself but for its files; reads the ones this
/// run wrote (older files belong to benchmarks a filter skipped, or to `--test`).
fn print_table(dir: &Path, since: SystemTime) {
    let estimate = |variant: &str, n: usize| -> Option<f64> {
        let file = dir.join(format!("{GROUP}/{variant}/{n}/new/estimates.json"));
        let modified = std::fs::metadata(&file).and_then(|m| m.modified()).ok()?;
        if modified < since {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
        // Criterion's headline "time": the slope when it sampled linearly.
        let typical = match &json["slope"] {
            serde_json::Value::Null => &json["mean"],
            slope => slope,
        };
        Some(typical["point_estimate"].as_f64()? / n as f64)
    };
    let rows: Vec<_> = SIZES
        .iter()
        .filter_map(|&n| Some((n, estimate("bytes", n)?, estimate("typed", n)?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    println!();
    println!("host+guest round trip per point (criterion's estimate / batch size)");
    println!(
        "{:>10}  {:>14}  {:>14}  {:>12}",
        "points", "bytes ns/pt", "typed ns/pt", "typed/bytes"
    );
    for (n, bytes, typed) in rows {
        println!(
            "{n:>10}  {bytes:>14.1}  {typed:>14.1}  {:>11.1}x",
            typed / bytes
        );
    }
}
