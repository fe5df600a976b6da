use super::*;
use boulder_batch::Format;
use proptest::prelude::*;

fn run(
    f: impl Fn(&[u8], u32, &mut Batch) -> Vec<DecodeError>,
    input: &str,
) -> (Batch, Vec<DecodeError>) {
    let mut batch = Batch::new();
    let source = batch.source("t", Format::InfluxJson);
    let errors = f(input.as_bytes(), source, &mut batch);
    batch.validate().expect("decoders write valid batches");
    (batch, errors)
}

fn telegraf(precision: Precision) -> impl Fn(&[u8], u32, &mut Batch) -> Vec<DecodeError> {
    move |m, s, b| decode_influx_json(m, precision, 7, s, b)
}

fn lines(b: &Batch) -> Vec<String> {
    (0..b.len())
        .map(|i| crate::encode::line_protocol::point_to_line(b, i))
        .collect()
}

#[test]
fn telegraf_single_and_batch() {
    let (b, errors) = run(
        telegraf(Precision::S),
        r#"{"fields":{"usage":12.5,"count":3,"ok":true,"msg":"hi \"there\""},"name":"cpu","tags":{"host":"a","cpu":"cpu0"},"timestamp":1764000000}"#,
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        lines(&b),
        vec![
            r#"cpu,host=a,cpu=cpu0 usage=12.5,count=3i,ok=true,msg="hi \"there\"" 1764000000000000000"#
        ]
    );
    let (b, errors) = run(
        telegraf(Precision::Ms),
        r#"{"metrics":[{"name":"a","fields":{"v":1},"tags":{},"timestamp":1764000000123},
                       {"name":"b","fields":{"v":18446744073709551615},"timestamp":1764000000124.5}]}"#,
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        lines(&b),
        vec![
            "a v=1i 1764000000123000000",
            "b v=18446744073709551615u 1764000000124500000"
        ]
    );
}

#[test]
fn telegraf_bad_entries_fail_alone() {
    let (b, errors) = run(
        telegraf(Precision::S),
        r#"{"metrics":[{"name":"a","fields":{"v":1}},{"name":"b","fields":{}},{"name":"","fields":{"v":1}}]}"#,
    );
    assert_eq!(lines(&b), vec!["a v=1i 7"]);
    let reasons: Vec<_> = errors.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec!["metrics[1]: no fields", "metrics[2]: empty name"]
    );
    let (_, errors) = run(telegraf(Precision::S), r#"{"name":"x"}"#);
    assert_eq!(
        errors[0].reason,
        "neither a metric (name, fields) nor a batch (metrics)"
    );
}

#[test]
fn several_documents_per_message_and_truncation() {
    let input = "{\"name\":\"a\",\"fields\":{\"v\":1}}\n{\"name\":\"b\",\"fields\":{\"v\":2}}\n{\"name\":\"c\",\"fie";
    let (b, errors) = run(telegraf(Precision::S), input);
    assert_eq!(lines(&b), vec!["a v=1i 7", "b v=2i 7"]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 3);
    assert!(
        errors[0].reason.starts_with("truncated JSON"),
        "{}",
        errors[0].reason
    );
    assert_eq!(&input[errors[0].bytes.clone()], "{\"name\":\"c\",\"fie");
    for empty in ["", "  \n"] {
        assert_eq!(
            run(telegraf(Precision::S), empty).1[0].reason,
            "empty message"
        );
    }
    assert!(run(telegraf(Precision::S), "garbage").1[0]
        .reason
        .starts_with("invalid JSON"));
}

