//! Command-line interface: one module per subcommand.

mod check;
mod new;
mod produce;
mod replay;
mod run;
mod transform;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Boulder moves metrics from Kafka through tenants' WebAssembly transforms into
/// InfluxDB-v2-compatible databases.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume from Kafka, run every point through the router and its tenant's
    /// chain, and write it to the tenant's outputs; dead-letter what cannot be.
    Run(ConfigArg),
    /// Run one tenant's chain (and optionally the router) over line protocol from a
    /// file or stdin, print the kept points, and summarise the rest on stderr.
    Transform(transform::TransformArgs),
    /// Send dead letters back through the pipeline once their fault is fixed:
    /// each from where it failed, filtered by stage, tenant and time.
    Replay(replay::ReplayArgs),
    /// Produce the lines of a file (or stdin) to a topic, a few lines per message.
    Produce(produce::ProduceArgs),
    /// Check a config: parse it, load and compile every component, run every
    /// stage's `init` with its params, and exit.
    Check(ConfigArg),
    /// Write a new crate: `boulder new transform NAME` writes a tenant's transform,
    /// with a sample, its tests, and the commands to build and try it.
    New(new::NewArgs),
}

/// The `--config` option shared by subcommands.
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// The config file.
    #[arg(long, short, env = "BOULDER_CONFIG", default_value = "boulder.toml")]
    config: PathBuf,
}

/// Runs a parsed command line.
pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Run(a) => run::run(a),
        Command::Transform(a) => transform::run(a),
        Command::Check(a) => check::run(a),
        Command::Produce(a) => produce::run(a),
        Command::Replay(a) => replay::run(a),
        Command::New(a) => new::run(a),
    }
}

/// Logs to stderr, one line per event with key=value fields. The level comes from
/// `BOULDER_LOG` (or `RUST_LOG`), `info` by default.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("BOULDER_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
