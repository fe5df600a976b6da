//! One group of consumed messages, all the way through: decode, route, each
//! tenant's chain, line protocol, and hand-off to the tenants' output writers.
//! Everything that is not kept goes to the dead-letter queue or is counted as a
//! drop; every hand-off carries the acks of the messages its points came from.
//!
//! Guests see a group in chunks of at most `pipeline.max_points_per_call` points,
//! and a call that fails is narrowed down to the messages it failed on
//! ([`narrow`]), so one message's size or content cannot take down another's
//! points. What is not written is dead-lettered ([`dead_letters`]).
//!
//! [`Pipeline::process`] is CPU-bound (decoding and guests): it runs on a blocking
//! thread, never on the async reactor. A panic in it is caught per group.

mod dead_letters;
pub mod limits;
pub mod narrow;
mod routing;

use crate::ack::Ack;
use crate::config::{OverLimit, PipelineConfig};
use crate::decode::{self, Precision};
use crate::dlq::{DeadLetter, Stage};
use crate::encode::line_protocol;
use crate::metrics::{LimitLabels, Metrics};
use crate::runtime::{ChainOutput, Routed, Router, StageError};
use crate::sink::{Budget, Chunk, OutputHandle};
use boulder_batch::{Batch, Format};
use dead_letters::panic_message;
use limits::{Limit, TenantLimits};
pub use routing::{Routing, Tenant};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::sync::mpsc;

/// A consumed Kafka message and how to decode it.
pub struct Consumed {
    /// Source topic.
    pub topic: Arc<str>,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// The message value.
    pub payload: Vec<u8>,
    /// The message timestamp, for points that carry none.
    pub timestamp_ns: Option<i64>,
    /// How the payload is encoded: the input's format.
    pub format: Format,
    /// The format its points came in, when the payload is not in it: a dead
    /// letter replayed as line protocol, whose points guests must see as they
    /// first did. `None`: `format`.
    pub source_format: Option<Format>,
    /// The input's timestamp unit.
    pub precision: Precision,
    /// Released when the message's processing is finished.
    pub ack: Ack,
}

impl Consumed {
    /// The format of this message's points.
    pub fn points_format(&self) -> Format {
        self.source_format.unwrap_or(self.format)
    }

    /// A dead letter of (some of) this message, carrying its key, the context its
    /// points were seen in, and a share of its ack.
    fn dead_letter(
        &self,
        stage: Stage,
        class: &str,
        reason: impl Into<String>,
        value: Vec<u8>,
    ) -> DeadLetter {
        let mut letter = DeadLetter::new(stage, class, reason, value);
        letter.key = self.key.clone();
        letter.format = Some(self.points_format());
        letter.precision = Some(self.precision);
        letter.acks = vec![self.ack.split()];
        letter
    }
}

