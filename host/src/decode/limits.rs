//! Timestamps at and past the limits of 64-bit nanoseconds, through every decoder
//! and every precision: a timestamp that fits is kept exactly, one that does not
//! is refused with [`TIMESTAMP_OUT_OF_RANGE`] (its point dead-lettered), and
//! nothing wraps or panics.

use super::{decode, Precision, TIMESTAMP_OUT_OF_RANGE};
use boulder_batch::{Batch, Format};
use proptest::prelude::*;

const PRECISIONS: [Precision; 4] = [Precision::Ns, Precision::Us, Precision::Ms, Precision::S];

/// Decodes one message; the point's timestamp, or the reason it was refused
/// (without the place in the message some decoders put before it).
fn one(format: Format, precision: Precision, message: &str) -> Result<i64, String> {
    let mut batch = Batch::new();
    let source = batch.source("t", format);
    let errors = decode(format, precision, message.as_bytes(), 7, source, &mut batch);
    batch.validate().expect("decoders write valid batches");
    match (batch.len(), errors.as_slice()) {
        (1, []) => Ok(batch.points[0].timestamp_ns),
        (0, [error]) if error.reason.ends_with(TIMESTAMP_OUT_OF_RANGE) => {
            Err(TIMESTAMP_OUT_OF_RANGE.to_owned())
        }
        (0, [error]) => Err(error.reason.clone()),
        _ => panic!("{message}: {} points, errors {errors:?}", batch.len()),
    }
}

/// What a timestamp of `value` units should decode to.
fn expected(value: i64, unit: Precision) -> Result<i64, String> {
    value
        .checked_mul(unit.nanos())
        .ok_or_else(|| TIMESTAMP_OUT_OF_RANGE.to_owned())
}

/// Integers near the limits of `unit` (the largest and smallest value whose
/// nanoseconds fit, give or take a few), and anywhere in `i64`.
fn near_the_limits(unit: Precision) -> impl Strategy<Value = i64> {
    let (max, min) = (i64::MAX / unit.nanos(), i64::MIN / unit.nanos());
    prop_oneof![
        (-3i64..=3).prop_map(move |d| max.saturating_add(d)),
        (-3i64..=3).prop_map(move |d| min.saturating_add(d)),
        any::<i64>(),
    ]
}

