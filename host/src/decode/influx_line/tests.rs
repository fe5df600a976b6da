use super::*;
use crate::encode::line_protocol::{point_to_line, write_batch};
use boulder_batch::{FieldValue, Format};
use proptest::prelude::*;

fn parse(input: &str) -> (Batch, Vec<DecodeError>) {
    parse_with(input, Precision::Ns)
}

fn parse_with(input: &str, precision: Precision) -> (Batch, Vec<DecodeError>) {
    let mut batch = Batch::new();
    let source = batch.source("t", Format::InfluxLine);
    let errors = decode(input.as_bytes(), precision, 999, source, &mut batch);
    batch.validate().expect("the decoder writes valid batches");
    (batch, errors)
}

fn lines(batch: &Batch) -> Vec<String> {
    (0..batch.len()).map(|i| point_to_line(batch, i)).collect()
}

#[test]
fn parses_a_full_line() {
    let (b, errors) = parse(
        "cpu,host=a,region=eu usage=0.5,count=3i,big=7u,up=T,msg=\"ok\" 1700000000000000000\n",
    );
    assert!(errors.is_empty());
    let p = b.point(0);
    assert_eq!(p.measurement(), "cpu");
    assert_eq!(
        p.tags().collect::<Vec<_>>(),
        vec![("host", "a"), ("region", "eu")]
    );
    assert_eq!(
        p.fields().collect::<Vec<_>>(),
        vec![
            ("usage", FieldValue::Float(0.5)),
            ("count", FieldValue::Int(3)),
            ("big", FieldValue::UInt(7)),
            ("up", FieldValue::Bool(true)),
            ("msg", FieldValue::String("ok")),
        ]
    );
    assert_eq!(p.timestamp_ns(), 1_700_000_000_000_000_000);
}

