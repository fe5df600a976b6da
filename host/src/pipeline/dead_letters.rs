//! What the pipeline does not write: points a stage rejected, the points of a
//! failed call, a quarantined tenant's points, and the messages of a group whose
//! processing panicked. Dead letters go one record per message (and reason), each
//! holding that message's ack; drops are only counted.

use super::{Consumed, Pipeline, Tenant};
use crate::dlq::{DeadLetter, Stage};
use crate::encode::line_protocol;
use crate::runtime::{stage::cut, Rejected, StageError};
use boulder_batch::Batch;
use std::collections::BTreeMap;

impl Pipeline {
    /// Dead-letters the points a stage dead-lettered, one record per message and
    /// reason; drops are only counted.
    pub(super) fn rejected(
        &self,
        messages: &[Consumed],
        rejected: &[Rejected],
        stage: Stage,
        tenant: Option<&str>,
    ) {
        let mut groups: BTreeMap<(u32, &str, &str), Vec<&str>> = BTreeMap::new();
        let mut drops: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for r in rejected {
            if r.dead_letter {
                groups
                    .entry((r.origin, r.reason.as_str(), r.stage.component.as_str()))
                    .or_default()
                    .push(&r.line);
            } else {
                *drops
                    .entry((r.stage.component.as_str(), r.reason.as_str()))
                    .or_default() += 1;
            }
        }
        for ((component, reason), n) in drops {
            self.metrics
                .count_dropped(tenant.unwrap_or(""), component, reason, n);
        }
        self.count_dead(stage, tenant, groups.values().map(Vec::len).sum());
        for ((origin, reason, component), lines) in groups {
            let m = &messages[origin as usize];
            let mut letter = m.dead_letter(stage, "boulder.rejected", reason, join_lines(&lines));
            letter.tenant = tenant.map(str::to_owned);
            letter.component = Some(component.to_owned());
            self.send(letter);
        }
    }

    /// Dead-letters the `points` of `batch` that a failed call held, one record
    /// per message.
    pub(super) fn failed(
        &self,
        messages: &[Consumed],
        batch: &Batch,
        points: &[usize],
        stage: Stage,
        error: &StageError,
    ) {
        let who = if error.failure.is_host() {
            "the host"
        } else {
            "a guest"
        };
        tracing::warn!(stage = %error.stage, reason = error.failure.code(), points = points.len(), error = %error, "a call failed in {who}; dead-lettering its points");
        let origin = (
            error.stage.tenant.as_deref(),
            error.stage.component.as_str(),
        );
        self.dead_letter_batch(
            messages,
            batch,
            points.iter().copied(),
            stage,
            &error.failure.class(),
            &error.to_string(),
            origin,
        );
    }

    /// Dead-letters a quarantined tenant's batch without running its chain.
    pub(super) fn quarantined(&self, messages: &[Consumed], tenant: &Tenant, batch: &Batch) {
        let reason = format!(
            "tenant '{}' is quarantined after {} failed batches in a row",
            tenant.name(),
            tenant.quarantine_after
        );
        let origin = (Some(tenant.name()), "");
        self.dead_letter_batch(
            messages,
            batch,
            0..batch.len(),
            Stage::Transform,
            "boulder.quarantined",
            &reason,
            origin,
        );
    }

    /// Dead-letters `points` of a batch, one record per message.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dead_letter_batch(
        &self,
        messages: &[Consumed],
        batch: &Batch,
        points: impl IntoIterator<Item = usize>,
        stage: Stage,
        class: &str,
        reason: &str,
        (tenant, component): (Option<&str>, &str),
    ) {
        let mut per_message: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for i in points {
            per_message
                .entry(batch.points[i].origin)
                .or_default()
                .push(line_protocol::point_to_line(batch, i));
        }
        self.count_dead(stage, tenant, per_message.values().map(Vec::len).sum());
        for (origin, lines) in per_message {
            let m = &messages[origin as usize];
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            let mut letter = m.dead_letter(stage, class, reason, join_lines(&lines));
            letter.tenant = tenant.map(str::to_owned);
            letter.component = (!component.is_empty()).then(|| component.to_owned());
            self.send(letter);
        }
    }

    /// Dead-letters every message of a group whose processing panicked, as its
    /// original bytes, each releasing its message's ack once written. Work the
    /// group handed off before the panic goes on, so some points may be written
    /// and replayed both (duplicates, never a loss).
    pub(super) fn panicked(&self, messages: Vec<Consumed>, panic: &str) {
        self.metrics.worker_panics.inc();
        tracing::error!(messages = messages.len(), panic, "processing a group of messages panicked: dead-lettering its messages (class boulder.internal)");
        self.count_dead(Stage::Internal, None, messages.len());
        let reason = format!("Boulder panicked while processing this message's group: {panic}");
        for m in messages {
            let mut letter =
                DeadLetter::new(Stage::Internal, "boulder.internal", &reason, m.payload);
            letter.key = m.key;
            letter.format = Some(m.source_format.unwrap_or(m.format));
            letter.precision = Some(m.precision);
            letter.acks = vec![m.ack];
            self.send(letter);
        }
    }
}

/// The message of a caught panic, cut to a bounded length.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let message = match payload.downcast_ref::<&str>() {
        Some(s) => (*s).to_owned(),
        None => payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "a panic without a message".to_owned()),
    };
    cut(message)
}

fn join_lines(lines: &[&str]) -> Vec<u8> {
    let mut out = lines.join("\n").into_bytes();
    out.push(b'\n');
    out
}
