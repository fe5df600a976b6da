//! The JSON formats: Telegraf's influx JSON, prometheus-kafka-adapter JSON and
//! OpenTSDB's put JSON.
//!
//! A message may hold one document or several (concatenated or newline-delimited);
//! a document that cannot be decoded is reported with its byte range and the others
//! are kept. Inside a Telegraf batch or an OpenTSDB array, an entry that is valid
//! JSON but not a usable point is reported alone.

use super::json::{parse_float, push_point, reason, Key, OneOrMany, Ordered, Scalar};
use super::{DecodeError, Precision, TIMESTAMP_OUT_OF_RANGE};
use boulder_batch::{Batch, FieldValue};
use serde::Deserialize;
use std::ops::Range;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Where a document sits in its message, for errors.
struct Doc<'m> {
    message: &'m [u8],
    bytes: Range<usize>,
}

impl Doc<'_> {
    fn error(&self, reason: impl Into<String>) -> DecodeError {
        let line = 1 + self.message[..self.bytes.start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        DecodeError {
            line,
            bytes: self.bytes.clone(),
            reason: reason.into(),
        }
    }
}

/// Runs `each` on every JSON document of a message.
fn documents<'m, T: Deserialize<'m>>(
    message: &'m [u8],
    errors: &mut Vec<DecodeError>,
    mut each: impl FnMut(T, &Doc<'m>, &mut Vec<DecodeError>),
) {
    if let Some(empty) = DecodeError::empty_message(message) {
        errors.push(empty);
        return;
    }
    let mut stream = serde_json::Deserializer::from_slice(message).into_iter::<T>();
    let mut start = 0;
    while let Some(next) = stream.next() {
        let end = stream.byte_offset();
        let doc = Doc {
            message,
            bytes: start + leading_space(&message[start..end])..end,
        };
        match next {
            Ok(value) => each(value, &doc, errors),
            Err(e) => {
                // The stream cannot resynchronise after a syntax error: the rest of
                // the message is one bad document.
                let doc = Doc {
                    message,
                    bytes: doc.bytes.start..message.len(),
                };
                errors.push(doc.error(reason(&e)));
                return;
            }
        }
        start = end;
    }
}

fn leading_space(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_whitespace()).count()
}

// ---- Telegraf influx JSON ----

/// A single metric or a batch: every key optional, checked after parsing.
#[derive(Deserialize)]
struct TelegrafDoc<'a> {
    #[serde(borrow, default)]
    metrics: Option<Vec<TelegrafMetric<'a>>>,
    #[serde(borrow, default)]
    name: Option<Key<'a>>,
    #[serde(borrow, default)]
    tags: Option<Ordered<'a, Key<'a>>>,
    #[serde(borrow, default)]
    fields: Option<Ordered<'a, Scalar<'a>>>,
    #[serde(borrow, default)]
    timestamp: Option<Scalar<'a>>,
}

#[derive(Deserialize)]
struct TelegrafMetric<'a> {
    #[serde(borrow)]
    name: Key<'a>,
    #[serde(borrow, default)]
    tags: Option<Ordered<'a, Key<'a>>>,
    #[serde(borrow)]
    fields: Ordered<'a, Scalar<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<Scalar<'a>>,
}

/// Telegraf's JSON serializer: `{"name","tags","fields","timestamp"}` or a batch
/// `{"metrics":[...]}`; timestamps in `precision` (Telegraf's `json_timestamp_units`).
pub fn decode_influx_json(
    message: &[u8],
    precision: Precision,
    default_timestamp_ns: i64,
    source: u32,
    batch: &mut Batch,
) -> Vec<DecodeError> {
    let mut errors = Vec::new();
    documents(message, &mut errors, |doc: TelegrafDoc<'_>, at, errors| {
        let metrics = match doc.metrics {
            Some(metrics) => metrics,
            None => {
                let TelegrafDoc {
                    name,
                    tags,
                    fields,
                    timestamp,
                    ..
                } = doc;
                match (name, fields) {
                    (Some(name), Some(fields)) => vec![TelegrafMetric {
                        name,
                        tags,
                        fields,
                        timestamp,
                    }],
                    _ => {
                        errors.push(
                            at.error("neither a metric (name, fields) nor a batch (metrics)"),
                        );
                        return;
                    }
                }
            }
        };
        for (i, m) in metrics.iter().enumerate() {
            let result = telegraf_metric(m, precision, default_timestamp_ns, source, batch);
            if let Err(reason) = result {
                errors.push(at.error(format!("metrics[{i}]: {reason}")));
            }
        }
    });
    errors
}

