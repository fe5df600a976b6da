//! What a sink's refusals and failures become, with a stub sink in place of
//! VictoriaMetrics: 400 → the batch split until the refused lines are alone, those
//! dead-lettered with status and body; 401 → the output held, nothing
//! dead-lettered; 413 → the batch split; 503 with Retry-After → retried after the
//! delay asked, nothing dead-lettered; the token, gzip and the query parameters as
//! configured.

use boulder_tests::services::{
    base_config, consume_all, create_topic, headers, now_ms, produce, require_services, unique,
    Boulder,
};
use boulder_tests::stub_sink::StubSink;
use boulder_tests::wait_until;
use rdkafka::Message;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// A sink that refuses everything (400): each line is dead-lettered with the status
/// and the body, after the batch was split to find which lines it refuses.
#[test]
fn a_400_for_every_line_dead_letters_each_with_the_status_and_body() {
    let sink = StubSink::start(Box::new(|_, _| {
        (400, vec![], "partial write: unable to parse 'm,i=0'".into())
    }));
    let sent = lines(3);
    let (name, boulder) = run_against(&sink, &sent, "", &[]);
    let dead = consume_all(&format!("{name}-dlq"), 3, Duration::from_secs(30));
    assert_eq!(dead.len(), 3, "{}", boulder.log());
    let mut payloads: Vec<String> = dead
        .iter()
        .map(|d| String::from_utf8_lossy(d.payload().unwrap_or_default()).into_owned())
        .collect();
    payloads.sort();
    let mut expected: Vec<String> = sent.iter().map(|l| format!("{l}\n")).collect();
    expected.sort();
    assert_eq!(payloads, expected, "one line each");
    for letter in &dead {
        let h = headers(letter);
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
    }
    // 3 lines, then 1 + 2, then the 2 as 1 + 1.
    assert_eq!(sink.received().len(), 5);
    assert!(boulder.stop().success());
}

/// One line the sink refuses among 10,000 in one batch: the batch is split until
/// that line is alone, the other 9,999 are written and only it is dead-lettered,
/// in a bounded number of requests.
#[test]
fn one_refused_line_among_10000_is_dead_lettered_alone() {
    let sent = lines(10_000);
    let bad = sent[6_543].clone();
    let refused = bad.clone();
    let sink = StubSink::start(Box::new(move |r, _| {
        if r.body.lines().any(|l| l == refused) {
            (400, vec![], "unable to parse: bad timestamp".into())
        } else {
            (204, vec![], String::new())
        }
    }));
    let (name, boulder) = run_against(&sink, &sent, ", batch_points = 10000", &[]);
    let dead = consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(60));
    assert_eq!(dead.len(), 1, "{}", boulder.log());
    assert_eq!(dead[0].payload(), Some(format!("{bad}\n").as_bytes()));
    let h = headers(&dead[0]);
    assert_eq!(h["boulder.http.status"], "400");
    assert!(
        h["__connect.errors.exception.message"].contains("bad timestamp"),
        "{h:?}"
    );
    let written = r#"boulder_points_written_total{tenant="ops",output="stub"}"#;
    boulder.wait_metric(written, 9_999.0, Duration::from_secs(30));
    let lines = sink.written_lines();
    assert_eq!(lines.len(), 9_999);
    assert!(!lines.contains(&bad));
    // The first request, then two for each halving down to one line (about 14).
    let requests = sink.received().len();
    assert!(
        requests <= 1 + 2 * boulder::sink::MAX_REFUSED_SPLITS,
        "{requests} requests"
    );
    assert!(boulder.stop().success());
    assert_eq!(
        consume_all(&format!("{name}-dlq"), 2, Duration::from_secs(3)).len(),
        1
    );
}

/// A 401 means the output is wrong, not its points: nothing is dead-lettered, the
/// output holds its points and `/ready` names it, until the sink takes them.
#[test]
fn a_401_holds_the_output_until_it_is_fixed_and_loses_nothing() {
    let fixed = Arc::new(AtomicBool::new(false));
    let sink = StubSink::answering_until(401, "unauthorized: bad token", fixed.clone());
    let sent = lines(50);
    let (name, boulder) = run_against(&sink, &sent, "", &[]);
    let held = r#"boulder_output_held{tenant="ops",output="stub"}"#;
    boulder.wait_metric(held, 1.0, Duration::from_secs(30));
    wait_until(
        "a few tries",
        Duration::from_secs(30),
        || boulder.log(),
        || sink.received().len() >= 3,
    );
    let (code, ready) = boulder.status("/ready");
    assert_eq!(code, 503, "{ready}");
    assert!(
        ready.contains(r#"output "stub" of tenant "ops" is held: the sink answers 401 Unauthorized: unauthorized: bad token"#),
        "{ready}"
    );
    assert!(boulder.log().contains("output held"), "{}", boulder.log());
    assert!(consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(2)).is_empty());

    fixed.store(true, Ordering::Relaxed);
    boulder.wait_metric(held, 0.0, Duration::from_secs(60));
    let written = r#"boulder_points_written_total{tenant="ops",output="stub"}"#;
    boulder.wait_metric(written, 50.0, Duration::from_secs(10));
    assert_eq!(sink.written_lines().len(), 50);
    let (code, ready) = boulder.status("/ready");
    assert_eq!(code, 200, "{ready}");
    assert!(boulder.stop().success());
    assert!(consume_all(&format!("{name}-dlq"), 1, Duration::from_secs(3)).is_empty());
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
    // Retry-After: 1 holds each retry back a second at least (backoff alone
    // starts at 100 ms).
    for pair in received[..3].windows(2) {
        let waited = pair[1].at - pair[0].at;
        assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    }
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
