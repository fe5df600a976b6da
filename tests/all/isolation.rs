//! Isolation between processes and messages, against the real broker and
//! VictoriaMetrics: a stalled output does not keep the consumer group from
//! rebalancing, and a huge message or a bad one does not take other messages'
//! points down. (`containment.rs`: guests, the host's shortages, panics.)

use boulder_tests::outage::Outage;
use boulder_tests::services::{
    base_config, by_source, consume_all, create_topic, headers, now_ms, produce, produce_each,
    require_services, unique, vm_a, wait_for_distinct, Boulder,
};
use boulder_tests::wait_until;
use rdkafka::Message;
use std::time::{Duration, Instant};

const IN_FLIGHT: &str = "boulder_points_in_flight";

/// The shared config, reading `topics` as line protocol, in a group whose dead
/// members leave within seconds.
fn base(name: &str, topics: &[&str], rest: &str) -> String {
    let input = format!("[[inputs]]\ntopics = {topics:?}\nformat = \"influx-line\"\n");
    let group = r#""session.timeout.ms" = "6000", "heartbeat.interval.ms" = "1000""#;
    base_config(name, group, &format!("{input}{rest}"))
}

/// The partitions of `topic` a process's log says it was last assigned.
fn assigned(boulder: &Boulder, topic: &str) -> Option<usize> {
    let log = boulder.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("partitions assigned"))?;
    Some(line.matches(&format!("{topic}/")).count())
}

/// Two processes wait on a tenant's output that refuses connections, each with
/// its whole in-flight budget held for it; a third joins the group and gets
/// partitions within 30 s, because the waiting ones keep polling with their
/// partitions paused. Once the output is back, every point of both tenants is
/// in VictoriaMetrics.
#[test]
fn processes_waiting_on_a_stalled_output_let_a_third_into_the_group() {
    require_services();
    let name = unique("rejoin");
    create_topic(&name, 4);
    let outage = Outage::start();
    let config = base(
        &name,
        &[&name],
        &format!(
            r#"
            [pipeline]
            max_in_flight_points = 1000
            [router]
            component = "route"
            params = {{ default = "flowing", rules = [{{ tag = "tenant" }}] }}
            [[tenants]]
            name = "flowing"
            outputs = [{{ url = "{vm}/api/v2/write", batch_age = "50ms" }}]
            [[tenants]]
            name = "stalled"
            outputs = [{{ url = "{down}/api/v2/write", batch_age = "50ms" }}]
            "#,
            vm = vm_a(),
            down = outage.url
        ),
    );
    let a = Boulder::run(&format!("{name}-a"), &config);
    let b = Boulder::run(&format!("{name}-b"), &config);
    wait_until(
        "both in the group",
        Duration::from_secs(60),
        || format!("{}\n{}", a.log(), b.log()),
        || assigned(&a, &name).unwrap_or(0) > 0 && assigned(&b, &name).unwrap_or(0) > 0,
    );
    // 40,000 points over 4 partitions, every other one for the stalled tenant.
    let start = now_ms() - 40_000;
    let messages: Vec<(String, Vec<u8>)> = (0..400)
        .map(|m| {
            let text: String = (0..100)
                .map(|l| {
                    let n = m * 100 + l;
                    let tenant = if n % 2 == 0 { "flowing" } else { "stalled" };
                    let ns = (start + n) * 1_000_000;
                    format!(
                        "{tenant},tenant={tenant},test={name},i={} v={n} {ns}\n",
                        n % 100
                    )
                })
                .collect();
            (format!("k{m}"), text.into_bytes())
        })
        .collect();
    // A record batch per message: this group rebalances mid-stream (see
    // `produce_each`).
    produce_each(&name, &messages);
    // Each holds what it can of its budget for the stalled output (groups take it
    // in chunks of some hundreds of points), cannot hand on the next group, and
    // waits with its partitions paused.
    for p in [&a, &b] {
        p.wait_metric("boulder_consumer_paused", 1.0, Duration::from_secs(60));
        assert!(p.metric(IN_FLIGHT).unwrap_or(0.0) >= 400.0, "{}", p.log());
    }

    let c = Boulder::run(&format!("{name}-c"), &config);
    let joining = Instant::now();
    wait_until(
        "the third process to be assigned partitions",
        Duration::from_secs(30),
        || format!("a:\n{}\nb:\n{}\nc:\n{}", a.log(), b.log(), c.log()),
        || assigned(&c, &name).unwrap_or(0) > 0,
    );
    eprintln!(
        "the third process had partitions after {:?}",
        joining.elapsed()
    );
    for p in [&a, &b] {
        p.wait_metric("boulder_consumer_paused", 1.0, Duration::from_secs(30));
    }

    outage.end(&vm_a());
    wait_for_distinct(
        &vm_a(),
        &format!(r#"{{test="{name}"}}"#),
        40_000,
        Duration::from_secs(180),
        || format!("a:\n{}\nb:\n{}\nc:\n{}", a.log(), b.log(), c.log()),
    );
    for p in [a, b, c] {
        assert!(p.stop().success());
    }
    assert!(consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(3)).is_empty());
}

