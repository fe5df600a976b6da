//! Writers: one task per tenant output that batches line protocol by point count
//! and age, and writes it over HTTP with retries.
//!
//! - 2xx: the batch's acks are done.
//! - connection errors, timeouts, 429 and 5xx: retried with exponential backoff and
//!   jitter (or after the sink's `Retry-After`), for up to `max_retry_time`; the
//!   writer does not take new chunks meanwhile, so a stalled sink slows
//!   consumption instead of filling memory;
//! - 413: the batch is split in two at a line boundary and each half written;
//! - a status of the output's `hold_on` (401, 403, 404 by default: the output is
//!   misconfigured, its points are not at fault): the output holds, retrying with
//!   backoff for as long as it takes, while metrics, `/ready` and the log say so;
//! - any other status: the batch is split in two and each half tried again, so
//!   that only the lines the sink refuses are dead-lettered, with the status and
//!   the start of the response body (bounded: see [`MAX_REFUSED_SPLITS`]);
//! - retries exhausted: the batch goes to the dead-letter queue with the reason.

pub mod gzip;
pub mod http;

use crate::ack::Ack;
use crate::config::OutputConfig;
use crate::dlq::{DeadLetter, Dlq, Stage};
use crate::metrics::{Metrics, OutputLabels};
use http::{Endpoint, HttpClient, Outcome};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Requests of a refused batch's parts that may be refused before the rest is
/// dead-lettered as it stands: one bad line is found among 65,536, and a batch
/// that the sink refuses whole costs this many more requests, not one per line.
pub const MAX_REFUSED_SPLITS: usize = 16;
/// The longest wait between two tries of a write.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The process's budget of points in flight between the pipeline and the outputs.
#[derive(Clone)]
pub struct Budget {
    points: Arc<tokio::sync::Semaphore>,
    max: u32,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

/// Points of the budget held by a chunk until it is written or dead-lettered.
pub struct InFlight {
    _permit: tokio::sync::OwnedSemaphorePermit,
    points: u32,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec_by(i64::from(self.points));
    }
}

impl Budget {
    /// A budget of `max` points, reported in `gauge`.
    pub fn new(max: u32, gauge: prometheus_client::metrics::gauge::Gauge) -> Budget {
        Budget {
            points: Arc::new(tokio::sync::Semaphore::new(max as usize)),
            max,
            gauge,
        }
    }

    /// Takes `points` from the budget, waiting (on a blocking thread) until that
    /// many are free. A chunk larger than the whole budget takes all of it.
    pub fn blocking_take(&self, points: usize) -> InFlight {
        let points = u32::try_from(points).unwrap_or(u32::MAX).clamp(1, self.max);
        let permit = tokio::runtime::Handle::current()
            .block_on(self.points.clone().acquire_many_owned(points))
            .expect("the budget is never closed");
        self.gauge.inc_by(i64::from(points));
        InFlight {
            _permit: permit,
            points,
            gauge: self.gauge.clone(),
        }
    }
}

/// Line protocol for one output, and the acks of the messages its points came from.
pub struct Chunk {
    /// Whole lines, each ending in `\n`.
    pub lines: Vec<u8>,
    /// How many lines.
    pub points: usize,
    /// One token per source message.
    pub acks: Vec<Ack>,
    /// Its share of the in-flight budget, released when it is written or
    /// dead-lettered.
    pub in_flight: InFlight,
}

/// The sending side of an output's writer.
#[derive(Clone)]
pub struct OutputHandle {
    /// The output's name.
    pub name: Arc<str>,
    // Unbounded: the in-flight budget bounds what chunks can hold.
    tx: mpsc::UnboundedSender<Chunk>,
}

impl OutputHandle {
    /// Queues a chunk (its points already count against the budget). Returns the
    /// chunk if the writer has stopped.
    pub fn send(&self, chunk: Chunk) -> Result<(), Chunk> {
        self.tx.send(chunk).map_err(|e| e.0)
    }
}

