//! The consumer loop: takes messages from the consumer group, groups them, and
//! hands each group to a worker thread.
//!
//! While it cannot hand a group on (every worker busy, which is how a spent
//! in-flight budget shows here) or the dead-letter queue cannot be written, it
//! pauses the assigned partitions and keeps polling the consumer. Polling is what
//! lets librdkafka take part in a rebalance: a process that waits on one tenant's
//! stalled database still gives up or takes partitions in the group's normal time.

use crate::ack::Tracker;
use crate::config::PipelineConfig;
use crate::dlq::Health;
use crate::kafka::{BoulderConsumer, Inputs};
use crate::metrics::Metrics;
use crate::pipeline::{Consumed, Pipeline};
use crate::status::Status;
use futures::Stream;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a full group waits for a worker before the partitions are paused.
/// Workers are busy for milliseconds when Boulder is merely at full speed; a
/// pause then would cost a fetch (librdkafka drops what it fetched ahead for a
/// paused partition and fetches it again on resume), and a rebalance can wait
/// this long.
const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// Why consumption waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// A dead letter cannot be written: later messages may need the queue too,
    /// and none can be committed past the waiting letter.
    DeadLetterQueue,
    /// Every worker holds a group: outputs are behind (the in-flight budget is
    /// spent) or guests are slow.
    Workers,
}

impl Wait {
    fn reason(self) -> &'static str {
        match self {
            Wait::DeadLetterQueue => "until the dead-letter queue can be written",
            Wait::Workers => "every worker is busy (outputs behind, or guests slow)",
        }
    }
}

/// The consumer loop and what it feeds.
pub(super) struct Consumption {
    pub(super) consumer: Arc<BoulderConsumer>,
    pub(super) inputs: Arc<Inputs>,
    pub(super) tracker: Arc<Tracker>,
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) status: Arc<Status>,
    pub(super) config: PipelineConfig,
    pub(super) workers: usize,
    pub(super) dead_letter_queue: Arc<Health>,
}

