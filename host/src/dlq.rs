//! The dead-letter queue: a Kafka topic that receives everything Boulder could not
//! deliver, with the reason, so that nothing is ever dropped silently.
//!
//! A record's value is the original message bytes (decode failures) or the affected
//! points as line protocol (later stages). Its headers follow Kafka Connect's
//! dead-letter convention, so existing tooling reads them, plus Boulder's own:
//!
//! | header | value |
//! |---|---|
//! | `__connect.errors.topic` / `.partition` / `.offset` | where the message came from |
//! | `__connect.errors.stage` | `decode`, `route`, `transform` or `write` |
//! | `__connect.errors.exception.class.name` | a short class, e.g. `boulder.decode` |
//! | `__connect.errors.exception.message` | the reason |
//! | `boulder.tenant` / `boulder.component` / `boulder.output` | when known |
//! | `boulder.http.status` | the sink's status, for write failures |
//!
//! The producer is idempotent with `acks=all`. A record that cannot be written is
//! retried with backoff until it is: the acks it holds are released only then, so
//! consumption stalls rather than lose it.

use crate::config::{DlqConfig, KafkaConfig};
use crate::kafka::ack::Ack;
use crate::metrics::Metrics;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::Duration;

/// The pipeline stage where something failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The message (or a line of it) could not be decoded.
    Decode,
    /// The router dead-lettered the point, failed, or named no known tenant.
    Route,
    /// A tenant's stage dead-lettered the point or failed on its batch.
    Transform,
    /// The sink refused the write, or retries ran out.
    Write,
}

impl Stage {
    /// The header value.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Route => "route",
            Stage::Transform => "transform",
            Stage::Write => "write",
        }
    }
}

/// One dead-letter record, and the acks it releases once written.
pub struct DeadLetter {
    /// The record's value.
    pub value: Vec<u8>,
    /// The original message's key, if any.
    pub key: Option<Vec<u8>>,
    /// Where it failed.
    pub stage: Stage,
    /// A short error class, e.g. `boulder.decode`, `boulder.guest.panic`.
    pub class: String,
    /// The reason, for people.
    pub message: String,
    /// The tenant, when known.
    pub tenant: Option<String>,
    /// The component, when a guest was involved.
    pub component: Option<String>,
    /// The output, for write failures.
    pub output: Option<String>,
    /// The sink's HTTP status, for write failures.
    pub http_status: Option<u16>,
    /// The source message(s); the first names the record's source headers.
    pub acks: Vec<Ack>,
}

impl DeadLetter {
    /// A dead letter with only the required parts set.
    pub fn new(
        stage: Stage,
        class: impl Into<String>,
        message: impl Into<String>,
        value: Vec<u8>,
    ) -> DeadLetter {
        DeadLetter {
            value,
            key: None,
            stage,
            class: class.into(),
            message: message.into(),
            tenant: None,
            component: None,
            output: None,
            http_status: None,
            acks: Vec::new(),
        }
    }

    fn headers(&self) -> OwnedHeaders {
        let mut h = OwnedHeaders::new();
        let mut add = |key: &str, value: &str| {
            h = std::mem::take(&mut h).insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        };
        if let Some((topic, partition, offset)) = self.acks.first().map(Ack::source) {
            add("__connect.errors.topic", topic);
            add("__connect.errors.partition", &partition.to_string());
            add("__connect.errors.offset", &offset.to_string());
        }
        add("__connect.errors.stage", self.stage.name());
        add("__connect.errors.exception.class.name", &self.class);
        add("__connect.errors.exception.message", &self.message);
        for (key, value) in [
            ("boulder.tenant", &self.tenant),
            ("boulder.component", &self.component),
            ("boulder.output", &self.output),
        ] {
            if let Some(v) = value {
                add(key, v);
            }
        }
        if let Some(status) = self.http_status {
            add("boulder.http.status", &status.to_string());
        }
        h
    }
}

/// The headers of a (dead-letter) record, as UTF-8 strings: what `boulder replay`
/// and other readers of the queue need.
pub fn headers_of(
    record: &impl rdkafka::message::Message,
) -> std::collections::BTreeMap<String, String> {
    use rdkafka::message::Headers;
    record
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The dead-letter producer.
pub struct Dlq {
    producer: FutureProducer,
    topic: String,
    metrics: Arc<Metrics>,
}

impl Dlq {
    /// An idempotent producer to the dead-letter topic.
    pub fn new(
        kafka: &KafkaConfig,
        dlq: &DlqConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Dlq, rdkafka::error::KafkaError> {
        let mut config = crate::kafka::client_config(kafka);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000");
        if !kafka.options.contains_key("message.max.bytes") {
            // A dead letter holds a whole message: allow large ones (the topic's
            // max.message.bytes must allow them too).
            config.set("message.max.bytes", "67108864");
        }
        Ok(Dlq {
            producer: config.create()?,
            topic: dlq.topic.clone(),
            metrics,
        })
    }

    /// Makes sure the dead-letter topic exists, creating it when allowed: a
    /// dead-letter queue that cannot be written would stall everything later.
    pub async fn ensure_topic(kafka: &KafkaConfig, dlq: &DlqConfig) -> Result<(), String> {
        crate::kafka::ensure_topic(
            kafka,
            &dlq.topic,
            dlq.create.then_some((dlq.partitions, dlq.replication)),
        )
        .await
    }

    /// Writes a dead letter, retrying until the broker confirms it, then releases
    /// its acks.
    pub async fn send(&self, letter: DeadLetter) {
        let headers = letter.headers();
        let mut backoff = crate::retry::backoff(Duration::from_secs(10));
        let mut attempt = 0u32;
        loop {
            let mut record = FutureRecord::to(&self.topic)
                .payload(&letter.value)
                .headers(headers.clone());
            if let Some(key) = &letter.key {
                record = record.key(key);
            }
            match self.producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => break,
                Err((e, _)) => {
                    if attempt == 0 {
                        self.metrics.dead_letter_queue_blocked.inc();
                    }
                    self.metrics.dead_letter_errors.inc();
                    attempt += 1;
                    let wait = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::error!(topic = %self.topic, attempt, error = %e, retry_in = ?wait, "cannot write to the dead-letter queue; holding its offsets and retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if attempt > 0 {
            self.metrics.dead_letter_queue_blocked.dec();
            tracing::info!(topic = %self.topic, attempts = attempt + 1, "dead-letter queue writable again");
        }
        self.metrics
            .dead_letters_written
            .get_or_create(&Metrics::stage(
                letter.stage.name(),
                letter.tenant.as_deref(),
            ))
            .inc();
        tracing::debug!(stage = letter.stage.name(), class = %letter.class, tenant = letter.tenant.as_deref().unwrap_or(""), reason = %letter.message, bytes = letter.value.len(), "dead-lettered");
        for ack in letter.acks {
            ack.done();
        }
    }
}
