//! `boulder replay`: sends dead letters back through today's pipeline, once the
//! fault that put them there is fixed.
//!
//! Where a record re-enters depends on where it failed: `decode`, `internal` and
//! `route` records start from the top (decoded with their source topic's input, or as line
//! protocol), `transform` records go through their tenant's chain again, `write`
//! records (already transformed) straight to their tenant's outputs. What fails
//! again is dead-lettered again. The replay group's offsets remember what was
//! replayed; it stops once it has read what the topic held when it started.

use super::ConfigArg;
use anyhow::{bail, Context, Result};
use boulder::ack::Tracker;
use boulder::batch::Format;
use boulder::config::Config;
use boulder::decode::Precision;
use boulder::kafka::{self, Inputs};
use boulder::metrics::Metrics;
use boulder::pipeline::{Consumed, Entry, Pipeline};
use boulder::runtime::{Chain, Router, Runtime, RuntimeSettings};
use boulder::service::Service;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Only records of this stage: decode, route, transform, write or internal
    /// (repeatable).
    #[arg(long)]
    stage: Vec<String>,
    /// Only records of this tenant (repeatable).
    #[arg(long)]
    tenant: Vec<String>,
    /// Only records written at or after this time: RFC 3339, or a duration ago ("2h").
    #[arg(long)]
    since: Option<String>,
    /// Only records written before this time: RFC 3339, or a duration ago.
    #[arg(long)]
    until: Option<String>,
    /// The consumer group that remembers what was replayed. Default: `<kafka.group_id>-replay`.
    #[arg(long)]
    group: Option<String>,
}

const STAGES: [&str; 6] = ["decode", "route", "limit", "transform", "write", "internal"];
/// Replay ends after this long without a record, even short of the end.
const IDLE: Duration = Duration::from_secs(5);
/// ...and this long without a record once past the end. Neither clock runs until
/// the group has given this process its partitions, which takes seconds on a busy
/// broker...
const SETTLE: Duration = Duration::from_secs(1);
/// ...unless that takes longer than this.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(args: ReplayArgs) -> Result<()> {
    if let Some(bad) = args.stage.iter().find(|s| !STAGES.contains(&s.as_str())) {
        bail!("--stage {bad:?}: expected one of {}", STAGES.join(", "));
    }
    let since = args.since.as_deref().map(parse_time).transpose()?;
    let until = args.until.as_deref().map(parse_time).transpose()?;
    let config = Config::load(&args.config.config)?;
    config.check_runnable()?;
    let runtime = Runtime::new(RuntimeSettings::from_config(&config))?;
    let router = Router::load(&runtime, &config)?;
    let chains = config
        .tenants
        .iter()
        .map(|t| Chain::load(&runtime, &config, t))
        .collect::<Result<Vec<_>, _>>()?;
    let filter = Filter {
        stages: args.stage,
        tenants: args.tenant,
        since,
        until,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(replay(config, router, chains, filter, args.group))
}

struct Filter {
    stages: Vec<String>,
    tenants: Vec<String>,
    since: Option<i64>,
    until: Option<i64>,
}

impl Filter {
    fn admits(&self, stage: &str, tenant: Option<&str>, timestamp_ms: Option<i64>) -> bool {
        (self.stages.is_empty() || self.stages.iter().any(|s| s == stage))
            && (self.tenants.is_empty()
                || tenant.is_some_and(|t| self.tenants.iter().any(|x| x == t)))
            && self
                .since
                .is_none_or(|s| timestamp_ms.is_some_and(|t| t >= s))
            && self
                .until
                .is_none_or(|u| timestamp_ms.is_some_and(|t| t < u))
    }
}

/// Milliseconds since the epoch of an RFC 3339 time or of "this long ago".
fn parse_time(s: &str) -> Result<i64> {
    let time = match humantime::parse_duration(s) {
        Ok(ago) => SystemTime::now() - ago,
        Err(_) => humantime::parse_rfc3339_weak(s)
            .with_context(|| format!("{s:?} is neither an RFC 3339 time nor a duration like 2h"))?,
    };
    Ok(time.duration_since(UNIX_EPOCH)?.as_millis() as i64)
}

async fn replay(
    config: Config,
    router: Option<Router>,
    chains: Vec<Chain>,
    filter: Filter,
    group: Option<String>,
) -> Result<()> {
    let config = Arc::new(config);
    let kafka_config = config.kafka.as_ref().expect("checked");
    let topic = config.dlq.as_ref().expect("checked").topic.clone();
    let group = group.unwrap_or_else(|| format!("{}-replay", kafka_config.group_id));
    let metrics = Arc::new(Metrics::new());
    let service = Service::start(&config, router, chains, metrics.clone()).await?;
    let inputs = Inputs::new(&config.inputs).map_err(anyhow::Error::msg)?;

    let consumer: Arc<BaseConsumer> = Arc::new(
        kafka::client_config(kafka_config)
            .set("group.id", &group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .context("creating the replay consumer")?,
    );
    let pipeline = service.pipeline.clone();
    let (reading, reading_topic) = (consumer.clone(), topic.clone());
    let (replayed, skipped, tracker) = tokio::task::spawn_blocking(move || {
        read_and_replay(&reading, &reading_topic, &inputs, &filter, &pipeline)
    })
    .await??;
    service.finish().await;
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final commit");
    }
    let text = metrics.encode();
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |a, b| a + b)
    };
    eprintln!("--- boulder replay of {topic} (group {group}) ---");
    for (stage, n) in &replayed {
        eprintln!("replayed    {n:>8} records from stage {stage}");
    }
    eprintln!("skipped     {skipped:>8} records (filters, or no input for their topic)");
    eprintln!(
        "written     {:>8} points",
        sum("boulder_points_written_total")
    );
    eprintln!(
        "dead again  {:>8} points",
        sum("boulder_points_dead_lettered_total")
    );
    if tracker.pending() > 0 {
        bail!(
            "{} records were not finished and will be replayed again",
            tracker.pending()
        );
    }
    Ok(())
}

