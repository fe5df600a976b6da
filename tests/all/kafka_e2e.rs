//! `boulder run` end to end: messages produced to the real broker, checked in the
//! real VictoriaMetrics (started with -influxSkipSingleField) with its export API:
//! names, labels, values and timestamps exactly as sent. Every test has its own
//! topics, group and a unique `test` label, so tests never see each other's data.

use boulder_tests::services::{
    base_config, consume_all, create_topic, export, metric, now_ms, produce, require_services,
    unique, vm_a, vm_b, wait_for_samples, Boulder, Series,
};
use std::time::Duration;

const CHAIN: &str = r#"[{ component = "validate" }, { component = "normalize" }, { component = "flip-single-fields" }]"#;

/// The shared config, with messages handed on quickly.
fn config(name: &str, rest: &str, kafka_options: &str) -> String {
    base_config(
        name,
        kafka_options,
        &format!("[pipeline]\nlinger = \"10ms\"\n{rest}"),
    )
}

fn output(vm: &str) -> String {
    format!(r#"[{{ url = "{vm}/api/v2/write", bucket = "metrics", batch_age = "100ms" }}]"#)
}

/// `(name, sorted labels without name and test, samples)` of a series.
type Simple = (String, Vec<(String, String)>, Vec<(i64, f64)>);

fn simple(series: &[Series]) -> Vec<Simple> {
    series
        .iter()
        .map(|s| {
            let labels = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "__name__" && *k != "test")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (s.labels["__name__"].clone(), labels, s.samples.clone())
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Produces `messages` to a new topic of `format`, runs one tenant with the
/// built-in chain into vm-a, and returns what VictoriaMetrics holds for the test.
fn single_tenant(
    format: &str,
    precision: &str,
    messages: &[String],
    samples: usize,
) -> (String, Vec<Series>, Boulder) {
    require_services();
    let name = unique(format);
    create_topic(&name, 2);
    let keyed: Vec<(&str, Vec<u8>)> = messages
        .iter()
        .map(|m| ("k", m.replace("TEST", &name).into_bytes()))
        .collect();
    produce(&name, &keyed);
    let boulder = Boulder::run(
        &name,
        &config(
            &name,
            &format!(
                r#"
                [[inputs]]
                topics = ["{name}"]
                format = "{format}"
                {precision}

                [[tenants]]
                name = "ops"
                chain = {CHAIN}
                outputs = {}
                "#,
                output(&vm_a())
            ),
            "",
        ),
    );
    let series = wait_for_samples(
        &vm_a(),
        &format!(r#"{{test="{name}"}}"#),
        samples,
        Duration::from_secs(60),
        || boulder.log(),
    );
    (name, series, boulder)
}

#[test]
fn influx_line_protocol_end_to_end() {
    let now = now_ms();
    // Nanosecond timestamps with a sub-millisecond part: VictoriaMetrics keeps milliseconds.
    let ns = |offset_ms: i64| (now + offset_ms) * 1_000_000 + 123_456;
    let messages = vec![
        format!(
            "cpu,host=a,test=TEST usage_user=1.5,usage_system=2i {}\ncpu,host=b,test=TEST usage_user=3.25,usage_system=4i {}\n",
            ns(0),
            ns(1000)
        ),
        format!("Disk\\ IO,test=TEST,path=/var\\ log used=7u {}\n", ns(2000)),
        format!(
            "temp,test=TEST celsius=21.5 {}\nthis is not line protocol\nup,test=TEST ok=true {}\n",
            ns(3000),
            ns(4000)
        ),
    ];
    let (name, series, boulder) = single_tenant("influx-line", "", &messages, 7);
    assert_eq!(
        simple(&series),
        vec![
            (
                "cpu_usage_system".into(),
                labels(&[("host", "a")]),
                vec![(now, 2.0)]
            ),
            (
                "cpu_usage_system".into(),
                labels(&[("host", "b")]),
                vec![(now + 1000, 4.0)]
            ),
            (
                "cpu_usage_user".into(),
                labels(&[("host", "a")]),
                vec![(now, 1.5)]
            ),
            (
                "cpu_usage_user".into(),
                labels(&[("host", "b")]),
                vec![(now + 1000, 3.25)]
            ),
            // A single field: flipped to M_F so -influxSkipSingleField keeps the field name.
            (
                "disk_io_used".into(),
                labels(&[("path", "/var log")]),
                vec![(now + 2000, 7.0)]
            ),
            ("temp_celsius".into(), vec![], vec![(now + 3000, 21.5)]),
            ("up_ok".into(), vec![], vec![(now + 4000, 1.0)]),
        ]
    );
    // The bad line, and only it, is in the dead-letter queue.
    let dead = consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(20));
    assert_eq!(dead.len(), 1, "{}", boulder.log());
    use rdkafka::Message;
    assert_eq!(dead[0].payload(), Some(&b"this is not line protocol"[..]));
    // What the status endpoint says about it.
    let (code, metrics) = boulder.status("/metrics");
    assert_eq!(code, 200);
    for (series, value) in [
        (
            r#"boulder_messages_consumed_total{format="influx-line"}"#,
            3.0,
        ),
        (r#"boulder_points_decoded_total{format="influx-line"}"#, 5.0),
        (r#"boulder_points_in_total{tenant="ops"}"#, 5.0),
        (
            r#"boulder_points_written_total{tenant="ops",output="ops-1"}"#,
            5.0,
        ),
        (
            r#"boulder_points_dead_lettered_total{stage="decode",tenant=""}"#,
            1.0,
        ),
        (
            r#"boulder_dead_letters_written_total{stage="decode",tenant=""}"#,
            1.0,
        ),
        ("boulder_dead_letter_queue_blocked", 0.0),
        ("boulder_messages_in_flight", 0.0),
    ] {
        assert_eq!(
            metric(&metrics, series),
            Some(value),
            "{series} in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("boulder_write_seconds_bucket"),
        "{metrics}"
    );
    assert_eq!(boulder.status("/health"), (200, "ok\n".to_owned()));
    assert_eq!(boulder.status("/ready"), (200, "ready\n".to_owned()));
    assert!(boulder.stop().success());
}

#[test]
fn telegraf_influx_json_end_to_end() {
    let now = now_ms();
    let messages = vec![
        format!(
            r#"{{"name":"mem","tags":{{"host":"a","test":"TEST"}},"fields":{{"used_percent":61.5,"free":1024}},"timestamp":{now}}}"#
        ),
        format!(
            r#"{{"metrics":[{{"name":"swap","tags":{{"test":"TEST"}},"fields":{{"in":3}},"timestamp":{}}},
                            {{"name":"load","tags":{{"test":"TEST"}},"fields":{{"load1":0.5,"load5":0.25}},"timestamp":{}}}]}}"#,
            now + 1000,
            now + 2000
        ),
    ];
    let (_, series, boulder) = single_tenant("influx-json", r#"precision = "ms""#, &messages, 5);
    assert_eq!(
        simple(&series),
        vec![
            ("load_load1".into(), vec![], vec![(now + 2000, 0.5)]),
            ("load_load5".into(), vec![], vec![(now + 2000, 0.25)]),
            (
                "mem_free".into(),
                labels(&[("host", "a")]),
                vec![(now, 1024.0)]
            ),
            (
                "mem_used_percent".into(),
                labels(&[("host", "a")]),
                vec![(now, 61.5)]
            ),
            ("swap_in".into(), vec![], vec![(now + 1000, 3.0)]),
        ]
    );
    assert!(boulder.stop().success());
}

#[test]
fn prometheus_adapter_json_end_to_end() {
    let now = now_ms();
    let rfc3339 = |ms: i64| {
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
            .to_string()
    };
    let messages = vec![
        format!(
            r#"{{"timestamp":"{}","value":"42","name":"http_requests_total","labels":{{"__name__":"http_requests_total","job":"api","test":"TEST"}}}}"#,
            rfc3339(now + 250)
        ),
        format!(
            r#"{{"timestamp":"{}","value":"1e-3","name":"process_cpu_seconds_total","labels":{{"__name__":"process_cpu_seconds_total","test":"TEST"}}}}"#,
            rfc3339(now + 1500)
        ),
    ];
    let (_, series, boulder) = single_tenant("prometheus-json", "", &messages, 2);
    // Exactly the Prometheus names: one series each, not flipped to name_value.
    assert_eq!(
        simple(&series),
        vec![
            (
                "http_requests_total".into(),
                labels(&[("job", "api")]),
                vec![(now + 250, 42.0)]
            ),
            (
                "process_cpu_seconds_total".into(),
                vec![],
                vec![(now + 1500, 0.001)]
            ),
        ]
    );
    assert!(boulder.stop().success());
}

#[test]
fn opentsdb_json_end_to_end() {
    let now = now_ms();
    let messages = vec![
        format!(
            r#"[{{"metric":"sys.cpu.user","timestamp":{},"value":18,"tags":{{"host":"web01","test":"TEST"}}}},
               {{"metric":"sys.cpu.nice","timestamp":{},"value":"1.5","tags":{{"host":"web01","test":"TEST"}}}}]"#,
            now / 1000,
            now + 500
        ),
        format!(
            r#"{{"metric":"sys.mem.free","timestamp":{},"value":-3,"tags":{{"test":"TEST"}}}}"#,
            now / 1000 + 1
        ),
    ];
    let (_, series, boulder) = single_tenant("opentsdb-json", "", &messages, 3);
    assert_eq!(
        simple(&series),
        vec![
            (
                "sys_cpu_nice".into(),
                labels(&[("host", "web01")]),
                vec![(now + 500, 1.5)]
            ),
            (
                "sys_cpu_user".into(),
                labels(&[("host", "web01")]),
                vec![(now, 18.0)]
            ),
            ("sys_mem_free".into(), vec![], vec![(now + 1000, -3.0)]),
        ]
    );
    assert!(boulder.stop().success());
}

#[test]
fn two_tenants_routed_by_topic_and_by_tag_to_their_own_outputs() {
    require_services();
    let name = unique("tenants");
    let (team_topic, shared_topic) = (format!("{name}-team-a"), format!("{name}-shared"));
    create_topic(&team_topic, 2);
    create_topic(&shared_topic, 2);
    let now = now_ms();
    let ns = |offset: i64| (now + offset) * 1_000_000;
    produce(
        &team_topic,
        &[(
            "k",
            format!("from_topic,test={name} v=1 {}\n", ns(0)).into_bytes(),
        )],
    );
    produce(
        &shared_topic,
        &[(
            "k",
            format!(
                "by_tag,tenant=b,test={name} v=2 {}\nby_tag,tenant=a,test={name} v=3 {}\ndefault,test={name} v=4 {}\n",
                ns(1000),
                ns(2000),
                ns(3000)
            )
            .into_bytes(),
        )],
    );
    let boulder = Boulder::run(
        &name,
        &config(
            &name,
            &format!(
                r#"
                [[inputs]]
                topics = ["{team_topic}", "{shared_topic}"]
                format = "influx-line"

                [router]
                component = "route"
                params = {{ default = "b", rules = [{{ topic = "^.*-team-a$", tenant = "a" }}, {{ tag = "tenant" }}] }}

                [[tenants]]
                name = "a"
                chain = {CHAIN}
                outputs = {}

                [[tenants]]
                name = "b"
                chain = {CHAIN}
                outputs = {}
                "#,
                output(&vm_a()),
                output(&vm_b())
            ),
            "",
        ),
    );
    let selector = format!(r#"{{test="{name}"}}"#);
    let a = wait_for_samples(&vm_a(), &selector, 2, Duration::from_secs(60), || {
        boulder.log()
    });
    let b = wait_for_samples(&vm_b(), &selector, 2, Duration::from_secs(60), || {
        boulder.log()
    });
    assert_eq!(
        simple(&a),
        vec![
            (
                "by_tag_v".into(),
                labels(&[("tenant", "a")]),
                vec![(now + 2000, 3.0)]
            ),
            ("from_topic_v".into(), vec![], vec![(now, 1.0)]),
        ]
    );
    assert_eq!(
        simple(&b),
        vec![
            (
                "by_tag_v".into(),
                labels(&[("tenant", "b")]),
                vec![(now + 1000, 2.0)]
            ),
            ("default_v".into(), vec![], vec![(now + 3000, 4.0)]),
        ]
    );
    assert!(boulder.stop().success());
    // Nothing more arrived late in either.
    assert_eq!(export(&vm_a(), &selector).len(), 2);
    assert_eq!(export(&vm_b(), &selector).len(), 2);
}

/// An output URL's own query reaches the database beside the `org`, `bucket` and
/// `precision` that Boulder adds: here VictoriaMetrics's `extra_label` gives the
/// points a `test` label that none of them carries.
#[test]
fn an_output_url_with_a_query_keeps_it() {
    require_services();
    let name = unique("query");
    create_topic(&name, 1);
    let now = now_ms();
    produce(
        &name,
        &[(
            "k",
            format!("labelled,host=a v=5 {}\n", now * 1_000_000).into_bytes(),
        )],
    );
    let boulder = Boulder::run(
        &name,
        &config(
            &name,
            &format!(
                r#"
                [[inputs]]
                topics = ["{name}"]
                format = "influx-line"

                [[tenants]]
                name = "ops"
                outputs = [{{ url = "{vm}/api/v2/write?extra_label=test%3D{name}", bucket = "metrics", batch_age = "100ms" }}]
                "#,
                vm = vm_a()
            ),
            "",
        ),
    );
    let series = wait_for_samples(
        &vm_a(),
        &format!(r#"{{test="{name}"}}"#),
        1,
        Duration::from_secs(60),
        || boulder.log(),
    );
    assert_eq!(
        simple(&series),
        // No chain flips the single field, so -influxSkipSingleField drops its name.
        vec![(
            "labelled".into(),
            labels(&[("host", "a")]),
            vec![(now, 5.0)]
        )]
    );
    assert!(boulder.stop().success());
}

#[test]
fn a_regex_subscription_picks_up_a_topic_created_after_start() {
    require_services();
    let name = unique("regex");
    let boulder = Boulder::run(
        &name,
        &config(
            &name,
            &format!(
                r#"
                [[inputs]]
                topics = ["^{name}-.*$"]
                format = "influx-line"

                [[tenants]]
                name = "ops"
                chain = {CHAIN}
                outputs = {}
                "#,
                output(&vm_a())
            ),
            r#""topic.metadata.refresh.interval.ms" = "1000""#,
        ),
    );
    // Let it join the group with no matching topic yet.
    boulder.wait_log("boulder running", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let late = format!("{name}-late");
    create_topic(&late, 1);
    let now = now_ms();
    produce(
        &late,
        &[(
            "k",
            format!("late,test={name} v=5 {}\n", now * 1_000_000).into_bytes(),
        )],
    );
    let series = wait_for_samples(
        &vm_a(),
        &format!(r#"{{test="{name}"}}"#),
        1,
        Duration::from_secs(60),
        || boulder.log(),
    );
    assert_eq!(
        simple(&series),
        vec![("late_v".into(), vec![], vec![(now, 5.0)])]
    );
    assert!(boulder.stop().success());
}

#[test]
fn messages_are_grouped_by_payload_bytes() {
    require_services();
    let name = unique("batch-bytes");
    create_topic(&name, 1);
    let now = now_ms();
    // Ten messages of ten lines each, all of one length.
    let messages: Vec<(&str, Vec<u8>)> = (0..10)
        .map(|m| {
            let lines: String = (0..10)
                .map(|l| {
                    let i = m * 10 + l;
                    format!("m,test={name} v={i:03} {:019}\n", (now + i) * 1_000_000)
                })
                .collect();
            ("k", lines.into_bytes())
        })
        .collect();
    let size = messages[0].1.len();
    assert!(messages.iter().all(|(_, m)| m.len() == size));
    produce(&name, &messages);
    // A group closes at two messages' bytes; the linger is far longer than the
    // test waits, so only the byte bound can close a group.
    let boulder = Boulder::run(
        &name,
        &base_config(
            &name,
            "",
            &format!(
                r#"
                [pipeline]
                batch_bytes = "{bytes}B"
                linger = "10min"

                [[inputs]]
                topics = ["{name}"]
                format = "influx-line"

                [[tenants]]
                name = "ops"
                chain = {CHAIN}
                outputs = {output}
                "#,
                bytes = 2 * size,
                output = output(&vm_a()),
            ),
        ),
    );
    wait_for_samples(
        &vm_a(),
        &format!(r#"{{test="{name}"}}"#),
        100,
        Duration::from_secs(60),
        || boulder.log(),
    );
    assert_eq!(
        boulder.metric("boulder_batch_seconds_count"),
        Some(5.0),
        "{}",
        boulder.log()
    );
}
