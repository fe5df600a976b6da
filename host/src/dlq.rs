//! The dead-letter queue: a Kafka topic that receives everything Boulder could not
//! deliver, with the reason, so that nothing is ever dropped silently.
//!
//! A record's value is the original message bytes (decode failures, and messages
//! whose processing panicked) or the affected points as line protocol (later
//! stages). Its headers follow Kafka Connect's
//! dead-letter convention, so existing tooling reads them, plus Boulder's own:
//!
//! | header | value |
//! |---|---|
//! | `__connect.errors.topic` / `.partition` / `.offset` | where the message came from |
//! | `__connect.errors.stage` | `decode`, `route`, `limit`, `transform`, `write` or `internal` |
//! | `__connect.errors.exception.class.name` | a short class, e.g. `boulder.decode` |
//! | `__connect.errors.exception.message` | the reason |
//! | `boulder.tenant` / `boulder.component` / `boulder.output` | when known |
//! | `boulder.http.status` | the sink's status, for write failures |
//! | `boulder.part` | `i/n` when a dead letter too large for one record was split |
//! | `boulder.truncated.original.bytes` | the size of what was cut short to fit a record |
//! | `boulder.source.format` / `boulder.source.precision` | the input's format and timestamp unit, as the pipeline (and its guests) saw the points; absent for `write` records, whose points are past the guests |
//! | `boulder.dlq.version` | the version of this layout, [`DLQ_VERSION`] |
//!
//! The producer is idempotent with `acks=all`. A record that cannot be written is
//! retried with backoff until it is: the acks it holds are released only then, and
//! the consumer waits meanwhile ([`Health`]), so consumption stalls rather than
//! lose it. A record larger than the broker takes would never be written, so it is
//! not retried as it is: line protocol is split at line boundaries into records
//! that fit, and what cannot be split (a message's original bytes, a single line)
//! is cut short, with the original size in a header.

use crate::ack::Ack;
use crate::config::{DlqConfig, KafkaConfig};
use crate::decode::Precision;
use crate::kafka::producer::ReportingProducer;
use crate::metrics::Metrics;
use boulder_batch::Format;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The producer's `message.max.bytes` unless `kafka.options` sets it: a dead
/// letter holds a whole message, so allow large ones (the topic's
/// `max.message.bytes` must allow them too, or the broker's refusals teach
/// Boulder its limit).
const DEFAULT_MAX_RECORD: usize = 64 << 20;
/// Room in a record for the batch framing, the key and Boulder's part headers
/// beyond the letter's own headers: librdkafka counts them against
/// `message.max.bytes` too.
const RECORD_OVERHEAD: usize = 1024;
/// A dead letter not confirmed within this long counts as blocked (librdkafka
/// itself gives up only after `message.timeout.ms`): a healthy broker confirms in
/// milliseconds, and consumption should not run on for half a minute meanwhile.
const UNCONFIRMED: Duration = Duration::from_secs(5);
/// A value is never cut shorter than this, however small the broker's limit
/// seems: a record refused at this size is retried like any other failure.
const MIN_VALUE: usize = 1024;

/// The version of the dead-letter layout (its value and headers), in every record's
/// `boulder.dlq.version` header. Records without the header predate it: they
/// carry no `boulder.source.*` headers.
pub const DLQ_VERSION: &str = "1";

/// The pipeline stage where something failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The message (or a line of it) could not be decoded.
    Decode,
    /// The router dead-lettered the point, failed, or named no known tenant.
    Route,
    /// The point was over one of its tenant's ingestion limits (`limits.*`).
    Limit,
    /// A tenant's stage dead-lettered the point or failed on its batch.
    Transform,
    /// The sink refused the write, or retries ran out.
    Write,
    /// Boulder itself failed (a panic while processing the message's group): the
    /// record holds the message's original bytes.
    Internal,
}

impl Stage {
    /// The header value.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Route => "route",
            Stage::Limit => "limit",
            Stage::Transform => "transform",
            Stage::Write => "write",
            Stage::Internal => "internal",
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
    /// The format the points came in (for replay: a guest may treat a point by
    /// its origin), when the points had not left the guests yet.
    pub format: Option<Format>,
    /// The input's timestamp unit, likewise.
    pub precision: Option<Precision>,
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
            format: None,
            precision: None,
            acks: Vec::new(),
        }
    }

    fn headers(&self) -> OwnedHeaders {
        let mut h = OwnedHeaders::new();
        let mut add = |key: &str, value: &str| h = add_header(std::mem::take(&mut h), key, value);
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
        if let Some(format) = self.format {
            add("boulder.source.format", format.name());
        }
        if let Some(precision) = self.precision {
            add("boulder.source.precision", precision.name());
        }
        add("boulder.dlq.version", DLQ_VERSION);
        h
    }
}

