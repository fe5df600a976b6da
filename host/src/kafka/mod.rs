//! Kafka as transport: the consumer group and its callbacks, which input a topic
//! belongs to, topics that must exist, and the settings shared by every client.
//! What is done with the messages is the service's ([`crate::service`]).
//!
//! Offsets are stored manually (`enable.auto.offset.store = false`) by the
//! [`crate::ack::Tracker`], only once every point of a message and of every
//! earlier message of its partition is written or dead-lettered; librdkafka commits
//! what is stored every `auto.commit.interval.ms`, before partitions are revoked,
//! and on close.

pub mod producer;

use crate::ack::Tracker;
use crate::config::{InputConfig, KafkaConfig};
use crate::metrics::{Metrics, PartitionLabels};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, ClientContext};
use regex::Regex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

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

/// The consumer's callbacks: librdkafka's statistics become the lag metric; a
/// rebalance commits what is stored before partitions leave, and tells whoever
/// consumes that partitions left and that the assignment changed.
pub struct BoulderContext {
    metrics: Arc<Metrics>,
    tracker: OnceLock<Arc<Tracker>>,
    revocations: AtomicU64,
    assigned: Notify,
}

impl BoulderContext {
    /// A context reporting to `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> BoulderContext {
        BoulderContext {
            metrics,
            tracker: OnceLock::new(),
            revocations: AtomicU64::new(0),
            assigned: Notify::new(),
        }
    }

    /// Connects the tracker (created after the consumer, since it stores offsets in it).
    pub fn set_tracker(&self, tracker: Arc<Tracker>) {
        let _ = self.tracker.set(tracker);
    }

    /// How many times partitions have been revoked so far. Rebalances are
    /// handled inside the consumer's poll, so the poller learns of them here; the
    /// messages it holds of a revoked partition are no longer
    /// [`crate::ack::Ack::is_current`].
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Relaxed)
    }

    /// Returns once partitions have been assigned since the last time it returned
    /// (a paused consumer must pause the new ones too).
    pub async fn assigned(&self) {
        self.assigned.notified().await
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
            self.revocations.fetch_add(1, Ordering::Relaxed);
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
            self.assigned.notify_one();
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
        .set("queued.max.messages.kbytes", "16384");
    // `max.poll.interval.ms` keeps librdkafka's default (5 minutes): Boulder polls
    // while it waits for outputs or the dead-letter queue (its partitions paused),
    // so the interval bounds only a wedged process, which should lose its
    // partitions.
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

/// Commits what has been stored, synchronously (on shutdown).
pub fn commit(consumer: &BoulderConsumer) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("offsets committed"),
        // Nothing stored since the last commit is not an error worth alarming about.
        Err(e) => tracing::info!(error = %e, "final commit"),
    }
}
