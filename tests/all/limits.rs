//! Per-tenant ingestion limits, enforced by the host before the tenant's chain:
//! a rate and a number of active series, each with its policy (dead-letter or
//! drop), counted; other tenants untouched.

use boulder_tests::services::*;
use std::time::Duration;

/// Two tenants routed by the tag `tenant`, each to its own VictoriaMetrics;
/// `limited_limits` are the `limits` table of tenant `limited`.
fn config(name: &str, limited_limits: &str) -> String {
    routed_by_tag(
        name,
        &format!(
            r#"
            [[tenants]]
            name = "limited"
            limits = {limited_limits}
            outputs = [{{ url = "{a}/api/v2/write", batch_age = "100ms" }}]

            [[tenants]]
            name = "free"
            outputs = [{{ url = "{b}/api/v2/write", batch_age = "100ms" }}]
            "#,
            a = vm_a(),
            b = vm_b(),
        ),
    )
}

fn samples(vm: &str, name: &str, tenant: &str) -> usize {
    let selector = format!(r#"{{__name__="lim",test="{name}",tenant="{tenant}"}}"#);
    export(vm, &selector).iter().map(|s| s.samples.len()).sum()
}

/// A tenant over its rate: the first `burst` points of a message of 1,000 pass,
/// the rest are dead-lettered at stage `limit` (class `boulder.limit.rate`) and
/// counted; another tenant in the same message is not limited. Once the limit is
/// raised, `boulder replay --stage limit` writes the rest.
#[test]
fn points_over_a_tenants_rate_are_dead_lettered_and_replayed_once_it_is_raised() {
    require_services();
    let name = unique("rate");
    create_topic(&name, 1);
    let start_ns = (now_ms() - 120_000) * 1_000_000;
    let lines: String = (0..2_000)
        .map(|i| {
            let tenant = if i % 2 == 0 { "limited" } else { "free" };
            format!(
                "lim,tenant={tenant},test={name} v={i} {}\n",
                start_ns + i * 1_000_000
            )
        })
        .collect();
    produce(&name, &[("k", lines.into_bytes())]);
    // One point a second after a burst of 100: the message's 1,000 points of
    // `limited` come at once, so a few more than 100 pass at most.
    let strict = config(&name, "{ points_per_second = 1, burst = 100 }");
    let boulder = Boulder::run(&name, &strict);
    let selector = format!(r#"{{__name__="lim",test="{name}",tenant="free"}}"#);
    wait_for_samples(&vm_b(), &selector, 1_000, Duration::from_secs(60), || {
        boulder.log()
    });
    let limited = r#"boulder_points_limited_total{tenant="limited",limit="rate"}"#;
    let over = poll_metric(&boulder, limited);
    assert!((890.0..=900.0).contains(&over), "{over} limited");
    let dead = consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1, "one record per message and reason");
    let h = headers(&dead[0]);
    assert_eq!(h["__connect.errors.stage"], "limit");
    assert_eq!(
        h["__connect.errors.exception.class.name"], "boulder.limit.rate",
        "{h:?}"
    );
    assert_eq!(h["boulder.tenant"], "limited");
    assert!(
        h["__connect.errors.exception.message"].contains("limits.points_per_second"),
        "{h:?}"
    );
    let value = rdkafka::Message::payload(&dead[0]).unwrap_or_default();
    assert_eq!(
        value
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as f64,
        over
    );
    let passed = 1_000 - over as usize;
    let selector = format!(r#"{{__name__="lim",test="{name}",tenant="limited"}}"#);
    wait_for_samples(&vm_a(), &selector, passed, Duration::from_secs(30), || {
        boulder.log()
    });
    assert!(boulder.stop().success());
    assert_eq!(samples(&vm_a(), &name, "limited"), passed);

    let raised = config(&name, "{ points_per_second = 100000 }");
    let summary = replay(&name, &raised, &["--stage", "limit"]);
    assert!(summary.contains("limit"), "{summary}");
    wait_for_samples(&vm_a(), &selector, 1_000, Duration::from_secs(30), || {
        summary.clone()
    });
    assert_eq!(samples(&vm_b(), &name, "free"), 1_000);
}

/// A tenant over its series: points of its first 3 series flow, points of new
/// series are dropped (policy `drop`: counted, not dead-lettered), and
/// `boulder_tenant_active_series` says 3.
#[test]
fn new_series_over_a_tenants_limit_are_dropped_and_known_ones_flow() {
    require_services();
    let name = unique("series");
    create_topic(&name, 1);
    let start_ns = (now_ms() - 120_000) * 1_000_000;
    // Series s0..s4 in turn, 10 points each: s0, s1 and s2 come first.
    let lines: String = (0..50)
        .map(|i| {
            format!(
                "lim,tenant=limited,test={name},s=s{} v={i} {}\n",
                i % 5,
                start_ns + i * 1_000_000
            )
        })
        .chain((0..10).map(|i| {
            format!(
                "lim,tenant=free,test={name},s=f{i} v={i} {}\n",
                start_ns + i * 1_000_000
            )
        }))
        .collect();
    produce(&name, &[("k", lines.into_bytes())]);
    let boulder = Boulder::run(
        &name,
        &config(&name, r#"{ max_series = 3, over_limit = "drop" }"#),
    );
    let selector = format!(r#"{{__name__="lim",test="{name}",tenant="limited"}}"#);
    let series = wait_for_samples(&vm_a(), &selector, 30, Duration::from_secs(60), || {
        boulder.log()
    });
    let kept: Vec<&str> = series.iter().map(|s| s.labels["s"].as_str()).collect();
    assert_eq!(kept, ["s0", "s1", "s2"]);
    let limited = r#"boulder_points_limited_total{tenant="limited",limit="series"}"#;
    assert_eq!(poll_metric(&boulder, limited), 20.0);
    assert_eq!(
        boulder.metric(r#"boulder_tenant_active_series{tenant="limited"}"#),
        Some(3.0)
    );
    let free = format!(r#"{{__name__="lim",test="{name}",tenant="free"}}"#);
    wait_for_samples(&vm_b(), &free, 10, Duration::from_secs(30), || {
        boulder.log()
    });
    assert!(boulder.stop().success());
    assert!(consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(3)).is_empty());
    assert_eq!(samples(&vm_a(), &name, "limited"), 30);
}

/// The value of a metric once it is there (within 30 s).
fn poll_metric(boulder: &Boulder, series: &str) -> f64 {
    boulder_tests::poll(Duration::from_secs(30), Duration::from_millis(100), || {
        boulder
            .metric(series)
            .ok_or_else(|| format!("no {series}\n{}", boulder.log()))
    })
}