/// Starts the writer of one output. It runs until every handle is dropped, then
/// flushes what it holds.
pub fn spawn(
    tenant: &str,
    name: String,
    config: &OutputConfig,
    endpoint: Endpoint,
    client: HttpClient,
    dlq: Arc<Dlq>,
    metrics: Arc<Metrics>,
) -> (OutputHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let name: Arc<str> = name.into();
    let writer = Writer {
        labels: Metrics::output(tenant, &name),
        metrics,
        tenant: tenant.to_owned(),
        name: name.clone(),
        endpoint,
        client,
        dlq,
        batch_points: config.batch_points,
        batch_age: config.batch_age,
        max_retry_time: config.max_retry_time,
    };
    let task = crate::fatal::spawn("output writer", writer.run(rx));
    (OutputHandle { name, tx }, task)
}

struct Writer {
    labels: OutputLabels,
    metrics: Arc<Metrics>,
    tenant: String,
    name: Arc<str>,
    endpoint: Endpoint,
    client: HttpClient,
    dlq: Arc<Dlq>,
    batch_points: usize,
    batch_age: Duration,
    max_retry_time: Duration,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    points: usize,
    acks: Vec<Ack>,
    in_flight: Vec<InFlight>,
    since: Option<Instant>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Chunk>) {
        let mut pending = Pending::default();
        loop {
            let deadline = pending.since.map(|s| s + self.batch_age);
            let chunk = tokio::select! {
                chunk = rx.recv() => chunk,
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.flush(&mut pending).await;
                    continue;
                }
            };
            let Some(chunk) = chunk else {
                self.flush(&mut pending).await;
                return;
            };
            pending.since.get_or_insert_with(Instant::now);
            pending.lines.extend_from_slice(&chunk.lines);
            pending.points += chunk.points;
            pending.acks.extend(chunk.acks);
            pending.in_flight.push(chunk.in_flight);
            if pending.points >= self.batch_points {
                self.flush(&mut pending).await;
            }
        }
    }

    async fn flush(&self, pending: &mut Pending) {
        // `_in_flight` returns the points to the budget when this flush ends.
        let Pending {
            lines,
            points,
            acks,
            in_flight: _in_flight,
            ..
        } = std::mem::take(pending);
        if points == 0 {
            for ack in acks {
                ack.done();
            }
            return;
        }
        // Each part with its number of lines: the whole batch holds `points`; only a
        // part split after a 413 or a refusal needs its lines counted.
        let mut parts = vec![(lines, points)];
        let mut refusals_left = MAX_REFUSED_SPLITS;
        while let Some((part, lines)) = parts.pop() {
            match self.write_with_retries(&part).await {
                Outcome::Written => {
                    self.metrics
                        .points_written
                        .get_or_create(&self.labels)
                        .inc_by(lines as u64);
                }
                Outcome::TooLarge => match split_lines(&part) {
                    Some(halves) => {
                        tracing::info!(output = %self.name, bytes = part.len(), "sink answered 413; splitting the batch");
                        push_halves(&mut parts, halves, lines);
                    }
                    None => {
                        self.dead_letter(
                            part,
                            &acks,
                            Some(413),
                            "the sink refused a single line as too large (413)",
                        )
                        .await
                    }
                },
                Outcome::Refused { status, body } => {
                    let halves = split_lines(&part).filter(|_| refusals_left > 0);
                    if let Some(halves) = halves {
                        // Which lines does it refuse? Each half on its own.
                        refusals_left -= 1;
                        tracing::info!(output = %self.name, status, lines, "the sink refused a batch; splitting it to find the lines it refuses");
                        push_halves(&mut parts, halves, lines);
                        continue;
                    }
                    let reason = format!(
                        "the sink refused the batch: {}: {body}",
                        status_text(status)
                    );
                    self.dead_letter(part, &acks, Some(status), &reason).await
                }
                Outcome::Held { .. } => unreachable!("write_with_retries retries held writes"),
                Outcome::Retry { reason, status, .. } => {
                    let reason = format!(
                        "gave up after retrying for {}: {reason}",
                        humantime::format_duration(self.max_retry_time)
                    );
                    self.dead_letter(part, &acks, status, &reason).await
                }
            }
        }
        tracing::debug!(output = %self.name, points, "written");
        for ack in acks {
            ack.done();
        }
    }

    /// Writes `lines`, retrying what may succeed later; returns the final outcome
    /// (a `Retry` means the retry time ran out; never `Held`: a held output
    /// retries until the sink answers something else).
    async fn write_with_retries(&self, lines: &[u8]) -> Outcome {
        let body = self.endpoint.body(lines);
        let started = Instant::now();
        let mut backoff = crate::retry::backoff(MAX_BACKOFF);
        let mut attempt = 0u32;
        let mut held = false;
        let outcome = loop {
            let sent = Instant::now();
            let outcome = self.endpoint.send(&self.client, body.clone()).await;
            let (reason, retry_after, timed) = match &outcome {
                Outcome::Retry {
                    reason,
                    retry_after,
                    ..
                } => (reason.clone(), *retry_after, true),
                Outcome::Held { status, body } => {
                    let reason = format!("the sink answers {}: {body}", status_text(*status));
                    if !held {
                        held = true;
                        let why = format!(
                            "{reason}; its points wait (check its url, org, bucket and token)"
                        );
                        self.metrics.set_held(&self.labels, Some(why));
                        tracing::error!(output = %self.name, tenant = %self.tenant, status, "output held: the sink refuses the output itself, not its points; retrying until it takes them");
                    }
                    (reason, None, false)
                }
                _ => {
                    if outcome == Outcome::Written {
                        let seconds = sent.elapsed().as_secs_f64();
                        self.metrics
                            .write_seconds
                            .get_or_create(&self.labels)
                            .observe(seconds);
                    }
                    break outcome;
                }
            };
            if attempt == 0 {
                self.metrics.outputs_stalled.inc();
            }
            self.metrics.write_retries.get_or_create(&self.labels).inc();
            attempt += 1;
            let wait = backoff
                .next()
                .unwrap_or(MAX_BACKOFF)
                .max(retry_after.unwrap_or_default());
            if timed && started.elapsed() + wait > self.max_retry_time {
                break outcome;
            }
            tracing::warn!(output = %self.name, tenant = %self.tenant, attempt, retry_in = ?wait, error = %reason, "write failed; retrying");
            tokio::time::sleep(wait).await;
        };
        if held {
            self.metrics.set_held(&self.labels, None);
            tracing::info!(output = %self.name, tenant = %self.tenant, "output no longer held");
        }
        if attempt > 0 {
            self.metrics.outputs_stalled.dec();
        }
        outcome
    }

    async fn dead_letter(&self, lines: Vec<u8>, acks: &[Ack], status: Option<u16>, reason: &str) {
        tracing::error!(output = %self.name, tenant = %self.tenant, status, bytes = lines.len(), reason, "dead-lettering a batch the sink did not take");
        let mut letter = DeadLetter::new(Stage::Write, "boulder.write", reason, lines);
        letter.tenant = Some(self.tenant.clone());
        letter.output = Some(self.name.to_string());
        letter.http_status = status;
        letter.acks = acks.iter().map(Ack::split).collect();
        self.dlq.send(letter).await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A status as its code and reason phrase, e.g. `401 Unauthorized`.
fn status_text(status: u16) -> String {
    hyper::StatusCode::from_u16(status).map_or(status.to_string(), |s| s.to_string())
}

/// Queues the two halves of a part of `lines` lines, the first to be written first.
fn push_halves(parts: &mut Vec<(Vec<u8>, usize)>, (a, b): (&[u8], &[u8]), lines: usize) {
    let in_a = a.iter().filter(|&&c| c == b'\n').count();
    parts.push((b.to_vec(), lines - in_a));
    parts.push((a.to_vec(), in_a));
}

/// Splits line protocol in two at the line boundary nearest the middle; `None` for
/// a single line.
fn split_lines(lines: &[u8]) -> Option<(&[u8], &[u8])> {
    let middle = lines.len() / 2;
    let after = lines[middle..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| middle + i + 1);
    let before = lines[..middle]
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1);
    let cut = match (before, after) {
        (_, Some(a)) if a < lines.len() => a,
        (Some(b), _) if b > 0 => b,
        _ => return None,
    };
    Some(lines.split_at(cut))
}

#[cfg(test)]
mod tests {
    use super::split_lines;

    #[test]
    fn splits_at_a_line_boundary() {
        assert_eq!(
            split_lines(b"a 1\nb 2\nc 3\n"),
            Some((&b"a 1\nb 2\n"[..], &b"c 3\n"[..]))
        );
        assert_eq!(
            split_lines(b"a 1\nbbbbbbbbbbbb 2\n"),
            Some((&b"a 1\n"[..], &b"bbbbbbbbbbbb 2\n"[..]))
        );
        assert_eq!(split_lines(b"only one line\n"), None);
    }
}