fn telegraf_metric(
    m: &TelegrafMetric<'_>,
    precision: Precision,
    default_timestamp_ns: i64,
    source: u32,
    batch: &mut Batch,
) -> Result<(), String> {
    let timestamp_ns = match &m.timestamp {
        None | Some(Scalar::Null) => default_timestamp_ns,
        Some(Scalar::Int(t)) => precision.to_nanos(*t).ok_or(TIMESTAMP_OUT_OF_RANGE)?,
        Some(Scalar::Float(t)) => scale_float(*t, precision).ok_or(TIMESTAMP_OUT_OF_RANGE)?,
        Some(_) => return Err("timestamp is not a number".into()),
    };
    let fields: Vec<(&str, FieldValue<'_>)> = m
        .fields
        .0
        .iter()
        .filter_map(|(k, v)| Some((k.as_ref(), v.as_field()?)))
        .collect();
    let tags = m
        .tags
        .iter()
        .flat_map(|t| t.0.iter().map(|(k, v)| (k.as_ref(), v.0.as_ref())));
    if m.name.0.is_empty() {
        return Err("empty name".into());
    }
    if !push_point(batch, &m.name.0, tags, &fields, timestamp_ns, source) {
        return Err("no fields".into());
    }
    Ok(())
}

/// A fractional timestamp in nanoseconds, scaling the whole and the fractional
/// part apart so that large millisecond values keep their precision.
fn scale_float(t: f64, precision: Precision) -> Option<i64> {
    if !t.is_finite() || t.abs() >= i64::MAX as f64 {
        return None;
    }
    let whole = precision.to_nanos(t.trunc() as i64)?;
    let fraction = (t.fract() * precision.nanos() as f64).round() as i64;
    whole.checked_add(fraction)
}

// ---- prometheus-kafka-adapter JSON ----

#[derive(Deserialize)]
struct PromSample<'a> {
    #[serde(borrow, default)]
    name: Option<Key<'a>>,
    #[serde(borrow, default)]
    labels: Option<Ordered<'a, Key<'a>>>,
    #[serde(borrow)]
    value: Scalar<'a>,
    #[serde(borrow)]
    timestamp: Key<'a>,
}

/// prometheus-kafka-adapter: `{"timestamp":"RFC 3339","value":"1.5","name":"up",
/// "labels":{"__name__":"up",...}}`. The point is `name value=v` with the labels
/// (but `__name__`) as tags: one Prometheus series, named as in Prometheus.
pub fn decode_prometheus_json(message: &[u8], source: u32, batch: &mut Batch) -> Vec<DecodeError> {
    let mut errors = Vec::new();
    documents(message, &mut errors, |s: PromSample<'_>, at, errors| {
        if let Err(reason) = prometheus_sample(&s, source, batch) {
            errors.push(at.error(reason));
        }
    });
    errors
}

