//! What a sink's refusals and failures become, with a stub sink in place of
//! VictoriaMetrics: 400 → dead letter with status and body; 413 → the batch split;
//! 503 with Retry-After → retried, nothing dead-lettered; the token, gzip and the
//! query parameters as configured.

use boulder_tests::services::{
    base_config, consume_all, create_topic, headers, now_ms, produce, require_services, unique,
    Boulder,
};
use boulder_tests::stub_sink::StubSink;
use boulder_tests::wait_until;
use rdkafka::Message;
use std::time::Duration;

/// Produces `lines` as one message and runs one tenant (no chain) writing to `sink`.
fn run_against(
    sink: &StubSink,
    lines: &[String],
    output_extra: &str,
    env: &[(&str, &str)],
) -> (String, Boulder) {
    require_services();
    let name = unique("sink");
    create_topic(&name, 1);
    let message: String = lines.iter().map(|l| format!("{l}\n")).collect();
    produce(&name, &[("k", message.into_bytes())]);
    let config = base_config(
        &name,
        "",
        &format!(
            r#"
            [[inputs]]
            topics = ["{name}"]
            format = "influx-line"
            [[tenants]]
            name = "ops"
            outputs = [{{ name = "stub", url = "{url}/api/v2/write", org = "ops", bucket = "b", batch_age = "50ms" {output_extra} }}]
            "#,
            url = sink.url,
        ),
    );
    (name.clone(), Boulder::run_with_env(&name, &config, env))
}

fn lines(n: usize) -> Vec<String> {
    let now = now_ms();
    (0..n)
        .map(|i| format!("m,i={i} v={i}.5 {}", (now + i as i64) * 1_000_000))
        .collect()
}

#[test]
fn a_400_dead_letters_the_batch_with_the_status_and_body() {
    let sink = StubSink::start(Box::new(|_, _| {
        (400, vec![], "partial write: unable to parse 'm,i=0'".into())
    }));
    let sent = lines(3);
    let (name, boulder) = run_against(&sink, &sent, "", &[]);
    let dead = consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1, "{}", boulder.log());
    let expected: String = sent.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(dead[0].payload(), Some(expected.as_bytes()));
    let h = headers(&dead[0]);
    assert_eq!(h["__connect.errors.stage"], "write");
    assert_eq!(h["__connect.errors.topic"], name);
    assert_eq!(h["__connect.errors.partition"], "0");
    assert_eq!(h["__connect.errors.offset"], "0");
    assert_eq!(h["boulder.http.status"], "400");
    assert_eq!(h["boulder.output"], "stub");
    assert_eq!(h["boulder.tenant"], "ops");
    assert!(
        h["__connect.errors.exception.message"]
            .contains("400 Bad Request: partial write: unable to parse"),
        "{h:?}"
    );
    assert_eq!(sink.received().len(), 1, "a 400 is not retried");
    assert!(boulder.stop().success());
}

#[test]
fn a_413_splits_the_batch_until_the_sink_takes_it() {
    let sink = StubSink::start(Box::new(|r, _| {
        if r.body.lines().count() > 1 {
            (413, vec![], "too large".into())
        } else {
            (204, vec![], String::new())
        }
    }));
    let sent = lines(4);
    let (name, boulder) = run_against(&sink, &sent, "", &[]);
    let written = || {
        let mut w: Vec<String> = sink
            .received()
            .iter()
            .filter(|r| r.body.lines().count() == 1)
            .map(|r| r.body.trim_end().to_owned())
            .collect();
        w.sort();
        w
    };
    wait_until(
        "four single-line writes",
        Duration::from_secs(30),
        || boulder.log(),
        || written().len() == 4,
    );
    assert_eq!(written(), sent);
    // 4 lines, then 2 + 2, then 1 + 1 + 1 + 1.
    assert_eq!(sink.received().len(), 7);
    assert!(boulder.stop().success());
    assert!(consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(3)).is_empty());
}

#[test]
fn a_503_is_retried_after_retry_after_and_sends_token_gzip_and_query() {
    let sink = StubSink::start(Box::new(|_, i| {
        if i < 2 {
            (503, vec![("Retry-After".into(), "1".into())], "busy".into())
        } else {
            (204, vec![], String::new())
        }
    }));
    let sent = lines(2);
    let (name, boulder) = run_against(
        &sink,
        &sent,
        r#", token_env = "STUB_TOKEN""#,
        &[("STUB_TOKEN", "s3cret")],
    );
    wait_until(
        "a successful write",
        Duration::from_secs(30),
        || boulder.log(),
        || sink.received().len() >= 3,
    );
    let received = sink.received();
    let r = &received[2];
    assert_eq!(
        r.body,
        sent.iter().map(|l| format!("{l}\n")).collect::<String>()
    );
    assert_eq!(
        r.request_line,
        "POST /api/v2/write?org=ops&bucket=b&precision=ns HTTP/1.1"
    );
    assert_eq!(r.header("authorization"), Some("Token s3cret"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert!(
        received.iter().all(|x| x.body == r.body),
        "every try sends the same batch"
    );
    assert!(boulder.stop().success());
    assert_eq!(sink.received().len(), 3, "nothing more after success");
    assert!(consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(3)).is_empty());
}

#[test]
fn run_refuses_to_start_without_the_token_variable() {
    let sink = StubSink::start(Box::new(|_, _| (204, vec![], String::new())));
    let (_, mut boulder) = run_against(
        &sink,
        &lines(1),
        r#", token_env = "BOULDER_TEST_UNSET_TOKEN""#,
        &[],
    );
    let status = boulder.wait();
    assert!(!status.success());
    assert!(
        boulder
            .log()
            .contains(r#"output "stub": token_env "BOULDER_TEST_UNSET_TOKEN" is not set"#),
        "{}",
        boulder.log()
    );
}