/// A message of 13 MB (200,000 lines) read in one group with small messages of
/// another topic: guests see it in chunks, so every point of it and of the small
/// ones lands with the default limits, and nothing is dead-lettered.
#[test]
fn a_message_of_13_mb_lands_whole_beside_small_ones_with_the_default_limits() {
    require_services();
    let name = unique("bigmsg");
    let small_topic = format!("{name}-small");
    create_topic(&name, 1);
    create_topic(&small_topic, 1);
    let start = now_ms() - 200_100;
    let big: String = (0..200_000)
        .map(|n| format!("b,test={name} v={n} {}\n", (start + n) * 1_000_000))
        .collect();
    assert!(big.len() >= 8 << 20, "{} bytes", big.len());
    produce(&name, &[("big", big.into_bytes())]);
    let small: Vec<(String, Vec<u8>)> = (0..10)
        .map(|m| {
            let text: String = (0..10)
                .map(|l| {
                    let n = 200_000 + m * 10 + l;
                    format!("s,test={name} v={n} {}\n", (start + n) * 1_000_000)
                })
                .collect();
            (format!("k{m}"), text.into_bytes())
        })
        .collect();
    produce(&small_topic, &small);
    let boulder = Boulder::run(
        &name,
        &base(
            &name,
            &[&name, &small_topic],
            &format!(
                r#"
                # One group for all of it, as when a consumer falls behind.
                [pipeline]
                batch_bytes = "32MiB"
                linger = "2s"
                [router]
                component = "route"
                params = {{ default = "ops" }}
                [[tenants]]
                name = "ops"
                chain = [{{ component = "validate" }}, {{ component = "normalize" }}, {{ component = "flip-single-fields" }}]
                outputs = [{{ url = "{vm}/api/v2/write", batch_age = "100ms" }}]
                "#,
                vm = vm_a()
            ),
        ),
    );
    wait_for_distinct(
        &vm_a(),
        &format!(r#"{{test="{name}"}}"#),
        200_100,
        Duration::from_secs(180),
        || boulder.log(),
    );
    assert!(boulder.stop().success());
    assert!(consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(3)).is_empty());
}

/// A group of 20 messages, three of which hold a point the guest fails on: the
/// failed call is narrowed down, so only those three messages are dead-lettered
/// (each with all of its points) and the other 17 land.
#[test]
fn a_guest_failing_on_some_messages_dead_letters_those_messages_only() {
    require_services();
    let name = unique("poison");
    create_topic(&name, 1);
    let start = now_ms() - 100;
    let bad = [3, 11, 17];
    let messages: Vec<(String, Vec<u8>)> = (0..20)
        .map(|m| {
            let text: String = (0..5)
                .map(|l| {
                    let n = m * 5 + l;
                    let doing = if bad.contains(&m) && l == 2 {
                        ",do=panic"
                    } else {
                        ""
                    };
                    format!(
                        "p,test={name}{doing} v={n} {}\n",
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
            &[&name],
            &format!(
                r#"
                # The 20 messages in one group, through one worker.
                [pipeline]
                batch_messages = 20
                linger = "2s"
                workers = 1
                [[tenants]]
                name = "ops"
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
        17 * 5,
        Duration::from_secs(60),
        || boulder.log(),
    );
    let dead = by_source(consume_all(
        &format!("{name}-dlq"),
        3,
        Duration::from_secs(30),
    ));
    let offsets: Vec<String> = dead
        .iter()
        .map(|m| headers(m)["__connect.errors.offset"].clone())
        .collect();
    assert_eq!(offsets, ["3", "11", "17"], "{}", boulder.log());
    for letter in &dead {
        let h = headers(letter);
        assert_eq!(h["__connect.errors.stage"], "transform");
        assert_eq!(
            h["__connect.errors.exception.class.name"],
            "boulder.guest.panic"
        );
        let lines = String::from_utf8_lossy(letter.payload().unwrap_or_default())
            .lines()
            .count();
        assert_eq!(lines, 5, "{h:?}");
    }
    assert_eq!(
        boulder
            .metric(r#"boulder_quarantined{tenant="ops"}"#)
            .unwrap_or(0.0),
        0.0,
        "a chain that passes most messages is not failing"
    );
    assert!(boulder.stop().success());
    assert_eq!(
        consume_all(&format!("{name}-dlq"), 4, Duration::from_secs(3)).len(),
        3
    );
}

/// A guest that always runs into its deadline, on a group of 30 messages: the
/// group costs three calls (the failed one and its two halves), not one per
/// message, and all of it is dead-lettered.
#[test]
fn a_guest_that_always_hits_its_deadline_costs_a_group_three_calls() {
    require_services();
    let name = unique("deadline-narrow");
    create_topic(&name, 1);
    let messages: Vec<(String, Vec<u8>)> = (0..30)
        .map(|m| {
            (
                format!("k{m}"),
                format!("d,test={name} v={m} 1\n").into_bytes(),
            )
        })
        .collect();
    produce(&name, &messages);
    let boulder = Boulder::run(
        &name,
        &base(
            &name,
            &[&name],
            r#"
            [pipeline]
            batch_messages = 30
            linger = "2s"
            workers = 1
            [[tenants]]
            name = "stuck"
            chain = [{ component = "loop-forever" }]
            limits = { deadline_per_call = "100ms" }
            outputs = [{ url = "http://127.0.0.1:1/api/v2/write" }]
            "#,
        ),
    );
    let dead = consume_all(&format!("{name}-dlq"), 30, Duration::from_secs(60));
    assert_eq!(dead.len(), 30, "{}", boulder.log());
    assert!(dead.iter().all(|m| {
        headers(m)["__connect.errors.exception.class.name"] == "boulder.guest.deadline"
    }));
    let calls = boulder.metric(r#"boulder_guest_seconds_count{tenant="stuck"}"#);
    assert_eq!(calls, Some(3.0), "{}", boulder.log());
    assert!(boulder.stop().success());
}
