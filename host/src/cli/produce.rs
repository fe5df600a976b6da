//! `boulder produce`: puts the lines of a file onto a topic, for demos, tests and
//! replaying samples. Debian's kcat links a librdkafka too old for some brokers;
//! this uses the same librdkafka as `boulder run`.

use anyhow::{bail, Context, Result};
use boulder::config::{Config, KafkaConfig};
use futures::StreamExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// Messages sent before waiting for the first to be acknowledged.
const IN_FLIGHT: usize = 1000;

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Take the brokers and options from this config's [kafka] table.
    #[arg(long, short, env = "BOULDER_CONFIG")]
    config: Option<PathBuf>,
    /// Brokers, `host:port[,...]` (instead of --config).
    #[arg(long)]
    brokers: Option<String>,
    /// The topic; created with --partitions if it does not exist.
    #[arg(long, short)]
    topic: String,
    /// Lines per message: many for line protocol, 1 for JSON documents one per line.
    #[arg(long, default_value_t = 100)]
    lines_per_message: usize,
    /// Partitions of a topic created here.
    #[arg(long, default_value_t = 2)]
    partitions: i32,
    /// The file to read; `-` or nothing reads stdin. Blank lines and lines starting
    /// with `#` are skipped.
    input: Option<PathBuf>,
}

pub fn run(args: ProduceArgs) -> Result<()> {
    if args.lines_per_message == 0 {
        bail!("--lines-per-message must be at least 1");
    }
    let kafka = match (&args.brokers, &args.config) {
        (Some(brokers), _) => KafkaConfig {
            brokers: brokers.clone(),
            group_id: String::new(),
            options: Default::default(),
        },
        (None, Some(path)) => Config::load(path)?
            .kafka
            .with_context(|| format!("{} has no [kafka] table", path.display()))?,
        (None, None) => bail!("say where the brokers are: --brokers or --config"),
    };
    let mut text = String::new();
    match &args.input {
        Some(p) if p.as_os_str() != "-" => {
            text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        _ => {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
        }
    }
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    let messages: Vec<String> = lines
        .chunks(args.lines_per_message)
        .map(|chunk| chunk.iter().map(|l| format!("{l}\n")).collect())
        .collect();

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            boulder::kafka::ensure_topic(&kafka, &args.topic, Some((args.partitions, -1)))
                .await
                .map_err(anyhow::Error::msg)?;
            let producer: FutureProducer = boulder::kafka::client_config(&kafka)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .create()
                .context("creating the producer")?;
            // Many sends in flight, started in order: waiting for each before the
            // next cost a round trip plus librdkafka's linger per message.
            let keys: Vec<String> = (0..messages.len()).map(|i| i.to_string()).collect();
            let sends = messages.iter().zip(&keys).map(|(message, key)| {
                producer.send(
                    FutureRecord::to(&args.topic).key(key).payload(message),
                    Duration::from_secs(30),
                )
            });
            let mut delivered = futures::stream::iter(sends).buffered(IN_FLIGHT);
            while let Some(result) = delivered.next().await {
                result.map_err(|(e, _)| anyhow::anyhow!("producing to {}: {e}", args.topic))?;
            }
            anyhow::Ok(())
        })?;
    eprintln!(
        "produced {} messages ({} lines) to {}",
        messages.len(),
        lines.len(),
        args.topic
    );
    Ok(())
}
