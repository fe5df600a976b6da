//! Boulder's line protocol decoder against an independent one, InfluxData's
//! `influxdb-line-protocol` (the parser of InfluxDB IOx), on generated lines: for
//! every line both accept it and read the same point, or both refuse it. The
//! round-trip test beside it cannot catch a mistake the encoder and the decoder
//! share (their escape tables are one); this one can.
//!
//! Where the two differ by design, the generator keeps out of the way; InfluxDB's
//! own parser (Go, `models/points.go`) settles each case, and Boulder reads as it
//! does (the unit tests beside this file pin these down):
//! - a float with a bare leading or trailing point (`.5`, `1.`): InfluxDB and
//!   Boulder take it, IOx's parser refuses it;
//! - an unescaped comma or space inside a name, or a stray quote in a string
//!   (`m,,a=b`, `m f0=" ",f1=1` after a leading space): InfluxDB and Boulder
//!   refuse such lines, IOx's parser takes the delimiter into the next key;
//! - two backslashes before a delimiter (`m\\ f=1`): InfluxDB's documentation
//!   reads them as one backslash, as Boulder does; IOx's parser refuses the line;
//! - a field key given twice: the generator gives every field a key of its own.
//!
//! It found that Boulder took a plus sign before a number or a timestamp
//! (`f=+1`, `+5`), which InfluxDB refuses; Boulder now refuses it too.

use super::*;
use boulder_batch::{FieldValue, Format};
use influxdb_line_protocol as iox;
use proptest::prelude::*;

/// What a parser made of one line: the point, or a refusal.
#[derive(Debug, PartialEq)]
enum Read {
    Point {
        measurement: String,
        tags: Vec<(String, String)>,
        fields: Vec<(String, Value)>,
        timestamp: Option<i64>,
    },
    Refused,
}

/// A field's value, with floats compared by their bits.
#[derive(Debug, PartialEq)]
enum Value {
    Float(u64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    String(String),
}

/// The timestamp Boulder gives a point without one.
const NO_TIMESTAMP: i64 = i64::MIN + 7;

fn boulder_reads(line: &str) -> Read {
    let mut batch = Batch::new();
    let source = batch.source("t", Format::InfluxLine);
    let errors = decode(
        line.as_bytes(),
        Precision::Ns,
        NO_TIMESTAMP,
        source,
        &mut batch,
    );
    if !errors.is_empty() || batch.len() != 1 {
        return Read::Refused;
    }
    let p = batch.point(0);
    Read::Point {
        measurement: p.measurement().to_owned(),
        tags: p
            .tags()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        fields: p
            .fields()
            .map(|(k, v)| {
                let value = match v {
                    FieldValue::Float(f) => Value::Float(f.to_bits()),
                    FieldValue::Int(i) => Value::Int(i),
                    FieldValue::UInt(u) => Value::UInt(u),
                    FieldValue::Bool(b) => Value::Bool(b),
                    FieldValue::String(s) => Value::String(s.to_owned()),
                };
                (k.to_owned(), value)
            })
            .collect(),
        timestamp: Some(p.timestamp_ns()).filter(|&t| t != NO_TIMESTAMP),
    }
}

fn iox_reads(line: &str) -> Read {
    let parsed: Vec<_> = iox::parse_lines(line).collect();
    let [Ok(p)] = parsed.as_slice() else {
        return Read::Refused;
    };
    Read::Point {
        measurement: p.series.measurement.to_string(),
        tags: p
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        fields: p
            .field_set
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    iox::FieldValue::F64(f) => Value::Float(f.to_bits()),
                    iox::FieldValue::I64(i) => Value::Int(*i),
                    iox::FieldValue::U64(u) => Value::UInt(*u),
                    iox::FieldValue::Boolean(b) => Value::Bool(*b),
                    iox::FieldValue::String(s) => Value::String(s.to_string()),
                };
                (k.to_string(), value)
            })
            .collect(),
        timestamp: p.timestamp,
    }
}

/// A name: letters, the characters line protocol escapes (escaped, or a bare
/// `=` or `"`, so that some lines are wrong; no bare comma or space, see the
/// top), and a backslash before an ordinary letter (which stays itself).
fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            6 => "[a-zA-Z0-9_.:-]",
            1 => Just(r"\ ".to_owned()),
            1 => Just(r"\,".to_owned()),
            1 => Just(r"\=".to_owned()),
            1 => Just(r"\a".to_owned()),
            1 => Just("=".to_owned()),
            1 => Just("\"".to_owned()),
            1 => Just("é".to_owned()),
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

/// A field value as line protocol writes it, sometimes wrong.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|f| f.to_string()),
        (-1e6f64..1e6).prop_map(|f| format!("{f:e}")),
        any::<i64>().prop_map(|i| format!("{i}i")),
        any::<u64>().prop_map(|u| format!("{u}u")),
        Just("-0".to_owned()),
        Just("+1".to_owned()),
        Just("+1i".to_owned()),
        Just("1e+5".to_owned()),
        prop::sample::select(vec![
            "t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE", "tRUE", "yes",
        ])
        .prop_map(str::to_owned),
        prop::collection::vec(
            prop_oneof![
                Just("a"),
                Just(" "),
                Just(","),
                Just("="),
                Just(r#"\""#),
                Just(r"\\")
            ],
            0..6
        )
        .prop_map(|s| format!("\"{}\"", s.concat())),
        Just(r#""a\"b\\c""#.to_owned()),
        Just("12x".to_owned()),
        Just("-9223372036854775809i".to_owned()),
        Just("18446744073709551616u".to_owned()),
        Just("-1u".to_owned()),
    ]
}

/// A line: measurement, tags, fields with keys of their own, an optional
/// timestamp within `i64`.
fn line() -> impl Strategy<Value = String> {
    (
        // Never empty: an empty one leaves the line to start with its fields, which
        // IOx's parser then reads as a measurement and keys with bare commas.
        ("[a-z]", name()).prop_map(|(first, rest)| first + &rest),
        prop::collection::vec((name(), name()), 0..3),
        prop::collection::vec(value(), 0..4),
        prop::option::of(prop_oneof![
            4 => any::<i64>().prop_map(|t| t.to_string()),
            2 => (-10i64..10).prop_map(|t| t.to_string()),
            1 => prop::sample::select(vec!["+5", "1.5", "-", "9223372036854775808", "5x"])
                .prop_map(str::to_owned),
        ]),
    )
        .prop_map(|(measurement, tags, values, timestamp)| {
            let mut line = measurement;
            for (k, v) in tags {
                line += &format!(",{k}={v}");
            }
            let fields: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(i, v)| format!("f{i}={v}"))
                .collect();
            if !fields.is_empty() {
                line += " ";
                line += &fields.join(",");
            }
            if let Some(t) = timestamp {
                line += &format!(" {t}");
            }
            line
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn agrees_with_influxdatas_parser(line in line()) {
        prop_assert_eq!(boulder_reads(&line), iox_reads(&line), "{}", line);
    }
}
