//! Decoding Kafka messages (or files) into batches of points, in the host: one
//! trusted parser per format, writing straight into the flat [`boulder_batch::Batch`].
//!
//! A decoder never panics on any input. A message with many lines that has a bad
//! line reports that line (number, byte range, reason) and keeps the others.

pub mod influx_line;
mod json;
pub mod json_formats;
#[cfg(test)]
mod limits;

use serde::Deserialize;
use std::fmt;
use std::ops::Range;

/// Why a point whose timestamp does not fit is dead-lettered: Boulder keeps
/// timestamps as signed 64-bit nanoseconds since the epoch, as InfluxDB does.
pub const TIMESTAMP_OUT_OF_RANGE: &str = "timestamp out of range: it must fall between \
     1677-09-21T00:12:43Z and 2262-04-11T23:47:16Z (64-bit nanoseconds)";

/// The unit of timestamps in the input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Nanoseconds (Influx's default).
    #[default]
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl Precision {
    /// Nanoseconds per unit.
    pub fn nanos(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
        }
    }

    /// The name used in the config: `ns`, `us`, `ms` or `s`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "us",
            Precision::Ms => "ms",
            Precision::S => "s",
        }
    }

    /// A timestamp in this unit as nanoseconds, if it fits in an `i64`.
    pub fn to_nanos(self, value: i64) -> Option<i64> {
        value.checked_mul(self.nanos())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Precision, String> {
        match s {
            "ns" => Ok(Precision::Ns),
            "us" => Ok(Precision::Us),
            "ms" => Ok(Precision::Ms),
            "s" => Ok(Precision::S),
            other => Err(format!(
                "unknown precision {other:?}: expected ns, us, ms or s"
            )),
        }
    }
}

/// One part of a message that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// 1-based line number within the message (1 for single-document formats).
    pub line: usize,
    /// Byte range of the bad part within the message, so the original bytes can be
    /// dead-lettered.
    pub bytes: Range<usize>,
    /// What is wrong, without the data.
    pub reason: String,
}

impl DecodeError {
    /// The error for a message with nothing in it but whitespace: a producer bug
    /// worth seeing, not silence.
    pub fn empty_message(message: &[u8]) -> Option<DecodeError> {
        message
            .iter()
            .all(u8::is_ascii_whitespace)
            .then(|| DecodeError {
                line: 1,
                bytes: 0..message.len(),
                reason: "empty message".to_owned(),
            })
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one message of `format` into `batch`, as points of `source`. Points
/// without a timestamp get `default_timestamp_ns`. Returns the parts that could not
/// be decoded; everything else is in the batch.
pub fn decode(
    format: boulder_batch::Format,
    precision: Precision,
    message: &[u8],
    default_timestamp_ns: i64,
    source: u32,
    batch: &mut boulder_batch::Batch,
) -> Vec<DecodeError> {
    use boulder_batch::Format;
    match format {
        Format::InfluxLine => {
            influx_line::decode(message, precision, default_timestamp_ns, source, batch)
        }
        Format::InfluxJson => json_formats::decode_influx_json(
            message,
            precision,
            default_timestamp_ns,
            source,
            batch,
        ),
        Format::PrometheusJson => json_formats::decode_prometheus_json(message, source, batch),
        Format::OpentsdbJson => json_formats::decode_opentsdb_json(message, source, batch),
    }
}