fn add_header(headers: OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key,
        value: Some(value.as_bytes()),
    })
}

/// One record's share of a dead letter's value.
#[derive(Debug, PartialEq, Eq)]
struct Part {
    /// The bytes of the value it holds.
    bytes: Range<usize>,
    /// The size of what it holds the start of, when that was cut short to fit.
    truncated_from: Option<usize>,
}

/// Cuts a value into records' values of at most `max` bytes: line protocol
/// (`lines`) at line boundaries, a line longer than `max` alone and cut short;
/// anything else (a message's original bytes, meaningless in pieces) cut short.
fn parts(value: &[u8], lines: bool, max: usize) -> Vec<Part> {
    if !lines && value.len() > max {
        return vec![Part {
            bytes: 0..max,
            truncated_from: Some(value.len()),
        }];
    }
    let mut parts = Vec::new();
    let mut start = 0;
    loop {
        let rest = &value[start..];
        // How much this record holds, and where the next one starts.
        let (len, next, truncated_from) = if rest.len() <= max {
            (rest.len(), value.len(), None)
        } else if let Some(last) = rest[..max].iter().rposition(|&b| b == b'\n') {
            (last + 1, start + last + 1, None)
        } else {
            let line = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            (max, start + line, Some(line))
        };
        parts.push(Part {
            bytes: start..start + len,
            truncated_from,
        });
        start = next;
        if start >= value.len() {
            return parts;
        }
    }
}

/// Whether the dead-letter queue can be written: reported by the producer, waited
/// for by the consumer (which stops taking messages while it cannot), and
/// explained by the status endpoint.
#[derive(Debug)]
pub struct Health {
    topic: String,
    blocked: Mutex<Blocked>,
    writable: watch::Sender<bool>,
    gauge: Gauge,
}

#[derive(Debug, Default)]
struct Blocked {
    /// Dead letters whose last attempt failed.
    letters: usize,
    /// The last failure.
    error: String,
}

impl Health {
    fn new(topic: &str, gauge: Gauge) -> Health {
        Health {
            topic: topic.to_owned(),
            blocked: Mutex::new(Blocked::default()),
            writable: watch::Sender::new(true),
            gauge,
        }
    }

    /// An attempt to write a letter failed; `letter_failed` says whether one had
    /// failed before (the letter is counted once) and is set.
    fn failed(&self, letter_failed: &mut bool, error: String) {
        let mut blocked = self.blocked.lock().expect("poisoned");
        blocked.letters += usize::from(!std::mem::replace(letter_failed, true));
        blocked.error = error;
        self.gauge.set(1);
        self.writable.send_replace(false);
    }

    /// A letter that had failed is written.
    fn recovered(&self) {
        let mut blocked = self.blocked.lock().expect("poisoned");
        blocked.letters -= 1;
        if blocked.letters == 0 {
            self.gauge.set(0);
            self.writable.send_replace(true);
        }
    }

    /// Why the dead-letter queue cannot be written, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let blocked = self.blocked.lock().expect("poisoned");
        (blocked.letters > 0).then(|| {
            format!(
                "the dead-letter queue (topic {:?}) cannot be written ({}); {} dead letters are retried and consumption waits for them",
                self.topic, blocked.error, blocked.letters
            )
        })
    }

    /// Whether the last attempt of every dead letter succeeded.
    pub fn is_writable(&self) -> bool {
        *self.writable.borrow()
    }

    /// Returns once the dead-letter queue is writable.
    pub async fn writable(&self) {
        self.wait_for(true).await
    }

    /// Returns once the dead-letter queue is not writable.
    pub async fn blocked(&self) {
        self.wait_for(false).await
    }

    async fn wait_for(&self, writable: bool) {
        // Never an error: `self` holds the sender.
        let _ = self.writable.subscribe().wait_for(|w| *w == writable).await;
    }
}

fn too_large(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

/// Errors after which an idempotent producer's id or epoch is refused for good
/// (seen with Tansu after messages to a missing topic timed out): only a new
/// producer, with a new id, writes again.
fn lost_identity(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::InvalidProducerIdMapping
            | RDKafkaErrorCode::UnknownProducerId
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
    )
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
    config: rdkafka::ClientConfig,
    producer: Mutex<ReportingProducer>,
    topic: String,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// The producer's `message.max.bytes`.
    max_record: usize,
    /// A limit on values learnt from the broker's refusals (it may take less than
    /// the producer's limit allows).
    broker_max_value: AtomicUsize,
}

