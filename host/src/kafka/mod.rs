//! Consuming from Kafka: the consumer group, which input a topic belongs to, and
//! the loop that groups messages and hands them to the pipeline's workers.
//!
//! Offsets are stored manually (`enable.auto.offset.store = false`) by the
//! [`ack::Tracker`], only once every point of a message and of every earlier
//! message of its partition is written or dead-lettered; librdkafka commits what is
//! stored every `auto.commit.interval.ms` and on close.

pub mod ack;
pub mod producer;

use crate::config::{InputConfig, KafkaConfig, PipelineConfig};
use crate::dlq::Health;
use crate::metrics::{Metrics, PartitionLabels};
use crate::pipeline::{Consumed, Pipeline};
use ack::Tracker;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};
use regex::Regex;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Which input a topic belongs to: exact names first, then regexes in order.
pub struct Inputs {
    inputs: Vec<InputConfig>,
    exact: HashMap<String, usize>,
    patterns: Vec<(Regex, usize)>,
    seen: Mutex<HashMap<Arc<str>, Option<usize>>>,
}

impl Inputs {
    /// Builds the matcher; a regex that Rust's `regex` cannot read is an error.
    pub fn new(inputs: &[InputConfig]) -> Result<Inputs, String> {
        let mut exact = HashMap::new();
        let mut patterns = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            for topic in &input.topics {
                if topic.starts_with('^') {
                    let re = Regex::new(topic)
                        .map_err(|e| format!("inputs[{i}].topics: {topic:?}: {e}"))?;
                    patterns.push((re, i));
                } else {
                    exact.entry(topic.clone()).or_insert(i);
                }
            }
        }
        Ok(Inputs {
            inputs: inputs.to_vec(),
            exact,
            patterns,
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// What to subscribe to: every name and regex of every input.
    pub fn subscription(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.inputs.iter().flat_map(|i| i.topics.clone()).collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// The input a topic belongs to, and the topic as a shared string.
    pub fn find(&self, topic: &str) -> (Arc<str>, Option<&InputConfig>) {
        let mut seen = self.seen.lock().expect("poisoned");
        if let Some((name, index)) = seen.get_key_value(topic) {
            return (name.clone(), index.map(|i| &self.inputs[i]));
        }
        let index = self.exact.get(topic).copied().or_else(|| {
            self.patterns
                .iter()
                .find(|(re, _)| re.is_match(topic))
                .map(|(_, i)| *i)
        });
        let name: Arc<str> = topic.into();
        seen.insert(name.clone(), index);
        (name, index.map(|i| &self.inputs[i]))
    }
}

/// The brokers and the pass-through options, without the consumer-only settings
/// (which would only draw warnings from producers and admin clients).
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in &kafka.options {
        if !k.starts_with("auto.") && !k.starts_with("enable.auto") && k != "group.id" {
            config.set(k, v);
        }
    }
    config.set("bootstrap.servers", &kafka.brokers);
    config
}

/// Makes sure a topic exists. When it does not: creates it with `create`'s
/// `(partitions, replication)` (replication -1: the broker's default), or fails.
pub async fn ensure_topic(
    kafka: &KafkaConfig,
    topic: &str,
    create: Option<(i32, i32)>,
) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = client_config(kafka)
        .create()
        .map_err(|e| format!("creating an admin client: {e}"))?;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("reading metadata of topic {topic:?}: {e}"))?;
    let exists = metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if exists {
        return Ok(());
    }
    let Some((partitions, replication)) = create else {
        return Err(format!("topic {topic:?} does not exist"));
    };
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let results = admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .map_err(|e| format!("creating topic {topic:?}: {e}"))?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic, partitions, "created topic"),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating topic {name:?}: {code}")),
        }
    }
    Ok(())
}

/// The consumer's callbacks: librdkafka's statistics become the lag metric, and a
/// rebalance commits what is stored before partitions leave.
pub struct BoulderContext {
    metrics: Arc<Metrics>,
    tracker: OnceLock<Arc<Tracker>>,
}

impl BoulderContext {
    /// A context reporting to `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> BoulderContext {
        BoulderContext {
            metrics,
            tracker: OnceLock::new(),
        }
    }

    /// Connects the tracker (created after the consumer, since it stores offsets in it).
    pub fn set_tracker(&self, tracker: Arc<Tracker>) {
        let _ = self.tracker.set(tracker);
    }
}

impl ClientContext for BoulderContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // librdkafka reports -1 for partitions it does not consume, and
                // an internal partition -1.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    let labels = PartitionLabels {
                        topic: topic.clone(),
                        partition: partition.to_string(),
                    };
                    self.metrics
                        .consumer_lag
                        .get_or_create(&labels)
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for BoulderContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            // The next owner starts right after what was written here. Work still
            // in flight on these partitions finishes (maybe written twice: allowed)
            // but can no longer move their offsets.
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "commit before revocation");
            }
            let tracker = self.tracker.get();
            for p in partitions.elements() {
                if let Some(tracker) = tracker {
                    tracker.forget(p.topic(), p.partition());
                }
                let labels = PartitionLabels {
                    topic: p.topic().to_owned(),
                    partition: p.partition().to_string(),
                };
                self.metrics.consumer_lag.remove(&labels);
            }
            tracing::info!(partitions = partitions.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            let assigned: Vec<String> = partitions
                .elements()
                .iter()
                .map(|p| format!("{}/{}", p.topic(), p.partition()))
                .collect();
            tracing::info!(partitions = ?assigned, "partitions assigned");
        }
    }
}

/// The consumer Boulder runs.
pub type BoulderConsumer = StreamConsumer<BoulderContext>;

