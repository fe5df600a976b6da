//! What Boulder counts, in Prometheus' text format at `/metrics`.
//!
//! Names follow `boulder_<noun>_<unit>_total`; labels have bounded cardinality:
//! tenants, outputs, stages and formats come from the config, and guests' drop
//! reasons are capped at [`MAX_REASONS`] distinct ones per tenant and component,
//! the rest counted under [`OTHER_REASON`] (a guest could otherwise add series
//! without end). Counting happens per batch, not per point.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

/// Distinct drop reasons counted under their own label, per tenant and component.
pub const MAX_REASONS: usize = 100;
/// The label under which drops with further reasons are counted.
pub const OTHER_REASON: &str = "other";

/// A tenant.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    /// The tenant's name.
    pub tenant: String,
}

/// A tenant's output.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct OutputLabels {
    /// The tenant's name.
    pub tenant: String,
    /// The output's name.
    pub output: String,
}

/// An input format.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormatLabel {
    /// `influx-line`, ...
    pub format: String,
}

/// Where and why points were dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// The tenant (empty for the router).
    pub tenant: String,
    /// The component that dropped them.
    pub component: String,
    /// The guest's reason.
    pub reason: String,
}

/// A pipeline stage, and the tenant when known.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `decode`, `route`, `transform` or `write`.
    pub stage: String,
    /// The tenant, or empty.
    pub tenant: String,
}

/// A component as it runs now: which stage of which tenant, and the content.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// The tenant (empty for the router).
    pub tenant: String,
    /// `router`, or the stage's position in the tenant's chain, from 1.
    pub stage: String,
    /// The component as the config names it.
    pub component: String,
    /// SHA-256 of the component file, hex; `native` for a built-in run natively.
    pub sha256: String,
}

/// A tenant's ingestion limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The tenant.
    pub tenant: String,
    /// `rate` or `series`.
    pub limit: String,
}

/// How an attempt ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `applied` or `refused`.
    pub result: String,
}

/// A topic partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: String,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Kafka messages consumed, by input format.
    pub messages_consumed: Family<FormatLabel, Counter>,
    /// Points decoded, by input format.
    pub points_decoded: Family<FormatLabel, Counter>,
    /// Points routed to a tenant (before its limits and its chain).
    pub points_in: Family<TenantLabel, Counter>,
    /// Points written to an output.
    pub points_written: Family<OutputLabels, Counter>,
    /// Points dropped on purpose by a guest, by reason.
    pub points_dropped: Family<DropLabels, Counter>,
    /// Points (or undecodable parts) sent to the dead-letter queue, by stage.
    pub points_dead_lettered: Family<StageLabels, Counter>,
    /// Dead-letter records written.
    pub dead_letters_written: Family<StageLabels, Counter>,
    /// Failed attempts to write a dead letter.
    pub dead_letter_errors: Counter,
    /// 1 while a dead letter cannot be written (consumption stalls behind it).
    pub dead_letter_queue_blocked: Gauge,
    /// Outputs currently retrying a failed write.
    pub outputs_stalled: Gauge,
    /// 1 while an output is held: its sink answers a status of its `hold_on`.
    pub output_held: Family<OutputLabels, Gauge>,
    /// Write attempts that failed and will be retried.
    pub write_retries: Family<OutputLabels, Counter>,
    /// Duration of successful writes.
    pub write_seconds: Family<OutputLabels, Histogram>,
    /// Duration of one group of messages through decode, route and chains.
    pub batch_seconds: Histogram,
    /// Time spent in a tenant's chain (guests), per batch.
    pub guest_seconds: Family<TenantLabel, Histogram>,
    /// Consumer lag per partition, from librdkafka's statistics.
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// 1 for a tenant that is quarantined.
    pub quarantined: Family<TenantLabel, Gauge>,
    /// 1 for each component that runs now (a swapped-out version's series is
    /// removed).
    pub component_info: Family<ComponentLabels, Gauge>,
    /// Changed component files that failed to load or `init` (the running
    /// version kept running), by tenant (empty for the router).
    pub component_load_failures: Family<TenantLabel, Counter>,
    /// Points over a tenant's ingestion limit (dead-lettered or dropped as its
    /// `limits.over_limit` says).
    pub points_limited: Family<LimitLabels, Counter>,
    /// Series a tenant with `limits.max_series` had active at its last batch.
    pub tenant_active_series: Family<TenantLabel, Gauge>,
    /// Config reloads (SIGHUP), applied or refused.
    pub config_reloads: Family<ResultLabel, Counter>,
    /// Points handed to outputs and not yet written or dead-lettered.
    pub points_in_flight: Gauge,
    /// Messages consumed and not yet written or dead-lettered.
    pub messages_in_flight: Gauge,
    /// 1 while the assigned partitions are paused (every worker busy, or the
    /// dead-letter queue blocked); the consumer polls on meanwhile.
    pub consumer_paused: Gauge,
    /// Groups of messages whose processing panicked (their messages were
    /// dead-lettered with class `boulder.internal`).
    pub worker_panics: Counter,
    /// The drop reasons given a label of their own, per (tenant, component).
    reasons: Mutex<HashMap<(String, String), HashSet<String>>>,
    /// Why each held output is held, for `/ready`.
    holds: Mutex<BTreeMap<OutputLabels, String>>,
}