impl Consumption {
    /// Consumes until `shutdown`, grouping messages by `pipeline.batch_messages`,
    /// `pipeline.batch_bytes` and `pipeline.linger` and running up to `workers`
    /// groups at once; then hands off the last group and waits until every group
    /// is handed off.
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.workers));
        let mut group = Group::default();
        let mut pause = Pause::default();
        let mut revocations = self.consumer.context().revocations();
        loop {
            self.drop_revoked(&mut group, &mut revocations);
            let writable = self.dead_letter_queue.is_writable();
            let due = group.is_due(&self.config) || (!writable && !group.messages.is_empty());
            let wait = if !writable {
                Some(Wait::DeadLetterQueue)
            } else if due && permits.available_permits() == 0 {
                Some(Wait::Workers)
            } else {
                None
            };
            let pause_at = pause.follow(wait, &self.consumer, &self.metrics, || {
                self.take_ready(&mut group)
            });
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned(), if due => {
                    self.dispatch(group.take(), permit.expect("never closed"));
                }
                _ = self.dead_letter_queue.writable(), if !writable => {}
                _ = self.dead_letter_queue.blocked(), if writable => {}
                _ = sleep_until(pause_at), if pause_at.is_some() => {}
                _ = self.consumer.context().assigned(), if pause.is_paused() => {
                    // New partitions start unpaused.
                    self.take_ready(&mut group);
                    pause.apply(&self.consumer);
                }
                _ = sleep_until(group.deadline), if !due && group.deadline.is_some() => {
                    group.lingered = true;
                }
                // A full group waits for a worker without polling, unless the
                // partitions are paused: what a paused consumer still delivers
                // (fetched before the pause took effect) joins the group.
                message = self.consumer.recv(), if !due || pause.is_paused() => {
                    self.take(message, &mut group);
                }
            }
        }
        if !group.messages.is_empty() {
            let permit = permits.clone().acquire_owned().await.expect("never closed");
            self.dispatch(group.take(), permit);
        }
        // Every permit back means every group in flight has been handed off.
        let _all = permits.acquire_many(self.workers as u32).await;
    }

    /// Drops the group's messages of partitions revoked since `revocations` was
    /// read (and reads it again).
    fn drop_revoked(&self, group: &mut Group, revocations: &mut u64) {
        let now = self.consumer.context().revocations();
        if now == *revocations {
            return;
        }
        *revocations = now;
        let dropped = group.drop_stale();
        if dropped > 0 {
            tracing::info!(messages = dropped, "left unprocessed the waiting messages of revoked partitions: their next owner reads them");
        }
    }

    /// Takes every message the consumer has fetched and holds ready, without
    /// waiting, before its partitions are paused.
    ///
    /// Pausing drops what librdkafka fetched ahead and, on resume, fetches again
    /// from the position after the last message taken. Taken whole, fetches end at
    /// record-batch boundaries, so the fetch after a resume starts at one: a
    /// broker that cannot serve a fetch from inside a batch (Tansu 0.6.0 serves
    /// it from the next batch on, skipping the rest) then loses nothing, and
    /// nothing is fetched twice. Bounded by librdkafka's prefetch
    /// (`queued.max.messages.kbytes`), which held these messages anyway.
    fn take_ready(&self, group: &mut Group) {
        let stream = self.consumer.stream();
        let mut stream = std::pin::pin!(stream);
        loop {
            let woken = Arc::new(Woken::default());
            let waker = Waker::from(woken.clone());
            match stream.as_mut().poll_next(&mut Context::from_waker(&waker)) {
                Poll::Ready(Some(message)) => self.take(message, group),
                Poll::Ready(None) => return,
                // It handled an event (a rebalance, a log line) and asks to be
                // polled again: more may be ready behind it.
                Poll::Pending if woken.0.load(Ordering::Relaxed) => {}
                // Nothing ready: it waits for the queue to fill.
                Poll::Pending => return,
            }
        }
    }

    /// Registers a consumed message and adds it to the group.
    fn take(&self, message: KafkaResult<BorrowedMessage<'_>>, group: &mut Group) {
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "kafka consumer error");
                return;
            }
        };
        let (topic, input) = self.inputs.find(message.topic());
        let ack = self
            .tracker
            .register(topic.clone(), message.partition(), message.offset());
        let Some(input) = input else {
            // The broker's regex matched a topic that Rust's does not; keep going.
            tracing::error!(%topic, "a subscribed topic matches no input; skipping its message");
            ack.done();
            return;
        };
        self.metrics
            .messages_consumed
            .get_or_create(&Metrics::format(input.format.name()))
            .inc();
        group.push(
            &self.config,
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
                source_format: None,
                precision: input.precision(),
                ack,
            },
        );
    }

    /// Runs a group on a blocking thread, which gives the permit back when done.
    fn dispatch(&self, messages: Vec<Consumed>, permit: OwnedSemaphorePermit) {
        if messages.is_empty() {
            return;
        }
        let (pipeline, status) = (self.pipeline.clone(), self.status.clone());
        tokio::task::spawn_blocking(move || {
            let now_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_nanos() as i64;
            if let Err(panic) = pipeline.process(messages, now_ns) {
                status.worker_panicked(panic);
            }
            drop(permit);
        });
    }
}

/// Whether the assigned partitions are paused, and why; and since when the
/// consumer loop has had to wait.
#[derive(Default)]
struct Pause {
    paused: Option<Wait>,
    waiting_since: Option<Instant>,
}

impl Pause {
    fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    /// Pauses or resumes as `wait` says: at once for the dead-letter queue, after
    /// [`PAUSE_AFTER`] for workers. Returns when to look again if a pause is due
    /// later.
    /// `before_pausing` takes what the consumer holds ready.
    fn follow(
        &mut self,
        wait: Option<Wait>,
        consumer: &BoulderConsumer,
        metrics: &Metrics,
        before_pausing: impl FnOnce(),
    ) -> Option<Instant> {
        let Some(why) = wait else {
            self.waiting_since = None;
            self.resume(consumer, metrics);
            return None;
        };
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let due = why == Wait::DeadLetterQueue || since.elapsed() >= PAUSE_AFTER;
        if due && !self.is_paused() {
            before_pausing();
            self.pause(consumer, why, metrics);
        }
        (!self.is_paused()).then_some(since + PAUSE_AFTER)
    }

    fn pause(&mut self, consumer: &BoulderConsumer, why: Wait, metrics: &Metrics) {
        if self.paused.replace(why).is_some() {
            return;
        }
        self.apply(consumer);
        metrics.consumer_paused.set(1);
        tracing::warn!(
            "consumption paused {}; polling on, so that the group can rebalance",
            why.reason()
        );
    }