/// A consumer in the config's group, subscribed to every input's topics.
pub fn consumer(
    kafka: &KafkaConfig,
    inputs: &Inputs,
    metrics: Arc<Metrics>,
) -> Result<BoulderConsumer, rdkafka::error::KafkaError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "true")
        // A new group starts at the beginning: nothing already in the topics is lost.
        .set("auto.offset.reset", "earliest")
        // New topics matching a regex are found within this time.
        .set("topic.metadata.refresh.interval.ms", "30000")
        // Statistics feed the consumer-lag metric.
        .set("statistics.interval.ms", "5000")
        // Messages fetched ahead and not yet taken: librdkafka's default, 64 MiB,
        // is most of Boulder's memory while an output is down; 16 MiB still keeps
        // four partitions of ~150 B points fed at several hundred thousand
        // points per second (scripts/bench.sh).
        .set("queued.max.messages.kbytes", "16384")
        // Consumption waits while outputs retry (up to max_retry_time, 1 h by
        // default) or the dead-letter queue is blocked; librdkafka's 5 minutes
        // would make it leave the group then, and rejoin to read again what is in
        // flight.
        .set("max.poll.interval.ms", "7200000");
    for (k, v) in &kafka.options {
        config.set(k, v);
    }
    config.set("enable.auto.offset.store", "false");
    let consumer: BoulderConsumer = config.create_with_context(BoulderContext::new(metrics))?;
    let topics = inputs.subscription();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Consumes until `shutdown`, grouping messages by `pipeline.batch_messages`,
/// `pipeline.batch_bytes` and `pipeline.linger`, running up to `workers` groups at
/// once, and pausing while the dead-letter queue cannot be written; waits for the
/// groups in flight, then commits what is stored.
#[allow(clippy::too_many_arguments)]
pub async fn consume(
    consumer: Arc<BoulderConsumer>,
    inputs: Arc<Inputs>,
    tracker: Arc<Tracker>,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    config: &PipelineConfig,
    workers: usize,
    dead_letter_queue: Arc<Health>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(workers));
    let mut group = Group::default();
    loop {
        if !dead_letter_queue.is_writable() {
            // Every later message could need the queue too, and none of them
            // can be committed past the waiting dead letter anyway: taking more
            // would only pile them up in memory.
            dispatch(&mut group, &pipeline, &permits).await;
            tracing::warn!("consumption paused until the dead-letter queue can be written");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = dead_letter_queue.writable() => {}
            }
            tracing::info!("consumption resumed: the dead-letter queue is writable");
            continue;
        }
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = dead_letter_queue.blocked() => continue,
            _ = sleep_until(group.deadline), if group.deadline.is_some() => {
                dispatch(&mut group, &pipeline, &permits).await;
                continue;
            }
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "kafka consumer error");
                continue;
            }
        };
        let (topic, input) = inputs.find(message.topic());
        let ack = tracker.register(topic.clone(), message.partition(), message.offset());
        let Some(input) = input else {
            // The broker's regex matched a topic that Rust's does not; keep going.
            tracing::error!(%topic, "a subscribed topic matches no input; skipping its message");
            ack.done();
            continue;
        };
        metrics
            .messages_consumed
            .get_or_create(&Metrics::format(input.format.name()))
            .inc();
        group.push(
            config,
            Consumed {
                topic,
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().unwrap_or_default().to_vec(),
                timestamp_ns: message
                    .timestamp()
                    .to_millis()
                    .filter(|&ms| ms > 0)
                    .and_then(|ms| ms.checked_mul(1_000_000)),
                format: input.format.into(),
                precision: input.precision(),
                ack,
            },
        );
        if group.is_full(config) {
            dispatch(&mut group, &pipeline, &permits).await;
        }
    }
    dispatch(&mut group, &pipeline, &permits).await;
    // Every permit back means every group in flight has been handed off.
    let _all = permits.acquire_many(workers as u32).await;
}

/// Commits what has been stored, synchronously (on shutdown).
pub fn commit(consumer: &BoulderConsumer) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("offsets committed"),
        // Nothing stored since the last commit is not an error worth alarming about.
        Err(e) => tracing::info!(error = %e, "final commit"),
    }
}

/// The messages that will be processed together.
#[derive(Default)]
struct Group {
    messages: Vec<Consumed>,
    // Their payload bytes.
    bytes: u64,
    // When the group goes out even if not full: `linger` after its first message.
    deadline: Option<tokio::time::Instant>,
}

impl Group {
    fn push(&mut self, config: &PipelineConfig, message: Consumed) {
        self.bytes += message.payload.len() as u64;
        self.messages.push(message);
        self.deadline
            .get_or_insert_with(|| tokio::time::Instant::now() + config.linger);
    }

    fn is_full(&self, config: &PipelineConfig) -> bool {
        self.messages.len() >= config.batch_messages || self.bytes >= config.batch_bytes.as_u64()
    }

    /// The messages, leaving the group empty.
    fn take(&mut self) -> Vec<Consumed> {
        (self.bytes, self.deadline) = (0, None);
        std::mem::take(&mut self.messages)
    }
}

async fn dispatch(group: &mut Group, pipeline: &Arc<Pipeline>, permits: &Arc<Semaphore>) {
    let messages = group.take();
    if messages.is_empty() {
        return;
    }
    // Waiting for a permit is the backpressure: no more than `workers` groups in
    // flight, and consumption pauses while they are.
    let permit = permits.clone().acquire_owned().await.expect("never closed");
    let pipeline = pipeline.clone();
    tokio::task::spawn_blocking(move || {
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos() as i64;
        pipeline.process(messages, now_ns);
        drop(permit);
    });
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
