//! Replay fidelity: for each of the four formats, points dead-lettered at each
//! stage where they can be (decode, route, transform, write), then replayed once
//! the fault is fixed, land in VictoriaMetrics exactly as a run without the fault
//! writes them: names, labels, values, timestamps.

use boulder_tests::services::{
    base_config, consume_all, create_topic, export, headers, now_ms, produce, replay,
    require_services, unique, vm_a, wait_for_distinct, Boulder, Series,
};
use boulder_tests::stub_sink::StubSink;
use std::collections::BTreeMap;
use std::time::Duration;

const STAGES: [&str; 4] = ["decode", "route", "transform", "write"];

/// One input format: its name, a format its topic is wrongly configured as (the
/// decode fault), a message of it for a `case`, and the series one message lands
/// as.
struct Case {
    format: &'static str,
    wrong_format: &'static str,
    message: fn(case: &str, seconds: i64) -> String,
    series_per_message: usize,
}

fn influx_line(case: &str, seconds: i64) -> String {
    let ns = seconds * 1_000_000_000;
    format!("cpu,host=a,case={case} usage=1.5,idle=2 {ns}\nmem,host=a,case={case} used=3 {ns}\n")
}

fn influx_json(case: &str, seconds: i64) -> String {
    format!(
        r#"{{"metrics":[{{"name":"cpu","tags":{{"host":"a","case":"{case}"}},"fields":{{"usage":1.5,"idle":2}},"timestamp":{seconds}}},{{"name":"mem","tags":{{"host":"a","case":"{case}"}},"fields":{{"used":3}},"timestamp":{seconds}}}]}}"#
    )
}

fn prometheus_json(case: &str, seconds: i64) -> String {
    let time =
        humantime::format_rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(seconds as u64));
    format!(
        r#"{{"name":"up","labels":{{"__name__":"up","job":"api","case":"{case}"}},"value":"1","timestamp":"{time}"}}"#
    )
}

fn opentsdb_json(case: &str, seconds: i64) -> String {
    format!(
        r#"[{{"metric":"sys.cpu.user","timestamp":{seconds},"value":42,"tags":{{"host":"a","case":"{case}"}}}}]"#
    )
}

/// The output of every tenant of a config: VictoriaMetrics, every sample
/// labelled with the test and the run it came from.
fn output(name: &str, run: &str) -> String {
    format!(
        r#"[{{ url = "{vm}/api/v2/write?extra_label=test%3D{name}&extra_label=run%3D{run}", batch_age = "50ms" }}]"#,
        vm = vm_a()
    )
}

/// The config in which each stage-topic's points meet their fault (`faulty`), or
/// the one in which nothing fails.
fn config(name: &str, group: &str, case: &Case, faulty: Option<&StubSink>, run: &str) -> String {
    let topic = |stage: &str| format!("{name}-{stage}");
    let decode_format = if faulty.is_some() {
        case.wrong_format
    } else {
        case.format
    };
    let chain = r#"[{ component = "validate" }, { component = "flip-single-fields" }]"#;
    let (broken_chain, refused_output) = match faulty {
        Some(stub) => (
            r#"[{ component = "panic" }]"#.to_owned(),
            format!(
                r#"[{{ url = "{}/api/v2/write", batch_age = "50ms" }}]"#,
                stub.url
            ),
        ),
        None => (chain.to_owned(), output(name, run)),
    };
    // Without the fault, points of the route topic go to the default tenant.
    let default = if faulty.is_some() {
        ""
    } else {
        r#"default = "ok", "#
    };
    base_config(
        group,
        "",
        &format!(
            r#"
            [[inputs]]
            topics = ["{decode}"]
            format = "{decode_format}"
            [[inputs]]
            topics = ["{route}", "{transform}", "{write}"]
            format = "{format}"
            [router]
            component = "route"
            params = {{ {default}rules = [
                {{ topic = "^{decode}$", tenant = "ok" }},
                {{ topic = "^{transform}$", tenant = "broken" }},
                {{ topic = "^{write}$", tenant = "refused" }},
            ] }}
            [[tenants]]
            name = "ok"
            chain = {chain}
            outputs = {ok_output}
            [[tenants]]
            name = "broken"
            chain = {broken_chain}
            outputs = {ok_output}
            [[tenants]]
            name = "refused"
            chain = {chain}
            outputs = {refused_output}
            "#,
            decode = topic("decode"),
            route = topic("route"),
            transform = topic("transform"),
            write = topic("write"),
            format = case.format,
            ok_output = output(name, run),
        ),
    )
}

