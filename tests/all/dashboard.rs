//! The Grafana dashboard (docs/grafana-dashboard.json) queries only what Boulder
//! exports: every metric name in its queries has samples in a real `/metrics`,
//! and every label a query selects or groups by is on those samples.

use boulder_tests::root;
use boulder_tests::services::*;
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Every PromQL expression of the dashboard: panel targets and variable queries.
fn queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// Per sample name in a `/metrics` text, the label names its samples carry.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let sample = Regex::new(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ").unwrap();
    let label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="#).unwrap();
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(c) = sample.captures(line) else {
            continue;
        };
        let labels = names.entry(c[1].to_owned()).or_default();
        if let Some(inside) = c.get(3) {
            labels.extend(
                label
                    .captures_iter(inside.as_str())
                    .map(|l| l[1].to_owned()),
            );
        }
    }
    names
}

/// The metric names and the label names a query uses (in selectors, `by (...)`
/// and `label_values(metric, label)`).
fn used(query: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let metric = Regex::new(r"\b(boulder_[a-z_]+)").unwrap();
    let selector = Regex::new(r"\{([^}]*)\}").unwrap();
    let matcher = Regex::new(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)").unwrap();
    let grouping = Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap();
    let label_values = Regex::new(r"label_values\(\s*[^,]+,\s*([a-zA-Z_]+)\s*\)").unwrap();
    let metrics = metric
        .captures_iter(query)
        .map(|c| c[1].to_owned())
        .collect();
    let mut labels = BTreeSet::new();
    for s in selector.captures_iter(query) {
        labels.extend(matcher.captures_iter(&s[1]).map(|c| c[1].to_owned()));
    }
    for g in grouping.captures_iter(query) {
        labels.extend(
            g[1].split(',')
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty()),
        );
    }
    labels.extend(label_values.captures_iter(query).map(|c| c[1].to_owned()));
    (metrics, labels)
}

#[test]
fn every_metric_and_label_the_dashboard_queries_is_exported() {
    let text = std::fs::read_to_string(root().join("docs/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut all = Vec::new();
    queries(&dashboard, &mut all);
    assert!(all.len() >= 20, "{} queries", all.len());

    // A run that makes every series the dashboard shows: points written, one
    // dropped by the guest, an undecodable line dead-lettered, a tenant with
    // limits, a reload, and consumer lag (librdkafka's statistics, every 5 s).
    require_services();
    let name = unique("dashboard");
    create_topic(&name, 1);
    let now_ns = now_ms() * 1_000_000;
    let lines = format!(
        "d,test={name} v=1 {now_ns}\nd,test={name},do=distinct n=2i {now_ns}\nnot line protocol\n"
    );
    produce(&name, &[("k", lines.into_bytes())]);
    let config = influx_config(
        &name,
        &format!(
            r#"
            [[tenants]]
            name = "ops"
            chain = [{{ component = "by-tag" }}]
            limits = {{ points_per_second = 100000, max_series = 1000 }}
            outputs = [{{ url = "{vm}/api/v2/write", batch_age = "100ms" }}]
            "#,
            vm = vm_a(),
        ),
    );
    let boulder = Boulder::run(&name, &config);
    boulder.wait_metric(
        r#"boulder_points_written_total{tenant="ops",output="ops-1"}"#,
        1.0,
        Duration::from_secs(60),
    );
    boulder.wait_metric(
        r#"boulder_dead_letters_written_total{stage="decode",tenant=""}"#,
        1.0,
        Duration::from_secs(60),
    );
    boulder.reload(&config);
    boulder.wait_metric(
        r#"boulder_config_reloads_total{result="applied"}"#,
        1.0,
        Duration::from_secs(30),
    );
    let metrics = boulder_tests::poll(Duration::from_secs(30), Duration::from_millis(500), || {
        let (_, text) = boulder.status("/metrics");
        match text.contains("boulder_consumer_lag{") {
            true => Ok(text),
            false => Err(format!("no consumer lag yet:\n{text}")),
        }
    });
    assert!(boulder.stop().success());

    let exported = exported(&metrics);
    let mut problems = Vec::new();
    // What a scrape adds (`instance`, `job`) is not Boulder's: a query that
    // groups by it is caught, as is a metric that does not exist.
    let caught = "sum by (instance) (rate(boulder_points_in_total[5m])) + boulder_nothing_total";
    for query in std::iter::once(&caught.to_owned()).chain(&all) {
        let (names, labels) = used(query);
        assert!(
            !names.is_empty(),
            "a query without a Boulder metric: {query}"
        );
        for name in &names {
            let Some(has) = exported.get(name) else {
                problems.push(format!("{name} has no sample in /metrics ({query})"));
                continue;
            };
            for label in labels.iter().filter(|l| !has.contains(*l)) {
                problems.push(format!("{name} has no label {label} ({query})"));
            }
        }
    }
    assert_eq!(
        problems[..2],
        [
            format!("boulder_nothing_total has no sample in /metrics ({caught})"),
            format!("boulder_points_in_total has no label instance ({caught})"),
        ]
    );
    assert!(problems.len() == 2, "{problems:#?}\n{metrics}");
}