#[test]
fn the_limits_themselves() {
    for unit in PRECISIONS {
        let max = i64::MAX / unit.nanos();
        let line = |t: i64| one(Format::InfluxLine, unit, &format!("m v=1 {t}"));
        assert_eq!(line(max), Ok(max * unit.nanos()), "{unit:?}");
        if unit != Precision::Ns {
            assert_eq!(
                line(max + 1),
                Err(TIMESTAMP_OUT_OF_RANGE.into()),
                "{unit:?}"
            );
        }
    }
    // The report: ten digits of seconds, "9999999999", wrapped to a year before 1970.
    let tsdb = |t: &str| {
        let message = format!(r#"{{"metric":"m","timestamp":{t},"value":1}}"#);
        one(Format::OpentsdbJson, Precision::Ns, &message)
    };
    assert_eq!(tsdb("9999999999"), Err(TIMESTAMP_OUT_OF_RANGE.into()));
    assert_eq!(tsdb("9223372036"), Ok(9_223_372_036_000_000_000));
    assert_eq!(tsdb("9223372037"), Err(TIMESTAMP_OUT_OF_RANGE.into()));
    assert_eq!(tsdb("9223372036854"), Ok(9_223_372_036_854_000_000));
    assert_eq!(tsdb("9999999999999"), Err(TIMESTAMP_OUT_OF_RANGE.into()));
    let prom = |t: &str| {
        let message = format!(r#"{{"name":"m","labels":{{}},"value":"1","timestamp":"{t}"}}"#);
        one(Format::PrometheusJson, Precision::Ns, &message)
    };
    assert_eq!(
        prom("2262-04-11T23:47:16.854775807Z"),
        Ok(i64::MAX),
        "the last nanosecond"
    );
    assert_eq!(
        prom("2262-04-11T23:47:16.854775808Z"),
        Err(TIMESTAMP_OUT_OF_RANGE.into())
    );
    assert_eq!(prom("1677-09-21T00:12:43.145224192Z"), Ok(i64::MIN));
    assert_eq!(
        prom("1677-09-21T00:12:43.145224191Z"),
        Err(TIMESTAMP_OUT_OF_RANGE.into())
    );
    assert_eq!(
        prom("9999-12-31T23:59:59Z"),
        Err(TIMESTAMP_OUT_OF_RANGE.into())
    );
}

proptest! {
    #[test]
    fn line_protocol_keeps_or_refuses_every_integer_timestamp(
        (unit, t) in proptest::sample::select(PRECISIONS.to_vec())
            .prop_flat_map(|unit| (Just(unit), near_the_limits(unit)))
    ) {
        prop_assert_eq!(one(Format::InfluxLine, unit, &format!("m v=1 {t}")), expected(t, unit));
    }

    #[test]
    fn telegraf_json_keeps_or_refuses_every_integer_timestamp(
        (unit, t) in proptest::sample::select(PRECISIONS.to_vec())
            .prop_flat_map(|unit| (Just(unit), near_the_limits(unit)))
    ) {
        let message = format!(r#"{{"name":"m","fields":{{"v":1}},"timestamp":{t}}}"#);
        prop_assert_eq!(one(Format::InfluxJson, unit, &message), expected(t, unit));
    }

    #[test]
    fn telegraf_json_never_wraps_a_fractional_timestamp(
        unit in proptest::sample::select(PRECISIONS.to_vec()),
        t in prop_oneof![any::<f64>(), -1e19f64..1e19f64, -1e10f64..1e10f64],
    ) {
        let message = format!(r#"{{"name":"m","fields":{{"v":1}},"timestamp":{t:?}}}"#);
        let exact = t * unit.nanos() as f64;
        match one(Format::InfluxJson, unit, &message) {
            // Kept: the same instant, within a nanosecond per unit of float error.
            Ok(ns) => prop_assert!(
                (ns as f64 - exact).abs() <= exact.abs() * 1e-15 + 1.0,
                "{} -> {}", t, ns
            ),
            // Refused: out of range, or not a number JSON has (NaN, inf).
            Err(reason) => prop_assert!(
                !t.is_finite() || exact.abs() >= 9.2e18,
                "{} refused: {}", t, reason
            ),
        }
    }

    #[test]
    fn opentsdb_keeps_or_refuses_seconds_and_milliseconds(
        t in prop_oneof![
            0i64..=9_999_999_999,
            9_223_372_030i64..=9_223_372_040,
            1_000_000_000_000i64..=9_999_999_999_999,
            9_223_372_036_850i64..=9_223_372_036_860,
        ]
    ) {
        let unit = if t < 10_000_000_000 { Precision::S } else { Precision::Ms };
        let message = format!(r#"{{"metric":"m","timestamp":{t},"value":1}}"#);
        prop_assert_eq!(one(Format::OpentsdbJson, Precision::Ns, &message), expected(t, unit));
    }

    #[test]
    fn prometheus_keeps_or_refuses_every_rfc3339_timestamp(
        year in 1000i32..=9999,
        (month, day) in (1u8..=12, 1u8..=28),
        (hour, minute, second) in (0u8..24, 0u8..60, 0u8..60),
        nanos in 0u32..1_000_000_000,
    ) {
        let text = format!(
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}Z"
        );
        let instant = time::OffsetDateTime::parse(
            &text,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let want = i64::try_from(instant.unix_timestamp_nanos())
            .map_err(|_| TIMESTAMP_OUT_OF_RANGE.to_owned());
        let message = format!(r#"{{"name":"m","labels":{{}},"value":"1","timestamp":"{text}"}}"#);
        prop_assert_eq!(one(Format::PrometheusJson, Precision::Ns, &message), want);
    }
}