fn prometheus_sample(s: &PromSample<'_>, source: u32, batch: &mut Batch) -> Result<(), String> {
    let labels = s.labels.as_ref().map(|l| l.0.as_slice()).unwrap_or(&[]);
    let name = match &s.name {
        Some(name) => name.0.as_ref(),
        None => labels
            .iter()
            .find(|(k, _)| k == "__name__")
            .map(|(_, v)| v.0.as_ref())
            .ok_or("no name")?,
    };
    if name.is_empty() {
        return Err("empty name".into());
    }
    let value = s.value.to_f64().ok_or("value is not a number")?;
    let timestamp_ns = rfc3339_nanos(&s.timestamp.0)?;
    let tags = labels
        .iter()
        .filter(|(k, _)| k != "__name__")
        .map(|(k, v)| (k.as_ref(), v.0.as_ref()));
    push_point(
        batch,
        name,
        tags,
        &[("value", FieldValue::Float(value))],
        timestamp_ns,
        source,
    );
    Ok(())
}

fn rfc3339_nanos(s: &str) -> Result<i64, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| "timestamp is not RFC 3339")?;
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| TIMESTAMP_OUT_OF_RANGE.into())
}

// ---- OpenTSDB JSON ----

#[derive(Deserialize)]
struct TsdbPut<'a> {
    #[serde(borrow)]
    metric: Key<'a>,
    #[serde(borrow)]
    timestamp: Scalar<'a>,
    #[serde(borrow)]
    value: Scalar<'a>,
    #[serde(borrow, default)]
    tags: Option<Ordered<'a, Key<'a>>>,
}

/// OpenTSDB's put: `{"metric","timestamp","value","tags"}` or an array of them;
/// timestamps in seconds (up to 10 digits) or milliseconds (13 digits); values
/// numbers or numeric strings.
pub fn decode_opentsdb_json(message: &[u8], source: u32, batch: &mut Batch) -> Vec<DecodeError> {
    let mut errors = Vec::new();
    documents(
        message,
        &mut errors,
        |doc: OneOrMany<TsdbPut<'_>>, at, errors| {
            let many = matches!(doc, OneOrMany::Many(_));
            for (i, put) in doc.into_vec().iter().enumerate() {
                if let Err(reason) = opentsdb_put(put, source, batch) {
                    let reason = if many {
                        format!("[{i}]: {reason}")
                    } else {
                        reason
                    };
                    errors.push(at.error(reason));
                }
            }
        },
    );
    errors
}

fn opentsdb_put(p: &TsdbPut<'_>, source: u32, batch: &mut Batch) -> Result<(), String> {
    if p.metric.0.is_empty() {
        return Err("empty metric".into());
    }
    let raw = match &p.timestamp {
        Scalar::Int(t) => *t,
        Scalar::String(s) => s.parse().map_err(|_| "timestamp is not an integer")?,
        _ => return Err("timestamp is not an integer".into()),
    };
    let digits = raw.checked_abs().map_or(19, |t| t.to_string().len());
    let unit = match (raw >= 0, digits) {
        (true, 0..=10) => Precision::S,
        (true, 13) => Precision::Ms,
        _ => return Err("timestamp must be seconds (up to 10 digits) or milliseconds (13)".into()),
    };
    // Ten digits of seconds reach past 2262, the end of 64-bit nanoseconds.
    let timestamp_ns = unit.to_nanos(raw).ok_or(TIMESTAMP_OUT_OF_RANGE)?;
    let value = match &p.value {
        Scalar::Int(v) => FieldValue::Int(*v),
        Scalar::UInt(v) => FieldValue::UInt(*v),
        Scalar::Float(v) => FieldValue::Float(*v),
        Scalar::String(s) => match s.parse::<i64>() {
            Ok(v) => FieldValue::Int(v),
            Err(_) => FieldValue::Float(parse_float(s).ok_or("value is not a number")?),
        },
        _ => return Err("value is not a number".into()),
    };
    let tags = p
        .tags
        .iter()
        .flat_map(|t| t.0.iter().map(|(k, v)| (k.as_ref(), v.0.as_ref())));
    push_point(
        batch,
        &p.metric.0,
        tags,
        &[("value", value)],
        timestamp_ns,
        source,
    );
    Ok(())
}

#[cfg(test)]
mod tests;