#[test]
fn prometheus_adapter_samples() {
    let input = r#"{"timestamp":"2025-11-24T16:00:00.123456789Z","value":"0.5","name":"http_requests_total","labels":{"__name__":"http_requests_total","job":"api","code":"200"}}
{"timestamp":"2025-11-24T17:00:00+01:00","value":"NaN","name":"up","labels":{"__name__":"up"}}
{"timestamp":"2025-11-24T16:00:00Z","value":"+Inf","labels":{"__name__":"x"}}
{"timestamp":"2025-11-24T16:00:00Z","value":"-Inf","name":"y"}
{"timestamp":"yesterday","value":"1","name":"z"}
{"timestamp":"2025-11-24T16:00:00Z","value":"one","name":"z"}"#;
    let (b, errors) = run(decode_prometheus_json, input);
    let p = b.point(0);
    assert_eq!(p.measurement(), "http_requests_total");
    assert_eq!(
        p.tags().collect::<Vec<_>>(),
        vec![("job", "api"), ("code", "200")]
    );
    assert_eq!(p.field("value"), Some(FieldValue::Float(0.5)));
    assert_eq!(p.timestamp_ns(), 1_764_000_000_123_456_789);
    assert!(matches!(b.point(1).field("value"), Some(FieldValue::Float(v)) if v.is_nan()));
    assert_eq!(b.point(1).timestamp_ns(), 1_764_000_000_000_000_000);
    assert_eq!(b.point(2).measurement(), "x");
    assert_eq!(
        b.point(2).field("value"),
        Some(FieldValue::Float(f64::INFINITY))
    );
    assert_eq!(
        b.point(3).field("value"),
        Some(FieldValue::Float(f64::NEG_INFINITY))
    );
    let reasons: Vec<_> = errors.iter().map(|e| (e.line, e.reason.as_str())).collect();
    assert_eq!(
        reasons,
        vec![
            (5, "timestamp is not RFC 3339"),
            (6, "value is not a number")
        ]
    );
}

#[test]
fn opentsdb_puts() {
    let input = r#"[{"metric":"sys.cpu.nice","timestamp":1764000000,"value":18,"tags":{"host":"web01","dc":"lga"}},
                    {"metric":"sys.cpu.user","timestamp":1764000000123,"value":"1.5","tags":{"host":"web01"}},
                    {"metric":"bad","timestamp":17640000001,"value":1},
                    {"metric":"bad","timestamp":1764000000,"value":"x"}]
                   {"metric":"one","timestamp":"1764000000","value":-2.5e3}"#;
    let (b, errors) = run(decode_opentsdb_json, input);
    assert_eq!(
        lines(&b),
        vec![
            "sys.cpu.nice,host=web01,dc=lga value=18i 1764000000000000000",
            "sys.cpu.user,host=web01 value=1.5 1764000000123000000",
            "one value=-2500.0 1764000000000000000",
        ]
    );
    let reasons: Vec<_> = errors.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "[2]: timestamp must be seconds (up to 10 digits) or milliseconds (13)",
            "[3]: value is not a number"
        ]
    );
}

proptest! {
    #[test]
    fn never_panic_on_any_bytes(input in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut b = Batch::new();
        let s = b.source("t", Format::InfluxJson);
        let _ = decode_influx_json(&input, Precision::S, 0, s, &mut b);
        let _ = decode_prometheus_json(&input, s, &mut b);
        let _ = decode_opentsdb_json(&input, s, &mut b);
        prop_assert!(b.validate().is_ok());
    }

    #[test]
    fn never_panic_on_json_like_text(input in r#"[\[\]{}":,0-9a-z.\-+eE \n]{0,120}"#) {
        let mut b = Batch::new();
        let s = b.source("t", Format::InfluxJson);
        let _ = decode_influx_json(input.as_bytes(), Precision::Ms, 0, s, &mut b);
        let _ = decode_prometheus_json(input.as_bytes(), s, &mut b);
        let _ = decode_opentsdb_json(input.as_bytes(), s, &mut b);
        prop_assert!(b.validate().is_ok());
    }

    #[test]
    fn telegraf_round_trips(
        name in "[a-zA-Z_é\"\\\\]{1,8}",
        tags in prop::collection::vec(("[a-z]{1,5}", "[a-zA-Z0-9 \"]{1,5}"), 0..3),
        ints in prop::collection::vec(("[a-z]{1,5}", any::<i64>()), 1..3),
        ts in 0i64..4_000_000_000,
    ) {
        let doc = serde_json::json!({
            "name": name,
            "tags": tags.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "fields": ints.iter().map(|(k, v)| (k.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "timestamp": ts,
        });
        let text = serde_json::to_string(&doc).unwrap();
        let (b, errors) = run(telegraf(Precision::S), &text);
        prop_assert!(errors.is_empty(), "{:?}", errors);
        prop_assert_eq!(b.point(0).measurement(), name.as_str());
        prop_assert_eq!(b.point(0).timestamp_ns(), ts * 1_000_000_000);
        // serde_json's Map sorts keys and keeps the last duplicate.
        let want: std::collections::BTreeMap<_, _> = ints.iter().cloned().collect();
        let got: std::collections::BTreeMap<String, i64> = b.point(0).fields()
            .map(|(k, v)| match v { FieldValue::Int(i) => (k.to_owned(), i), other => panic!("{other:?}") })
            .collect();
        prop_assert_eq!(got, want);
    }
}
