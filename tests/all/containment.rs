//! Containment, against the real broker, VictoriaMetrics and runtime: the host's
//! own shortages are not blamed on tenants, a guest's words stay bounded while the
//! other tenant flows, and a panic in a worker loses nothing and says so.

use boulder_tests::poll;
use boulder_tests::services::{
    base_config, committed_offset, consume_all, create_topic, headers, now_ms, produce, replay,
    require_services, unique, vm_a, wait_for_distinct, Boulder,
};
use rdkafka::Message;
use std::time::Duration;

/// The shared config, reading `topic` as line protocol.
fn base(name: &str, topic: &str, rest: &str) -> String {
    let input = format!("[[inputs]]\ntopics = [\"{topic}\"]\nformat = \"influx-line\"\n");
    base_config(name, "", &format!("{input}{rest}"))
}

/// Fewer instance slots than the workers need at once (three slots, one per
/// stage, and four workers in slow calls): stages wait for a slot and give up
/// each other's idle instances, so every point lands, nothing is dead-lettered
/// and no tenant is quarantined.
#[test]
fn an_instance_pool_smaller_than_the_load_is_waited_for_not_blamed_on_tenants() {
    require_services();
    let name = unique("pool");
    create_topic(&name, 4);
    let start = now_ms() - 2000;
    let messages: Vec<(String, Vec<u8>)> = (0..80)
        .map(|m| {
            let text: String = (0..20)
                .map(|l| {
                    let n = m * 20 + l;
                    // One slow point per message: calls last milliseconds and overlap.
                    let doing = if l == 0 { ",do=slow" } else { "" };
                    format!(
                        "q,test={name}{doing} v={n} {}\n",
                        (start + n as i64) * 1_000_000
                    )
                })
                .collect();
            (format!("k{m}"), text.into_bytes())
        })
        .collect();
    produce(&name, &messages);
    let boulder = Boulder::run(
        &name,
        &base(
            &name,
            &name,
            &format!(
                r#"
                [pipeline]
                batch_messages = 1
                workers = 4
                [router]
                component = "route"
                params = {{ default = "ops" }}
                [[tenants]]
                name = "ops"
                chain = [{{ component = "by-tag" }}, {{ component = "validate" }}]
                limits = {{ quarantine_after = 1 }}
                outputs = [{{ url = "{vm}/api/v2/write", batch_age = "50ms" }}]
                "#,
                vm = vm_a()
            ),
        )
        // Into the shared config's [runtime] table.
        .replacen("[runtime]\n", "[runtime]\nmax_instances = 3\n", 1),
    );
    wait_for_distinct(
        &vm_a(),
        &format!(r#"{{test="{name}"}}"#),
        80 * 20,
        Duration::from_secs(120),
        || boulder.log(),
    );
    assert_eq!(
        boulder
            .metric(r#"boulder_quarantined{tenant="ops"}"#)
            .unwrap_or(0.0),
        0.0
    );
    assert!(boulder.stop().success());
    assert!(consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(3)).is_empty());
}

/// A hostile tenant gives a 10 MB reason, panics with a 10 MB message, and drops
/// a million points each with a reason of its own, while the broker takes records
/// of at most 1 MB: its dead letters are written (reasons cut to 1 KiB), `/metrics`
/// stays small (the reasons past 100 counted as `other`), and the calm tenant's
/// points all land.
#[test]
fn a_guests_huge_and_countless_reasons_stay_bounded_and_the_other_tenant_flows() {
    require_services();
    let name = unique("chatty");
    create_topic(&name, 2);
    let start = now_ms() - 1000;
    let calm = |n: i64| format!("calm,test={name} v={n} {}\n", (start + n) * 1_000_000);
    let hostile = |what: &str| format!("h,tenant=hostile,do={what},test={name} v=1 1\n");
    let mut messages: Vec<(String, Vec<u8>)> = vec![
        (
            "huge-reason".into(),
            (hostile("huge-reason") + &calm(0)).into_bytes(),
        ),
        (
            "huge-panic".into(),
            (hostile("huge-panic") + &calm(1)).into_bytes(),
        ),
    ];
    // 1,000,000 drops with distinct reasons, 10,000 per message, each message
    // with a calm point too.
    for m in 0..100i64 {
        let mut text = calm(2 + m);
        for i in 0..10_000 {
            let n = m * 10_000 + i;
            text.push_str(&format!("h,tenant=hostile,do=distinct n={n}i 1\n"));
        }
        messages.push((format!("distinct-{m}"), text.into_bytes()));
    }
    produce(&name, &messages);
    let boulder = Boulder::run(
        &name,
        &base_config(
            &name,
            r#""message.max.bytes" = "1000000""#,
            &format!(
                r#"
                [[inputs]]
                topics = ["{name}"]
                format = "influx-line"
                [router]
                component = "route"
                params = {{ default = "calm", rules = [{{ tag = "tenant" }}] }}
                [[tenants]]
                name = "calm"
                outputs = [{{ url = "{vm}/api/v2/write", batch_age = "50ms" }}]
                [[tenants]]
                name = "hostile"
                chain = [{{ component = "by-tag" }}]
                outputs = [{{ url = "{vm}/api/v2/write", batch_age = "50ms" }}]
                "#,
                vm = vm_a()
            ),
        ),
    );
    wait_for_distinct(
        &vm_a(),
        &format!(r#"{{test="{name}"}}"#),
        102,
        Duration::from_secs(180),
        || boulder.log(),
    );
    let dead = consume_all(&format!("{name}-dlq"), 2, Duration::from_secs(60));
    assert_eq!(dead.len(), 2, "{}", boulder.log());
    for letter in &dead {
        let h = headers(letter);
        let reason = &h["__connect.errors.exception.message"];
        assert!(reason.len() < 2048, "{} bytes", reason.len());
        assert!(
            reason.contains("[cut: "),
            "{}",
            &reason[reason.len() - 100..]
        );
        assert_eq!(h["boulder.tenant"], "hostile");
    }
    let dropped =
        r#"boulder_points_dropped_total{tenant="hostile",component="by-tag",reason="other"}"#;
    boulder.wait_metric(dropped, 1_000_000.0 - 100.0, Duration::from_secs(180));
    let (_, metrics) = boulder.status("/metrics");
    let series = metrics
        .lines()
        .filter(|l| l.starts_with("boulder_points_dropped_total{"))
        .count();
    assert_eq!(series, 101, "100 reasons and `other`");
    assert!(
        metrics.len() < 64 << 10,
        "/metrics is {} bytes",
        metrics.len()
    );
    assert_eq!(
        boulder.metric("boulder_dead_letter_errors_total"),
        Some(0.0)
    );
    assert!(boulder.stop().success());
}

/// A panic while a group is processed (a fault only tests can cause): the
/// group's message is dead-lettered with its original bytes and class
/// `boulder.internal`, the partition commits past it and flows on, a metric
/// counts it, `/health` answers 500 naming it, and `boulder replay` writes it
/// once the fault is gone.
#[test]
fn a_panic_in_a_worker_dead_letters_its_group_and_says_so() {
    require_services();
    let name = unique("panic-worker");
    create_topic(&name, 1);
    let start = now_ms() - 100;
    let line = |n: i64| format!("w,test={name} v={n} {}\n", (start + n) * 1_000_000);
    let marker = format!("fault-{name}");
    let poisoned =
        format!("{}{}", line(1), line(2)).replace(" v=1 ", &format!(",why={marker} v=1 "));
    produce(
        &name,
        &[
            ("before", line(0).into_bytes()),
            ("poisoned", poisoned.clone().into_bytes()),
            ("after", line(3).into_bytes()),
        ],
    );
    let config = base(
        &name,
        &name,
        &format!(
            r#"
            [pipeline]
            batch_messages = 1
            [[tenants]]
            name = "ops"
            outputs = [{{ url = "{vm}/api/v2/write", batch_age = "50ms" }}]
            "#,
            vm = vm_a()
        ),
    );
    let boulder = Boulder::run_with_env(&name, &config, &[("BOULDER_TEST_PANIC_ON", &marker)]);
    let selector = format!(r#"{{test="{name}"}}"#);
    wait_for_distinct(&vm_a(), &selector, 2, Duration::from_secs(60), || {
        boulder.log()
    });
    let dead = consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1, "{}", boulder.log());
    let h = headers(&dead[0]);
    assert_eq!(h["__connect.errors.stage"], "internal");
    assert_eq!(
        h["__connect.errors.exception.class.name"],
        "boulder.internal"
    );
    assert_eq!(h["__connect.errors.offset"], "1");
    assert!(
        h["__connect.errors.exception.message"].contains("injected by a test"),
        "{h:?}"
    );
    assert_eq!(dead[0].payload(), Some(poisoned.as_bytes()));
    poll(
        Duration::from_secs(30),
        Duration::from_millis(250),
        || match committed_offset(&name, &name, 0) {
            Some(3) => Ok(()),
            other => Err(format!("committed {other:?}")),
        },
    );
    assert_eq!(boulder.metric("boulder_worker_panics_total"), Some(1.0));
    let (code, health) = boulder.status("/health");
    assert_eq!(code, 500, "{health}");
    assert!(
        health.contains("panicked in a worker") && health.contains("injected by a test"),
        "{health}"
    );
    // It goes on: later messages land.
    produce(&name, &[("later", line(4).into_bytes())]);
    wait_for_distinct(&vm_a(), &selector, 3, Duration::from_secs(60), || {
        boulder.log()
    });
    assert!(boulder.stop().success());

    // The fault gone, replay writes the dead-lettered message's points.
    let stderr = replay(&name, &config, &["--stage", "internal"]);
    assert!(
        stderr.contains("replayed           1 records from stage internal"),
        "{stderr}"
    );
    wait_for_distinct(&vm_a(), &selector, 5, Duration::from_secs(30), || {
        stderr.to_string()
    });
}