/// Every series of a run, its `run` label taken off.
fn landed(name: &str, run: &str) -> BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> {
    export(&vm_a(), &format!(r#"{{test="{name}",run="{run}"}}"#))
        .into_iter()
        .map(
            |Series {
                 mut labels,
                 samples,
             }| {
                labels.remove("run");
                (labels, samples)
            },
        )
        .collect()
}

fn replays_as_a_run_without_the_fault_writes(case: Case) {
    require_services();
    let name = unique(&format!("fidelity-{}", case.format));
    let seconds = now_ms() / 1000 - 60;
    for stage in STAGES {
        let topic = format!("{name}-{stage}");
        create_topic(&topic, 1);
        produce(
            &topic,
            &[("k", (case.message)(stage, seconds).into_bytes())],
        );
    }
    let wanted = STAGES.len() * case.series_per_message;

    // With the faults: every stage-topic's points dead-lettered at their stage.
    let refusing = StubSink::start(Box::new(|_, _| (400, vec![], "refused".into())));
    let faulty = Boulder::run(
        &name,
        &config(&name, &name, &case, Some(&refusing), "faulty"),
    );
    let lines_of_write = if case.series_per_message > 1 { 2 } else { 1 };
    let letters = 3 + lines_of_write;
    let dead = consume_all(&format!("{name}-dlq"), letters, Duration::from_secs(60));
    assert_eq!(dead.len(), letters, "{}", faulty.log());
    let mut stages: Vec<String> = dead
        .iter()
        .map(|m| headers(m)["__connect.errors.stage"].clone())
        .collect();
    stages.sort();
    stages.dedup();
    assert_eq!(stages, ["decode", "route", "transform", "write"]);
    for letter in &dead {
        let h = headers(letter);
        assert_eq!(h["boulder.dlq.version"], "1", "{h:?}");
        if h["__connect.errors.stage"] != "write" {
            let format = if h["__connect.errors.stage"] == "decode" {
                case.wrong_format
            } else {
                case.format
            };
            assert_eq!(h["boulder.source.format"], format, "{h:?}");
        }
    }
    assert!(faulty.stop().success());

    // Fixed: replay every dead letter.
    let fixed = config(&name, &name, &case, None, "replayed");
    let summary = replay(&name, &fixed, &["--since", "1h"]);
    wait_for_distinct(
        &vm_a(),
        &format!(r#"{{test="{name}",run="replayed"}}"#),
        wanted,
        Duration::from_secs(60),
        || summary.clone(),
    );

    // A run without the fault, reading the same messages in a group of its own.
    let reference = Boulder::run(
        &format!("{name}-ref"),
        &config(&name, &format!("{name}-ref"), &case, None, "reference"),
    );
    wait_for_distinct(
        &vm_a(),
        &format!(r#"{{test="{name}",run="reference"}}"#),
        wanted,
        Duration::from_secs(60),
        || reference.log(),
    );
    assert!(reference.stop().success());
    let (replayed, written) = (landed(&name, "replayed"), landed(&name, "reference"));
    assert_eq!(written.len(), wanted, "{written:#?}");
    assert_eq!(
        replayed, written,
        "replayed points differ from a run without the fault"
    );
}

#[test]
fn influx_line_points_replay_as_they_would_have_been_written() {
    replays_as_a_run_without_the_fault_writes(Case {
        format: "influx-line",
        wrong_format: "influx-json",
        message: influx_line,
        series_per_message: 3,
    });
}

#[test]
fn telegraf_json_points_replay_as_they_would_have_been_written() {
    replays_as_a_run_without_the_fault_writes(Case {
        format: "influx-json",
        wrong_format: "influx-line",
        message: influx_json,
        series_per_message: 3,
    });
}

#[test]
fn prometheus_points_replay_as_they_would_have_been_written() {
    replays_as_a_run_without_the_fault_writes(Case {
        format: "prometheus-json",
        wrong_format: "opentsdb-json",
        message: prometheus_json,
        series_per_message: 1,
    });
}

#[test]
fn opentsdb_points_replay_as_they_would_have_been_written() {
    replays_as_a_run_without_the_fault_writes(Case {
        format: "opentsdb-json",
        wrong_format: "prometheus-json",
        message: opentsdb_json,
        series_per_message: 1,
    });
}