/// Where points enter the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// Decode, route, the tenant's chain, its outputs: consumed messages.
    Start,
    /// Decode, this tenant's chain, its outputs: points that failed in the chain.
    Chain(&'a str),
    /// Decode, this tenant's outputs: points that were transformed already.
    Outputs(&'a str),
}

/// Everything between the consumer and the writers.
pub struct Pipeline {
    routing: RwLock<Arc<Routing>>,
    /// Held while a new routing or chain is prepared and put in place, so that
    /// two changes (a replaced file, a reloaded config) never race.
    changing: Mutex<()>,
    dead_letters: mpsc::Sender<DeadLetter>,
    metrics: Arc<Metrics>,
    budget: Budget,
    max_points_per_call: usize,
}

impl Pipeline {
    /// A pipeline through `routing`.
    pub fn new(
        routing: Routing,
        dead_letters: mpsc::Sender<DeadLetter>,
        metrics: Arc<Metrics>,
        budget: Budget,
        config: &PipelineConfig,
    ) -> Pipeline {
        routing.show(&metrics, true);
        routing.create_series(&metrics);
        Pipeline {
            routing: RwLock::new(Arc::new(routing)),
            changing: Mutex::new(()),
            dead_letters,
            metrics,
            budget,
            max_points_per_call: config.max_points_per_call,
        }
    }

    /// The routing that groups starting now run through.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.read().expect("poisoned").clone()
    }

    /// The metrics the pipeline counts in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs `change` with the current routing while no other change runs; a
    /// routing it returns is put in place for the groups that start from then
    /// on. The old one is dropped when the last group holding it finishes, and
    /// with it the writers of outputs only it had, once they wrote what they hold.
    pub fn change<T>(&self, change: impl FnOnce(&Arc<Routing>) -> (Option<Routing>, T)) -> T {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.routing();
        let (new, result) = change(&current);
        if let Some(new) = new {
            current.show(&self.metrics, false);
            new.show(&self.metrics, true);
            new.create_series(&self.metrics);
            *self.routing.write().expect("poisoned") = Arc::new(new);
        }
        result
    }

    /// Processes a group of messages. Blocks while writers or the dead-letter queue
    /// are behind. A panic is caught: the group's messages are dead-lettered
    /// (class `boulder.internal`) and the panic's message is returned.
    pub fn process(&self, messages: Vec<Consumed>, now_ns: i64) -> Result<(), String> {
        self.process_from(messages, now_ns, Entry::Start)
    }

    /// Processes a group of messages from `entry` on (replays start later than the
    /// router for points that already passed it).
    pub fn process_from(
        &self,
        messages: Vec<Consumed>,
        now_ns: i64,
        entry: Entry<'_>,
    ) -> Result<(), String> {
        let started = Instant::now();
        // Unwind safety: a panic leaves at worst a poisoned lock or a half-counted
        // metric behind, and says so in `/health`; the messages themselves are
        // dead-lettered below, and work already handed off holds its own acks.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            self.run_group(&messages, now_ns, entry)
        }));
        let result = match outcome {
            Ok(()) => {
                for m in messages {
                    m.ack.done();
                }
                Ok(())
            }
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                self.panicked(messages, &message);
                Err(message)
            }
        };
        self.metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Decodes a group and runs it, in chunks of at most `max_points_per_call`
    /// points, through the router and the chains to the outputs.
    fn run_group(&self, messages: &[Consumed], now_ns: i64, entry: Entry<'_>) {
        #[cfg(feature = "fault-injection")]
        crate::faults::panic_if_asked(messages.iter().map(|m| &m.payload[..]));
        // One routing for the whole group: a change while it runs applies to
        // later groups.
        let routing = self.routing();
        let batch = self.decode(messages, now_ns);
        if batch.len() <= self.max_points_per_call {
            return self.run_chunk(&routing, messages, batch, entry);
        }
        for chunk in narrow::chunks(&batch, self.max_points_per_call) {
            self.run_chunk(&routing, messages, chunk, entry);
        }
    }

    /// One chunk of a group, from `entry` on.
    fn run_chunk(&self, routing: &Routing, messages: &[Consumed], batch: Batch, entry: Entry<'_>) {
        let routed: Vec<(&Tenant, Routed)> = match (entry, &routing.router) {
            (Entry::Chain(name) | Entry::Outputs(name), _) => match routing.tenant(name) {
                Some(tenant) => vec![(tenant, Routed::Batch(batch))],
                None => {
                    let reason = format!("no tenant {name:?} in this config");
                    self.dead_letter_batch(
                        messages,
                        &batch,
                        0..batch.len(),
                        Stage::Route,
                        "boulder.replay",
                        &reason,
                        (Some(name), ""),
                    );
                    Vec::new()
                }
            },
            (Entry::Start, None) => vec![(&routing.tenants[0], Routed::Batch(batch))],
            (Entry::Start, Some(router)) => self.route(routing, messages, router, &batch),
        };
        for (tenant, routed) in routed {
            self.run_tenant(messages, tenant, routed, entry);
        }
    }

    /// Routes a chunk: each tenant's points. A failed call is narrowed down to
    /// the messages it failed on, which are dead-lettered at stage `route`.
    fn route<'r>(
        &self,
        routing: &'r Routing,
        messages: &[Consumed],
        router: &Router,
        batch: &Batch,
    ) -> Vec<(&'r Tenant, Routed)> {
        let outputs = match router.route(batch) {
            Ok(output) => vec![output],
            Err(error) => {
                let narrowed = narrow::narrow(batch, error, |part| router.route(part));
                for (points, error) in &narrowed.failed {
                    self.failed(messages, batch, points, Stage::Route, error);
                }
                narrowed.passed
            }
        };
        let mut routed = Vec::new();
        for output in outputs {
            self.rejected(messages, &output.rejected, Stage::Route, None);
            routed.extend(
                output
                    .by_tenant
                    .into_iter()
                    .filter_map(|(name, b)| Some((&**routing.tenant(&name)?, b))),
            );
        }
        routed
    }

    /// A tenant's points of a chunk through its chain (unless they are past it)
    /// to its outputs.
    fn run_tenant(&self, messages: &[Consumed], tenant: &Tenant, routed: Routed, entry: Entry<'_>) {
        let name = Metrics::tenant(tenant.name());
        self.metrics
            .points_in
            .get_or_create(&name)
            .inc_by(routed.len() as u64);
        if let Entry::Outputs(_) = entry {
            return self.hand_off(messages, tenant, &routed.batch());
        }
        // Points past the chain (replayed from `transform`) were admitted once.
        let routed = match (&tenant.limits, entry) {
            (Some(limits), Entry::Start) => match self.limit(messages, tenant, limits, routed) {
                Some(routed) => routed,
                None => return,
            },
            _ => routed,
        };
        if tenant.quarantined() {
            return self.quarantined(messages, tenant, &routed.batch());
        }
        let chain = tenant.chain();
        let timed = |run: &dyn Fn() -> Result<ChainOutput, StageError>| {
            let started = Instant::now();
            let result = run();
            self.metrics
                .guest_seconds
                .get_or_create(&name)
                .observe(started.elapsed().as_secs_f64());
            result
        };
        let error = match timed(&|| chain.run_routed(&routed)) {
            Ok(output) => {
                tenant.failures_in_a_row.store(0, Ordering::Relaxed);
                return self.transformed(messages, tenant, output);
            }
            Err(error) => error,
        };
        let batch = routed.batch();
        let narrowed = narrow::narrow(&batch, error, |part| timed(&|| chain.run(part)));
        if narrowed.passed.is_empty() {
            // Nothing of it passed: the chain failed, not just some messages.
            if let Some((_, error)) = narrowed.failed.first() {
                self.tenant_failed(tenant, error);
            }
        } else {
            tenant.failures_in_a_row.store(0, Ordering::Relaxed);
        }
        for output in narrowed.passed {
            self.transformed(messages, tenant, output);
        }
        for (points, error) in &narrowed.failed {
            self.failed(messages, &batch, points, Stage::Transform, error);
        }
    }

    /// The points of `routed` within the tenant's limits, if any; those over a
    /// limit are dead-lettered (stage `limit`) or dropped, and counted.
    fn limit(
        &self,
        messages: &[Consumed],
        tenant: &Tenant,
        limits: &TenantLimits,
        routed: Routed,
    ) -> Option<Routed> {
        let now = Instant::now();
        if limits.admit_all(routed.len(), now) {
            return Some(routed);
        }
        let batch = routed.batch();
        let over = limits.over(&batch, now);
        if let Some(active) = limits.active_series() {
            self.metrics
                .tenant_active_series
                .get_or_create(&Metrics::tenant(tenant.name()))
                .set(active as i64);
        }
        if over.is_empty() {
            drop(batch);
            return Some(routed);
        }
        for limit in [Limit::Rate, Limit::Series] {
            let points: Vec<usize> = over.iter().filter(|o| o.1 == limit).map(|o| o.0).collect();
            if points.is_empty() {
                continue;
            }
            let labels = LimitLabels {
                tenant: tenant.name().to_owned(),
                limit: limit.name().to_owned(),
            };
            let limited = self.metrics.points_limited.get_or_create(&labels);
            limited.inc_by(points.len() as u64);
            if limits.over_limit() == OverLimit::DeadLetter {
                self.dead_letter_batch(
                    messages,
                    &batch,
                    points,
                    Stage::Limit,
                    &format!("boulder.limit.{}", limit.name()),
                    &limits.reason(tenant.name(), limit),
                    (Some(tenant.name()), ""),
                );
            }
        }
        // `over` is in point order: the rest is kept.
        let mut over = over.iter().map(|o| o.0).peekable();
        let kept: Vec<usize> = (0..batch.len())
            .filter(|&i| over.next_if_eq(&i).is_none())
            .collect();
        (!kept.is_empty()).then(|| Routed::Batch(batch.select(&kept)))
    }

    /// What a tenant's chain made of its points: the rejected dead-lettered or
    /// counted, the rest handed to its outputs.
    fn transformed(&self, messages: &[Consumed], tenant: &Tenant, output: ChainOutput) {
        self.rejected(
            messages,
            &output.rejected,
            Stage::Transform,
            Some(tenant.name()),
        );
        self.hand_off(messages, tenant, &output.batch);
    }

    /// Counts a failed call of a tenant's chain towards its quarantine, unless the
    /// host failed it.
    fn tenant_failed(&self, tenant: &Tenant, error: &StageError) {
        if error.failure.is_host() {
            return;
        }
        let failures = tenant.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if tenant.quarantine_after > 0 && failures == tenant.quarantine_after {
            self.metrics
                .quarantined
                .get_or_create(&Metrics::tenant(tenant.name()))
                .set(1);
            tracing::error!(tenant = tenant.name(), failures, error = %error, "tenant quarantined: its points go to the dead-letter queue until its component is replaced");
        }
    }

    /// Decodes every message into one batch whose points' origins are message
    /// indices; what cannot be decoded is dead-lettered with its original bytes.
    fn decode(&self, messages: &[Consumed], now_ns: i64) -> Batch {
        // A point's strings are cut from its message's text (unescaping only
        // shortens them): with room for all of the messages' text, the arena is
        // hardly ever copied to grow (topic names are the rest).
        let text: usize = messages.iter().map(|m| m.payload.len()).sum();
        let mut batch = Batch::with_room(messages.len() * 100, text);
        for (i, m) in messages.iter().enumerate() {
            let source = batch.source(&m.topic, m.points_format());
            let first = batch.len();
            let timestamp = m.timestamp_ns.unwrap_or(now_ns);
            let errors = decode::decode(
                m.format,
                m.precision,
                &m.payload,
                timestamp,
                source,
                &mut batch,
            );
            for p in &mut batch.points[first..] {
                p.origin = i as u32;
            }
            self.metrics
                .points_decoded
                .get_or_create(&Metrics::format(m.format.name()))
                .inc_by((batch.len() - first) as u64);
            self.count_dead(Stage::Decode, None, errors.len());
            for e in errors {
                let reason = format!("{} message: {e}", m.format.name());
                let part = m.payload[e.bytes.clone()].to_vec();
                self.send(m.dead_letter(Stage::Decode, "boulder.decode", reason, part));
            }
        }
        batch
    }

    /// Encodes a tenant's kept points once and queues them to each of its outputs.
    fn hand_off(&self, messages: &[Consumed], tenant: &Tenant, batch: &Batch) {
        // Room for the text without growing (which copies it): the strings, and
        // per point a timestamp and separators, per field a number.
        let room =
            batch.arena.len() + batch.len() * 24 + batch.tags.len() * 2 + batch.fields.len() * 26;
        let mut lines = Vec::with_capacity(room);
        let unwritable = line_protocol::write_batch(batch, &mut lines);
        self.count_dead(Stage::Write, Some(tenant.name()), unwritable.len());
        for (i, why) in &unwritable {
            let m = &messages[batch.points[*i].origin as usize];
            let line = line_protocol::point_to_line(batch, *i);
            let mut letter = m.dead_letter(
                Stage::Write,
                "boulder.encode",
                why.reason(),
                line.into_bytes(),
            );
            letter.tenant = Some(tenant.name().to_owned());
            self.send(letter);
        }
        let points = batch.len() - unwritable.len();
        if points == 0 {
            return;
        }
        let mut origins: Vec<u32> = batch.points.iter().map(|p| p.origin).collect();
        origins.sort_unstable();
        origins.dedup();
        let send = |output: &OutputHandle, lines: Vec<u8>| {
            // Waiting here for budget is the backpressure: this worker, and so
            // consumption, pauses until outputs have written enough.
            let in_flight = self.budget.blocking_take(points);
            let chunk = Chunk {
                lines,
                points,
                acks: origins
                    .iter()
                    .map(|&o| messages[o as usize].ack.split())
                    .collect(),
                in_flight,
            };
            if let Err(chunk) = output.send(chunk) {
                // Only during shutdown: the acks are dropped undone, so these
                // messages are consumed again.
                tracing::error!(output = %output.name, points = chunk.points, "output writer has stopped; its points will be consumed again");
            }
        };
        // The last output takes the text itself; only the others need a copy. It
        // may wait in the writer's queue for as long as a sink is down, so it
        // gives back the room reserved for it (an in-place shrink).
        lines.shrink_to_fit();
        if let Some((last, others)) = tenant.outputs.split_last() {
            for output in others {
                send(output, lines.clone());
            }
            send(last, lines);
        }
    }

    fn count_dead(&self, stage: Stage, tenant: Option<&str>, points: usize) {
        if points > 0 {
            self.metrics
                .points_dead_lettered
                .get_or_create(&Metrics::stage(stage.name(), tenant))
                .inc_by(points as u64);
        }
    }

    fn send(&self, letter: DeadLetter) {
        if self.dead_letters.blocking_send(letter).is_err() {
            tracing::error!("dead-letter queue has stopped; the message will be consumed again");
        }
    }
}