/// Reads the dead-letter topic up to where it ended at the start (or until it has
/// been idle for [`IDLE`]) and replays what the filter admits, one record at a
/// time. Runs on a blocking thread: polling and the pipeline both block.
fn read_and_replay(
    consumer: &Arc<BaseConsumer>,
    topic: &str,
    inputs: &Inputs,
    filter: &Filter,
    pipeline: &Pipeline,
) -> Result<(BTreeMap<String, u64>, u64, Arc<Tracker>)> {
    consumer.subscribe(&[topic])?;
    // Where the topic ends now: replay stops there.
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            if high > low {
                ends.insert(p.id(), high);
            }
        }
    }
    let storing = Arc::downgrade(consumer);
    let tracker = Tracker::new(Box::new(move |topic, partition, offset| {
        if let Some(c) = storing.upgrade() {
            let _ = c.store_offset(topic, partition, offset);
        }
    }));
    let topic_name: Arc<str> = topic.into();
    let mut replayed: BTreeMap<String, u64> = BTreeMap::new();
    let mut skipped = 0u64;
    let mut last_progress = Instant::now();
    let mut last_record = Instant::now();
    let (joining, mut assigned) = (Instant::now(), false);
    // Past the ends seen at the start, wait a little for stragglers anyway: a
    // broker's high watermark can lag behind what it serves (seen with Tansu).
    while last_record.elapsed() < if ends.is_empty() { SETTLE } else { IDLE } {
        let message = match consumer.poll(Duration::from_millis(200)) {
            None if !assigned => {
                assigned = consumer.assignment().is_ok_and(|a| a.count() > 0);
                if !assigned && joining.elapsed() > JOIN_TIMEOUT {
                    bail!("no partition of {topic} was assigned to replay's group within {JOIN_TIMEOUT:?}");
                }
                // The idle clock starts once the partitions are ours.
                last_record = Instant::now();
                continue;
            }
            None => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "replay consumer error");
                continue;
            }
            Some(Ok(m)) => m,
        };
        last_record = Instant::now();
        let (partition, offset) = (message.partition(), message.offset());
        if ends.get(&partition).is_some_and(|&end| offset + 1 >= end) {
            ends.remove(&partition);
        }
        let ack = tracker.register(topic_name.clone(), partition, offset);
        let headers = boulder::dlq::headers_of(&message);
        let stage = headers
            .get("__connect.errors.stage")
            .cloned()
            .unwrap_or_default();
        let tenant = headers.get("boulder.tenant").cloned();
        let timestamp_ms = message.timestamp().to_millis();
        if !filter.admits(&stage, tenant.as_deref(), timestamp_ms) {
            skipped += 1;
            ack.done();
            continue;
        }
        let source_topic = headers
            .get("__connect.errors.topic")
            .cloned()
            .unwrap_or_default();
        let (source_topic, input) = inputs.find(&source_topic);
        // `decode` and `internal` records hold a message's original bytes, decoded
        // again as the config now says for their topic (the fix may be there).
        // The others hold line protocol with nanosecond timestamps, of points
        // that came in the format their header names: guests see them as before.
        let original = matches!(stage.as_str(), "decode" | "internal");
        let (format, precision, source_format) = match (original, input) {
            (true, Some(input)) => (input.format.into(), input.precision(), None),
            (true, None) => {
                tracing::warn!(partition, offset, topic = %source_topic, stage, "a dead letter of original bytes from a topic no input reads; skipped");
                skipped += 1;
                ack.done();
                continue;
            }
            (false, _) => {
                let recorded = headers
                    .get("boulder.source.format")
                    .and_then(|f| Format::from_name(f));
                (Format::InfluxLine, Precision::Ns, recorded)
            }
        };
        let consumed = Consumed {
            topic: source_topic,
            partition,
            offset,
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            timestamp_ns: timestamp_ms.and_then(|ms| ms.checked_mul(1_000_000)),
            format,
            source_format,
            precision,
            ack,
        };
        let entry = match (stage.as_str(), tenant.as_deref()) {
            ("transform", Some(t)) => Entry::Chain(t),
            ("write", Some(t)) => Entry::Outputs(t),
            _ => Entry::Start,
        };
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        // A panic is dead-lettered again by the pipeline, and said in its log.
        let _ = pipeline.process_from(vec![consumed], now_ns, entry);
        *replayed.entry(stage).or_default() += 1;
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "replay: {} replayed, {skipped} skipped",
                replayed.values().sum::<u64>()
            );
        }
    }
    Ok((replayed, skipped, tracker))
}