#[test]
fn unescapes_every_escape() {
    let (b, errors) =
        parse(r#"my\ meas\,ure,tag\ k\=ey=va\,l\=ue\ x f\=k="say \"hi\" \\ there",g=1 0"#);
    assert!(errors.is_empty(), "{errors:?}");
    let p = b.point(0);
    assert_eq!(p.measurement(), "my meas,ure");
    assert_eq!(
        p.tags().collect::<Vec<_>>(),
        vec![("tag k=ey", "va,l=ue x")]
    );
    assert_eq!(
        p.field("f=k"),
        Some(FieldValue::String(r#"say "hi" \ there"#))
    );
    // A backslash before an ordinary character is literal.
    let (b, _) = parse(r"m\x,t=a\b f=1");
    assert_eq!(b.point(0).measurement(), r"m\x");
    assert_eq!(b.point(0).tag("t"), Some(r"a\b"));
    // An `=` in a measurement needs no escape.
    assert_eq!(parse("a=b f=1").0.point(0).measurement(), "a=b");
}

#[test]
fn booleans_in_every_spelling() {
    for (text, v) in [
        ("t", true),
        ("T", true),
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("f", false),
        ("F", false),
        ("false", false),
        ("False", false),
        ("FALSE", false),
    ] {
        let (b, errors) = parse(&format!("m x={text}"));
        assert!(errors.is_empty(), "{text}");
        assert_eq!(b.point(0).field("x"), Some(FieldValue::Bool(v)), "{text}");
    }
    assert_eq!(parse("m x=tRuE").1.len(), 1);
}

#[test]
fn numbers_in_every_form() {
    let (b, errors) = parse("m a=1,b=-1.5,c=1e3,d=-2.5E-3,e=.5,f=9223372036854775807i,g=-9223372036854775808i,h=18446744073709551615u");
    assert!(errors.is_empty(), "{errors:?}");
    let f: Vec<_> = b.point(0).fields().map(|(_, v)| v).collect();
    assert_eq!(
        f,
        vec![
            FieldValue::Float(1.0),
            FieldValue::Float(-1.5),
            FieldValue::Float(1000.0),
            FieldValue::Float(-0.0025),
            FieldValue::Float(0.5),
            FieldValue::Int(i64::MAX),
            FieldValue::Int(i64::MIN),
            FieldValue::UInt(u64::MAX),
        ]
    );
    for bad in [
        "m a=inf",
        "m a=NaN",
        "m a=1x",
        "m a=9223372036854775808i",
        "m a=-1u",
        "m a=",
    ] {
        assert_eq!(parse(bad).1.len(), 1, "{bad} should fail");
    }
}

#[test]
fn timestamps_follow_precision_and_default() {
    assert_eq!(parse("m f=1").0.point(0).timestamp_ns(), 999);
    assert_eq!(parse("m f=1 -5").0.point(0).timestamp_ns(), -5);
    for (precision, want) in [
        (Precision::Ns, 1_700_000_000),
        (Precision::Us, 1_700_000_000_000),
        (Precision::Ms, 1_700_000_000_000_000),
        (Precision::S, 1_700_000_000_000_000_000),
    ] {
        let (b, _) = parse_with("m f=1 1700000000", precision);
        assert_eq!(b.point(0).timestamp_ns(), want, "{precision:?}");
    }
    let (_, errors) = parse_with("m f=1 1700000000000", Precision::S);
    assert_eq!(errors[0].reason, crate::decode::TIMESTAMP_OUT_OF_RANGE);
}

#[test]
fn many_lines_comments_blank_lines_and_crlf() {
    let (b, errors) = parse("# header\n\ncpu f=1 1\r\n  mem f=2 2\n\n# done\ndisk f=3");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        lines(&b),
        vec!["cpu f=1.0 1", "mem f=2.0 2", "disk f=3.0 999"]
    );
}

#[test]
fn a_bad_line_fails_alone_with_its_number_and_bytes() {
    let input = "ok f=1 1\nbad line\nok2 f=2 2\nm,t= f=1\nm f=\"unterminated\n";
    let (b, errors) = parse(input);
    assert_eq!(lines(&b), vec!["ok f=1.0 1", "ok2 f=2.0 2"]);
    assert_eq!(errors.len(), 3);
    assert_eq!(
        (errors[0].line, errors[0].reason.as_str()),
        (2, "field without '='")
    );
    assert_eq!(&input[errors[0].bytes.clone()], "bad line");
    assert_eq!(
        (errors[1].line, errors[1].reason.as_str()),
        (4, "empty tag value")
    );
    assert_eq!(&input[errors[1].bytes.clone()], "m,t= f=1");
    assert_eq!(errors[2].line, 5);
}

#[test]
fn string_fields_may_span_lines() {
    let (b, errors) = parse("m s=\"two\nlines\" 1\nn f=1 2\nbad\n");
    assert_eq!(
        b.point(0).field("s"),
        Some(FieldValue::String("two\nlines"))
    );
    assert_eq!(b.len(), 2);
    assert_eq!(errors[0].line, 4);
}

#[test]
fn reports_each_kind_of_error() {
    let cases = [
        ("m", "missing fields"),
        (",t=a f=1", "missing measurement"),
        ("m,t f=1", "tag without '='"),
        ("m,=a f=1", "empty tag key"),
        ("m =1", "empty field key"),
        ("m f=1 12x", "invalid timestamp"),
        ("m f=1 1 2", "unexpected text after the timestamp"),
        ("m f=1,", "field without '='"),
    ];
    for (input, want) in cases {
        let (b, errors) = parse(input);
        assert!(b.is_empty(), "{input}");
        assert_eq!(errors.len(), 1, "{input}");
        assert_eq!(errors[0].reason, want, "{input}");
    }
    let mut batch = Batch::new();
    let errors = decode(b"m\xff f=1", Precision::Ns, 0, 0, &mut batch);
    assert_eq!(errors[0].reason, "not valid UTF-8");
    // In a long message only the line with the bad byte fails, wherever it is.
    for bad in [0, 57, 199] {
        let mut text = Vec::new();
        for i in 0..200 {
            if i == bad {
                text.extend_from_slice(b"cpu,host=a\xffb usage=1 1\n");
            } else {
                text.extend_from_slice(format!("cpu,host=h{i} usage={i} {i}\n").as_bytes());
            }
        }
        let mut batch = Batch::new();
        let errors = decode(&text, Precision::Ns, 0, 0, &mut batch);
        assert_eq!(batch.len(), 199, "bad line {bad}");
        assert_eq!(errors.len(), 1);
        assert_eq!(
            (errors[0].line, errors[0].reason.as_str()),
            (bad + 1, "not valid UTF-8")
        );
    }
    for empty in ["", " \n\n"] {
        let (b, errors) = parse(empty);
        assert!(b.is_empty());
        assert_eq!(errors[0].reason, "empty message");
    }
    // Only comments is not empty: nothing to say.
    assert!(parse("# nothing today\n").1.is_empty());
}

fn name() -> impl Strategy<Value = String> {
    // Includes every special character, backslashes and non-ASCII.
    "[a-zA-Z0-9_ ,=\\\\\"é日.:-]{1,12}"
}

fn value() -> impl Strategy<Value = (u8, i64, f64, String)> {
    (
        0u8..5,
        any::<i64>(),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        "[a-z \"\\\\,=é\n]{0,10}",
    )
}

prop_compose! {
    fn batch()(points in prop::collection::vec(
        (name(), prop::collection::vec((name(), name()), 0..4),
         prop::collection::vec((name(), value()), 1..4), any::<i64>()), 1..10)
    ) -> Batch {
        let mut b = Batch::new();
        let source = b.source("t", Format::InfluxLine);
        for (m, tags, fields, ts) in points {
            let m = b.push_str(&m);
            b.begin_point(m, ts, source);
            for (k, v) in tags {
                let (k, v) = (b.push_str(&k), b.push_str(&v));
                b.push_tag(k, v);
            }
            for (k, (kind, i, f, s)) in fields {
                let v = match kind {
                    0 => FieldValue::Float(f),
                    1 => FieldValue::Int(i),
                    2 => FieldValue::UInt(i as u64),
                    3 => FieldValue::Bool(i & 1 == 0),
                    _ => FieldValue::String(&s),
                };
                b.push_field_value(&k, v);
            }
        }
        b
    }
}

/// Where InfluxData's parsers differ, Boulder reads as InfluxDB does (its Go
/// parser and documentation); see `differential.rs`.
#[test]
fn reads_the_edge_cases_as_influxdb_does() {
    let read = |line: &str| {
        let (b, errors) = parse(line);
        (
            lines(&b),
            errors.into_iter().map(|e| e.reason).collect::<Vec<_>>(),
        )
    };
    assert_eq!(read("m f=.5").0, ["m f=0.5 999"]);
    assert_eq!(read("m f=1.").0, ["m f=1.0 999"]);
    assert_eq!(read("m f=+1").1, ["invalid field value"]);
    assert_eq!(read("m f=+1i").1, ["invalid field value"]);
    assert_eq!(read("m f=1 +5").1, ["invalid timestamp"]);
    assert_eq!(read("m f=1e+5").0, ["m f=100000.0 999"]);
    assert_eq!(read("m,,a=b f=1").0, Vec::<String>::new());
    let (b, _) = parse("m\\\\ f=1");
    assert_eq!(b.point(0).measurement(), "m\\", "two backslashes are one");
}

proptest! {
    #[test]
    fn encode_then_decode_round_trips(b in batch()) {
        let mut text = Vec::new();
        prop_assert!(write_batch(&b, &mut text).is_empty());
        let mut decoded = Batch::new();
        let source = decoded.source("t", Format::InfluxLine);
        let errors = decode(&text, Precision::Ns, 0, source, &mut decoded);
        prop_assert!(errors.is_empty(), "{:?} in {}", errors, String::from_utf8_lossy(&text));
        prop_assert_eq!(lines(&decoded), lines(&b));
        for (x, y) in decoded.iter().zip(b.iter()) {
            prop_assert_eq!(x.measurement(), y.measurement());
            prop_assert_eq!(x.tags().collect::<Vec<_>>(), y.tags().collect::<Vec<_>>());
            prop_assert_eq!(x.fields().collect::<Vec<_>>(), y.fields().collect::<Vec<_>>());
            prop_assert_eq!(x.timestamp_ns(), y.timestamp_ns());
        }
    }

    #[test]
    fn never_panics_and_always_writes_valid_batches(input in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut batch = Batch::new();
        let errors = decode(&input, Precision::Ms, 0, 0, &mut batch);
        batch.sources.push(Default::default());
        prop_assert!(batch.validate().is_ok());
        for e in errors {
            prop_assert!(e.bytes.end <= input.len() && e.bytes.start <= e.bytes.end);
        }
    }

    #[test]
    fn never_panics_on_line_like_text(input in "[a-z,= \"\\\\\n0-9.iu#tf\r-]{0,200}") {
        let mut batch = Batch::new();
        let _ = decode(input.as_bytes(), Precision::Ns, 0, 0, &mut batch);
    }
}

/// A tab after the space before the fields is more space, but a tab after a
/// comma starts the key: so the encoder never writes a tab-led key first.
#[test]
fn a_tab_led_field_key_keeps_its_tab_after_a_comma_only() {
    let (batch, errors) = parse("m c=2i,\tb=1i 5\nm \tb=1i 5");
    assert!(errors.is_empty(), "{errors:?}");
    let keys: Vec<Vec<&str>> = (0..batch.len())
        .map(|i| batch.point(i).fields().map(|(k, _)| k).collect())
        .collect();
    assert_eq!(keys, [vec!["c", "\tb"], vec!["b"]]);
    assert_eq!(lines(&batch)[0], "m c=2i,\tb=1i 5");
}