impl Dlq {
    /// An idempotent producer to the dead-letter topic.
    pub fn new(
        kafka: &KafkaConfig,
        dlq: &DlqConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Dlq, rdkafka::error::KafkaError> {
        let mut config = crate::kafka::client_config(kafka);
        config.set("enable.idempotence", "true").set("acks", "all");
        if !kafka.options.contains_key("message.timeout.ms") {
            config.set("message.timeout.ms", "30000");
        }
        let max_record = match kafka.options.get("message.max.bytes") {
            Some(max) => max.parse().unwrap_or(DEFAULT_MAX_RECORD),
            None => {
                config.set("message.max.bytes", DEFAULT_MAX_RECORD.to_string());
                DEFAULT_MAX_RECORD
            }
        };
        Ok(Dlq {
            producer: Mutex::new(ReportingProducer::create(&config)?),
            config,
            topic: dlq.topic.clone(),
            health: Arc::new(Health::new(
                &dlq.topic,
                metrics.dead_letter_queue_blocked.clone(),
            )),
            metrics,
            max_record,
            broker_max_value: AtomicUsize::new(usize::MAX),
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

    /// Whether the queue can be written, for the consumer and the status endpoint.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Writes a dead letter (in several records if it is larger than one may be),
    /// retrying until the broker confirms it, then releases its acks.
    pub async fn send(&self, letter: DeadLetter) {
        let headers = letter.headers();
        let mut failed = false;
        'plan: loop {
            let parts = parts(
                &letter.value,
                !matches!(letter.stage, Stage::Decode | Stage::Internal),
                self.max_value(&letter, &headers),
            );
            let n = parts.len();
            if n > 1 || parts[0].truncated_from.is_some() {
                tracing::warn!(topic = %self.topic, bytes = letter.value.len(), records = n, truncated = parts.iter().filter(|p| p.truncated_from.is_some()).count(), "dead letter larger than a record may be: split at line boundaries, and what cannot be split cut short");
            }
            for (i, part) in parts.iter().enumerate() {
                let mut headers = headers.clone();
                if n > 1 {
                    headers = add_header(headers, "boulder.part", &format!("{}/{n}", i + 1));
                }
                if let Some(original) = part.truncated_from {
                    let original = original.to_string();
                    headers = add_header(headers, "boulder.truncated.original.bytes", &original);
                }
                let value = &letter.value[part.bytes.clone()];
                if let Err(refused) = self.write(&letter, value, headers, &mut failed).await {
                    // Smaller records from the start: duplicates of parts already
                    // written are allowed, a part lost is not.
                    let max = self
                        .broker_max_value
                        .fetch_min(refused, Ordering::Relaxed)
                        .min(refused);
                    tracing::warn!(topic = %self.topic, refused_bytes = value.len(), max_value_bytes = max, "the broker refused a dead letter as too large; cutting dead letters smaller from now on");
                    continue 'plan;
                }
            }
            break;
        }
        if failed {
            self.health.recovered();
            tracing::info!(topic = %self.topic, "dead-letter queue writable again");
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

    /// Replaces a producer that can no longer write (after a fatal error, or
    /// once the broker refuses its producer id), unless another letter has
    /// replaced it already: an idempotent producer never recovers from either.
    fn replace(&self, failed: &ReportingProducer, code: RDKafkaErrorCode, reason: &str) {
        let mut current = self.producer.lock().expect("poisoned");
        if !current.same_as(failed) {
            return;
        }
        match ReportingProducer::create(&self.config) {
            Ok(new) => {
                *current = new;
                tracing::warn!(topic = %self.topic, error = %code, reason, "the dead-letter producer can no longer write; replaced it with a new one");
            }
            Err(e) => {
                tracing::error!(topic = %self.topic, error = %e, "cannot replace the dead-letter producer that can no longer write; retrying")
            }
        }
    }

    /// The largest value a record of this letter may hold.
    fn max_value(&self, letter: &DeadLetter, headers: &OwnedHeaders) -> usize {
        let headers: usize = headers
            .iter()
            .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
            .sum();
        let key = letter.key.as_ref().map_or(0, Vec::len);
        self.max_record
            .saturating_sub(headers + key + RECORD_OVERHEAD)
            .min(self.broker_max_value.load(Ordering::Relaxed))
            .max(MIN_VALUE)
    }

    /// Writes one record, retrying until the broker confirms it. A record the
    /// broker (or the producer's `message.max.bytes`) refuses as too large is not
    /// retried: the answer is half its value's size, a limit to cut it to.
    async fn write(
        &self,
        letter: &DeadLetter,
        value: &[u8],
        headers: OwnedHeaders,
        failed: &mut bool,
    ) -> Result<(), usize> {
        let mut backoff = crate::retry::backoff(Duration::from_secs(10));
        let mut attempt = 0u32;
        loop {
            let producer = self.producer.lock().expect("poisoned").clone();
            let delivery =
                producer.send(&self.topic, letter.key.as_deref(), value, headers.clone());
            tokio::pin!(delivery);
            let delivered = match tokio::time::timeout(UNCONFIRMED, &mut delivery).await {
                Ok(delivered) => delivered,
                Err(_) => {
                    let waiting = format!("not confirmed after {UNCONFIRMED:?}");
                    tracing::error!(topic = %self.topic, "a dead letter is {waiting}; consumption waits for it");
                    self.health.failed(failed, waiting);
                    delivery.await
                }
            };
            let error = match delivered {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if too_large(&error) && value.len() > MIN_VALUE {
                return Err((value.len() / 2).max(MIN_VALUE));
            }
            if let Some((code, reason)) = producer.fatal_error() {
                self.replace(&producer, code, &reason);
            } else if let Some(code) = error.rdkafka_error_code().filter(|c| lost_identity(*c)) {
                self.replace(
                    &producer,
                    code,
                    "the broker no longer accepts its producer id",
                );
            }
            self.health.failed(failed, error.to_string());
            self.metrics.dead_letter_errors.inc();
            attempt += 1;
            let wait = backoff.next().unwrap_or(Duration::from_secs(10));
            tracing::error!(topic = %self.topic, attempt, error = %error, retry_in = ?wait, "cannot write to the dead-letter queue; holding its offsets, consumption waits, retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut<'a>(value: &'a [u8], parts: &[Part]) -> Vec<(&'a str, Option<usize>)> {
        parts
            .iter()
            .map(|p| {
                let text = std::str::from_utf8(&value[p.bytes.clone()]).unwrap();
                (text, p.truncated_from)
            })
            .collect()
    }

    #[test]
    fn a_value_that_fits_is_one_part() {
        let value = b"m v=1 1\nm v=2 2\n";
        for lines in [true, false] {
            let p = parts(value, lines, value.len());
            assert_eq!(cut(value, &p), [("m v=1 1\nm v=2 2\n", None)]);
        }
        assert_eq!(cut(b"", &parts(b"", true, 10)), [("", None)]);
    }

    #[test]
    fn line_protocol_is_split_at_line_boundaries_into_parts_that_fit() {
        let value = b"a v=1 1\nbb v=2 2\nccc v=3 3\nd v=4 4\n";
        let p = parts(value, true, 18);
        assert_eq!(
            cut(value, &p),
            [
                ("a v=1 1\nbb v=2 2\n", None),
                ("ccc v=3 3\nd v=4 4\n", None)
            ]
        );
        let p = parts(value, true, 10);
        assert_eq!(
            cut(value, &p),
            [
                ("a v=1 1\n", None),
                ("bb v=2 2\n", None),
                ("ccc v=3 3\n", None),
                ("d v=4 4\n", None)
            ]
        );
        let joined: Vec<u8> = p
            .iter()
            .flat_map(|p| value[p.bytes.clone()].to_vec())
            .collect();
        assert_eq!(joined, value, "every byte once, in order");
    }

    #[test]
    fn a_line_longer_than_a_part_is_cut_short_alone() {
        let value = b"a v=1 1\nlooooong v=2 2\nc v=3 3\nlast-without-newline v=4";
        let p = parts(value, true, 9);
        assert_eq!(
            cut(value, &p),
            [
                ("a v=1 1\n", None),
                ("looooong ", Some(15)),
                ("c v=3 3\n", None),
                ("last-with", Some(24))
            ]
        );
    }

    #[test]
    fn original_bytes_are_cut_short_with_their_size() {
        let value = vec![b'x'; 100];
        let p = parts(&value, false, 30);
        assert_eq!(
            p,
            [Part {
                bytes: 0..30,
                truncated_from: Some(100)
            }]
        );
    }

    #[test]
    fn health_counts_blocked_letters_until_the_last_is_written() {
        let gauge = Gauge::default();
        let health = Health::new("dlq", gauge.clone());
        assert!(health.is_writable() && health.problem().is_none());
        let error = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic);
        let (mut first, mut second) = (false, false);
        health.failed(&mut first, "not confirmed".into());
        health.failed(&mut first, error.to_string());
        health.failed(&mut second, error.to_string());
        assert!(first && second);
        assert_eq!(gauge.get(), 1);
        let problem = health.problem().unwrap();
        assert!(problem.contains(r#"topic "dlq""#), "{problem}");
        assert!(problem.contains("Unknown topic"), "{problem}");
        assert!(problem.contains("2 dead letters"), "{problem}");
        health.recovered();
        assert!(!health.is_writable());
        health.recovered();
        assert!(health.is_writable() && health.problem().is_none());
        assert_eq!(gauge.get(), 0);
    }
}