fn seconds_histogram() -> Histogram {
    // 100 µs to ~26 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered under the `boulder_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("boulder");
        let m = Metrics {
            messages_consumed: Family::default(),
            points_decoded: Family::default(),
            points_in: Family::default(),
            points_written: Family::default(),
            points_dropped: Family::default(),
            points_dead_lettered: Family::default(),
            dead_letters_written: Family::default(),
            dead_letter_errors: Counter::default(),
            dead_letter_queue_blocked: Gauge::default(),
            outputs_stalled: Gauge::default(),
            output_held: Family::default(),
            write_retries: Family::default(),
            write_seconds: Family::new_with_constructor(seconds_histogram),
            batch_seconds: seconds_histogram(),
            guest_seconds: Family::new_with_constructor(seconds_histogram),
            consumer_lag: Family::default(),
            quarantined: Family::default(),
            component_info: Family::default(),
            component_load_failures: Family::default(),
            config_reloads: Family::default(),
            points_limited: Family::default(),
            tenant_active_series: Family::default(),
            messages_in_flight: Gauge::default(),
            points_in_flight: Gauge::default(),
            consumer_paused: Gauge::default(),
            worker_panics: Counter::default(),
            reasons: Mutex::default(),
            holds: Mutex::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "messages_consumed",
            "Kafka messages consumed",
            m.messages_consumed.clone(),
        );
        r.register("points_decoded", "Points decoded", m.points_decoded.clone());
        r.register(
            "points_in",
            "Points routed to a tenant (before its limits and its chain)",
            m.points_in.clone(),
        );
        r.register(
            "points_written",
            "Points written to an output",
            m.points_written.clone(),
        );
        r.register(
            "points_dropped",
            "Points dropped on purpose by a guest",
            m.points_dropped.clone(),
        );
        r.register(
            "points_dead_lettered",
            "Points or undecodable parts sent to the dead-letter queue",
            m.points_dead_lettered.clone(),
        );
        r.register(
            "dead_letters_written",
            "Dead-letter records written",
            m.dead_letters_written.clone(),
        );
        r.register(
            "dead_letter_errors",
            "Failed attempts to write a dead letter",
            m.dead_letter_errors.clone(),
        );
        r.register(
            "dead_letter_queue_blocked",
            "1 while a dead letter cannot be written and consumption waits",
            m.dead_letter_queue_blocked.clone(),
        );
        r.register(
            "outputs_stalled",
            "Outputs retrying a failed write",
            m.outputs_stalled.clone(),
        );
        r.register(
            "output_held",
            "1 while an output is held: its sink answers a status of its hold_on",
            m.output_held.clone(),
        );
        r.register(
            "write_retries",
            "Write attempts that failed and are retried",
            m.write_retries.clone(),
        );
        r.register(
            "write_seconds",
            "Duration of successful writes",
            m.write_seconds.clone(),
        );
        r.register(
            "batch_seconds",
            "Duration of a group of messages through decode, route and chains",
            m.batch_seconds.clone(),
        );
        r.register(
            "guest_seconds",
            "Time in a tenant's chain per batch",
            m.guest_seconds.clone(),
        );
        r.register(
            "consumer_lag",
            "Messages behind the partition's end",
            m.consumer_lag.clone(),
        );
        r.register(
            "quarantined",
            "1 for a quarantined tenant",
            m.quarantined.clone(),
        );
        r.register(
            "component_info",
            "1 for each component that runs now, by tenant, stage and content hash",
            m.component_info.clone(),
        );
        r.register(
            "component_load_failures",
            "Changed component files that failed to load or init; the running version was kept",
            m.component_load_failures.clone(),
        );
        r.register(
            "points_limited",
            "Points over a tenant's ingestion limit (rate or series), dead-lettered or dropped",
            m.points_limited.clone(),
        );
        r.register(
            "tenant_active_series",
            "Active series of a tenant with limits.max_series",
            m.tenant_active_series.clone(),
        );
        r.register(
            "config_reloads",
            "Config reloads on SIGHUP, by result (applied, or refused and the running config kept)",
            m.config_reloads.clone(),
        );
        r.register(
            "points_in_flight",
            "Points handed to outputs and not yet written or dead-lettered",
            m.points_in_flight.clone(),
        );
        r.register(
            "messages_in_flight",
            "Messages consumed and not yet finished",
            m.messages_in_flight.clone(),
        );
        r.register(
            "consumer_paused",
            "1 while the assigned partitions are paused because Boulder must wait",
            m.consumer_paused.clone(),
        );
        r.register(
            "worker_panics",
            "Groups of messages whose processing panicked; their messages were dead-lettered",
            m.worker_panics.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// Counts `points` dropped by a guest for `reason`: under the reason itself
    /// while the tenant's component has given fewer than [`MAX_REASONS`]
    /// distinct ones, else under [`OTHER_REASON`].
    pub fn count_dropped(&self, tenant: &str, component: &str, reason: &str, points: u64) {
        let reason = {
            let mut reasons = self.reasons.lock().expect("poisoned");
            let known = reasons
                .entry((tenant.to_owned(), component.to_owned()))
                .or_default();
            if known.contains(reason)
                || (known.len() < MAX_REASONS && known.insert(reason.to_owned()))
            {
                reason
            } else {
                OTHER_REASON
            }
        };
        let labels = DropLabels {
            tenant: tenant.to_owned(),
            component: component.to_owned(),
            reason: reason.to_owned(),
        };
        self.points_dropped.get_or_create(&labels).inc_by(points);
    }

    /// An output is held (its sink answered a status of its `hold_on`), or no
    /// longer (`why` is `None`).
    pub fn set_held(&self, output: &OutputLabels, why: Option<String>) {
        let mut holds = self.holds.lock().expect("poisoned");
        self.output_held
            .get_or_create(output)
            .set(i64::from(why.is_some()));
        match why {
            Some(why) => holds.insert(output.clone(), why),
            None => holds.remove(output),
        };
    }

    /// Why each held output is held.
    pub fn holds(&self) -> Vec<String> {
        let holds = self.holds.lock().expect("poisoned");
        holds
            .iter()
            .map(|(o, why)| {
                format!(
                    "output {:?} of tenant {:?} is held: {why}",
                    o.output, o.tenant
                )
            })
            .collect()
    }

    /// The labels of a tenant.
    pub fn tenant(tenant: &str) -> TenantLabel {
        TenantLabel {
            tenant: tenant.to_owned(),
        }
    }

    /// The labels of an output.
    pub fn output(tenant: &str, output: &str) -> OutputLabels {
        OutputLabels {
            tenant: tenant.to_owned(),
            output: output.to_owned(),
        }
    }

    /// The labels of a stage.
    pub fn stage(stage: &str, tenant: Option<&str>) -> StageLabels {
        StageLabels {
            stage: stage.to_owned(),
            tenant: tenant.unwrap_or("").to_owned(),
        }
    }

    /// Shows (or, with `running` false, removes) the series of
    /// [`Metrics::component_info`] of each `(stage, component, sha256)`.
    pub fn show_components<'a>(
        &self,
        tenant: &str,
        components: impl IntoIterator<Item = (String, &'a str, &'a str)>,
        running: bool,
    ) {
        for (stage, component, sha256) in components {
            let labels = ComponentLabels {
                tenant: tenant.to_owned(),
                stage,
                component: component.to_owned(),
                sha256: sha256.to_owned(),
            };
            if running {
                self.component_info.get_or_create(&labels).set(1);
            } else {
                self.component_info.remove(&labels);
            }
        }
    }

    /// The labels of a format.
    pub fn format(format: &str) -> FormatLabel {
        FormatLabel {
            format: format.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_counters_with_the_prefix_and_labels() {
        let m = Metrics::new();
        m.points_written
            .get_or_create(&Metrics::output("ops", "vm"))
            .inc_by(3);
        m.points_dead_lettered
            .get_or_create(&Metrics::stage("decode", None))
            .inc();
        let text = m.encode();
        assert!(
            text.contains(r#"boulder_points_written_total{tenant="ops",output="vm"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"boulder_points_dead_lettered_total{stage="decode",tenant=""} 1"#),
            "{text}"
        );
        assert!(
            text.contains("# TYPE boulder_batch_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn drop_reasons_past_the_cap_are_counted_as_other_per_component() {
        let m = Metrics::new();
        for i in 0..MAX_REASONS + 50 {
            m.count_dropped("t", "c", &format!("reason {i}"), 1);
        }
        m.count_dropped("t", "c", "reason 0", 1);
        m.count_dropped("t", "other-component", "reason 999", 1);
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("boulder_points_dropped_total{"))
            .count();
        assert_eq!(series, MAX_REASONS + 2, "{text}");
        let sample = |labels: &str| {
            let prefix = format!("boulder_points_dropped_total{{{labels}}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .map(str::to_owned)
        };
        assert_eq!(
            sample(r#"tenant="t",component="c",reason="reason 0""#).as_deref(),
            Some("2")
        );
        assert_eq!(
            sample(r#"tenant="t",component="c",reason="other""#).as_deref(),
            Some("50")
        );
        assert_eq!(
            sample(r#"tenant="t",component="other-component",reason="reason 999""#).as_deref(),
            Some("1")
        );
    }
}