    /// Pauses every partition assigned now (again, after a rebalance).
    fn apply(&self, consumer: &BoulderConsumer) {
        match consumer.assignment() {
            Ok(assigned) => {
                if let Err(e) = consumer.pause(&assigned) {
                    tracing::warn!(error = %e, "cannot pause the assigned partitions");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the assignment to pause it"),
        }
    }

    fn resume(&mut self, consumer: &BoulderConsumer, metrics: &Metrics) {
        let Some(why) = self.paused.take() else {
            return;
        };
        match consumer.assignment() {
            Ok(assigned) => {
                if let Err(e) = consumer.resume(&assigned) {
                    tracing::warn!(error = %e, "cannot resume the assigned partitions");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the assignment to resume it"),
        }
        metrics.consumer_paused.set(0);
        match why {
            Wait::DeadLetterQueue => {
                tracing::info!("consumption resumed: the dead-letter queue is writable")
            }
            Wait::Workers => tracing::info!("consumption resumed: a worker is free"),
        }
    }
}

/// A waker that only notes that it was woken.
#[derive(Default)]
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The messages that will be processed together.
#[derive(Default)]
struct Group {
    messages: Vec<Consumed>,
    // Their payload bytes.
    bytes: u64,
    // When the group goes out even if not full: `linger` after its first message.
    deadline: Option<Instant>,
    // The deadline has passed.
    lingered: bool,
}

impl Group {
    fn push(&mut self, config: &PipelineConfig, message: Consumed) {
        self.bytes += message.payload.len() as u64;
        self.messages.push(message);
        self.deadline
            .get_or_insert_with(|| Instant::now() + config.linger);
    }

    /// Full, or lingered long enough.
    fn is_due(&self, config: &PipelineConfig) -> bool {
        !self.messages.is_empty()
            && (self.lingered
                || self.messages.len() >= config.batch_messages
                || self.bytes >= config.batch_bytes.as_u64())
    }

    /// Drops the messages whose partitions were revoked since they were consumed
    /// (their next owner reads them from the committed offset: processing them
    /// here would only write them twice); returns how many.
    fn drop_stale(&mut self) -> usize {
        let before = self.messages.len();
        self.messages.retain(|m| m.ack.is_current());
        self.bytes = self.messages.iter().map(|m| m.payload.len() as u64).sum();
        if self.messages.is_empty() {
            // Its linger deadline goes too: it would fire, with nothing to send,
            // at once and for ever, ahead of the consumer.
            self.take();
        }
        before - self.messages.len()
    }

    /// The messages, leaving the group empty.
    fn take(&mut self) -> Vec<Consumed> {
        (self.bytes, self.deadline, self.lingered) = (0, None, false);
        std::mem::take(&mut self.messages)
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Precision;
    use boulder_batch::Format;

    fn message(tracker: &Arc<Tracker>, topic: &str, partition: i32, offset: i64) -> Consumed {
        Consumed {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            payload: vec![b'x'; 10],
            timestamp_ns: None,
            format: Format::InfluxLine,
            source_format: None,
            precision: Precision::Ns,
            ack: tracker.register(topic.into(), partition, offset),
        }
    }

    #[tokio::test]
    async fn a_revocation_drops_the_messages_read_before_it_and_a_group_left_empty_waits_no_more() {
        let tracker = Tracker::new(Box::new(|_, _, _| {}));
        let config = PipelineConfig::default();
        let mut group = Group::default();
        group.push(&config, message(&tracker, "t", 0, 5));
        group.push(&config, message(&tracker, "t", 1, 7));
        tracker.forget("t", 0);
        // Partition 0 assigned again, and read again from where it was committed.
        group.push(&config, message(&tracker, "t", 0, 5));
        assert_eq!(group.drop_stale(), 1);
        let left: Vec<_> = group
            .messages
            .iter()
            .map(|m| (m.partition, m.offset))
            .collect();
        assert_eq!(left, [(1, 7), (0, 5)]);
        assert_eq!(group.bytes, 20);
        group.lingered = true;
        assert!(group.is_due(&config));
        tracker.forget("t", 0);
        tracker.forget("t", 1);
        assert_eq!(group.drop_stale(), 2);
        assert!(
            group.deadline.is_none() && !group.lingered,
            "nothing left to wait for"
        );
        assert!(!group.is_due(&config));
    }
}
