//! Support for Boulder's integration tests: building the guests once, making
//! runtimes and batches, and finding the `boulder` binary.

pub mod outage;
pub mod services;
pub mod stub_sink;

use boulder::batch::{Batch, FieldValue, Format};
use boulder::config::Config;
use boulder::runtime::{Runtime, RuntimeSettings};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Calls `attempt` every `every` until it gives a value, and returns it; panics
/// with the last "not yet" reason once `within` has passed.
pub fn poll<T>(
    within: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(why) if Instant::now() >= deadline => panic!("after {within:?}: {why}"),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// Waits until `done()`, checking every 50 ms; panics after `within` naming `what`,
/// with `log()` (usually a process's log).
pub fn wait_until(
    what: &str,
    within: Duration,
    log: impl Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    poll(within, Duration::from_millis(50), || match done() {
        true => Ok(()),
        false => Err(format!("timed out waiting for {what}\n{}", log())),
    })
}

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Builds every guest with `scripts/build-guests.sh` (once per test process) and
/// returns the folder of components.
pub fn components() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            run_ok(&mut Command::new(root().join("scripts/build-guests.sh")));
            root().join("target/components")
        })
        .clone()
}

/// Fails the test, saying how to install it, unless cargo-component is installed.
pub fn require_cargo_component() {
    let installed = Command::new("cargo")
        .args(["component", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "cargo component is not installed: scripts/install-deps.sh installs it"
    );
}

/// Runs a command, panicking with its output if it fails.
pub fn run_ok(command: &mut Command) -> std::process::Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A config from TOML text, with the built components and a shared compile cache,
/// resolved against the repository root.
pub fn config(toml: &str) -> Config {
    let text = format!(
        "[runtime]\ncomponents_dir = {:?}\ncache_dir = {:?}\n\n{toml}",
        components().display().to_string(),
        root().join("target/test-cache").display().to_string()
    );
    Config::parse(&text, &root().join("test.toml")).expect("test config")
}

/// A runtime for a config.
pub fn runtime(config: &Config) -> Runtime {
    Runtime::new(RuntimeSettings::from_config(config)).expect("runtime")
}

/// The `boulder` binary of this build, or `$BOULDER_TEST_BIN` (to run the tests
/// against another build, such as the one before a change).
pub fn boulder_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BOULDER_TEST_BIN") {
        return PathBuf::from(bin);
    }
    // Test executables live in target/<profile>/deps; the binary one folder up.
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("boulder");
    assert!(
        bin.is_file(),
        "{} not built: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A batch of `n` Influx points `cpu,host=h<i> usage=<i>,idle=<i> <i>`.
pub fn cpu_batch(n: usize) -> Batch {
    let mut b = Batch::with_capacity(n);
    let source = b.source("metrics", Format::InfluxLine);
    for i in 0..n {
        let m = b.push_str("cpu");
        b.begin_point(m, i as i64, source);
        let (k, v) = (b.push_str("host"), b.push_str(&format!("h{i}")));
        b.push_tag(k, v);
        b.push_field_value("usage", FieldValue::Float(i as f64));
        b.push_field_value("idle", FieldValue::Float(100.0 - i as f64));
        b.points[i].origin = i as u32;
    }
    b
}

/// Builds a batch from line protocol.
pub fn lines(text: &str, topic: &str) -> Batch {
    let mut b = Batch::new();
    let source = b.source(topic, Format::InfluxLine);
    let errors = boulder::decode::influx_line::decode(
        text.as_bytes(),
        boulder::decode::Precision::Ns,
        0,
        source,
        &mut b,
    );
    assert!(errors.is_empty(), "{errors:?}");
    for (i, p) in b.points.iter_mut().enumerate() {
        p.origin = i as u32;
    }
    b
}

/// Every point of a batch as line protocol.
pub fn to_lines(batch: &Batch) -> Vec<String> {
    (0..batch.len())
        .map(|i| boulder::encode::line_protocol::point_to_line(batch, i))
        .collect()
}
