//! Native tests for transforms: build points, run a transform over them through the
//! same batch encoding the host uses, and compare what comes out.
//!
//! ```
//! use boulder_guest_sdk::testing::{point, run};
//! # use boulder_guest_sdk::{Params, Point, Transform, Verdict};
//! # struct Upper;
//! # impl Transform for Upper {
//! #     fn init(_: Params) -> Result<Self, String> { Ok(Upper) }
//! #     fn process(&mut self, p: &mut Point<'_>) -> Verdict {
//! #         let m = p.measurement().to_uppercase();
//! #         p.set_measurement(&m);
//! #         Verdict::Keep
//! #     }
//! # }
//! let out = run(&mut Upper, &[point("cpu").tag("host", "a").field("usage", 0.5)]);
//! assert_eq!(out.kept, vec![point("CPU").tag("host", "a").field("usage", 0.5)]);
//! ```

use crate::run::process_bytes;
use crate::{Transform, Verdict};
use boulder_batch::{codec, Batch, FieldValue, Format};

/// An owned field value, for building and comparing test points.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// 64-bit float.
    Float(f64),
    /// Signed integer.
    Int(i64),
    /// Unsigned integer.
    UInt(u64),
    /// Boolean.
    Bool(bool),
    /// String.
    String(String),
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::UInt(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_owned())
    }
}
impl From<FieldValue<'_>> for Value {
    fn from(v: FieldValue<'_>) -> Value {
        match v {
            FieldValue::Float(v) => Value::Float(v),
            FieldValue::Int(v) => Value::Int(v),
            FieldValue::UInt(v) => Value::UInt(v),
            FieldValue::Bool(v) => Value::Bool(v),
            FieldValue::String(v) => Value::String(v.to_owned()),
        }
    }
}

impl Value {
    fn as_field(&self) -> FieldValue<'_> {
        match self {
            Value::Float(v) => FieldValue::Float(*v),
            Value::Int(v) => FieldValue::Int(*v),
            Value::UInt(v) => FieldValue::UInt(*v),
            Value::Bool(v) => FieldValue::Bool(*v),
            Value::String(v) => FieldValue::String(v),
        }
    }
}

/// An owned point. Built with [`point`] and its chained setters; compared as a whole.
#[derive(Clone, Debug, PartialEq)]
pub struct TestPoint {
    /// The measurement.
    pub measurement: String,
    /// The tags, in order.
    pub tags: Vec<(String, String)>,
    /// The fields, in order.
    pub fields: Vec<(String, Value)>,
    /// Nanoseconds since the Unix epoch (default 0).
    pub timestamp_ns: i64,
    /// Source topic (default `test`).
    pub topic: String,
    /// Source format (default influx line protocol).
    pub format: Format,
    /// The routed tenant (default empty).
    pub tenant: String,
}

/// Names for testing a scan of names: every ASCII byte at every position of
/// names of 1 to 19 bytes whose other bytes are `a`, with that byte.
///
/// Names are scanned in words of up to eight bytes (see [`crate::scan`]), so these
/// lengths put the byte in every position of one, two and three words.
pub fn ascii_names() -> impl Iterator<Item = (u8, String)> {
    (0..0x80u8).flat_map(|b| {
        (1..20).flat_map(move |n| {
            (0..n).map(move |at| {
                let mut name = "a".repeat(n).into_bytes();
                name[at] = b;
                (b, String::from_utf8(name).expect("ASCII"))
            })
        })
    })
}

/// A point with this measurement, no tags and no fields.
pub fn point(measurement: &str) -> TestPoint {
    TestPoint {
        measurement: measurement.to_owned(),
        tags: Vec::new(),
        fields: Vec::new(),
        timestamp_ns: 0,
        topic: "test".to_owned(),
        format: Format::InfluxLine,
        tenant: String::new(),
    }
}

impl TestPoint {
    /// Adds a tag.
    pub fn tag(mut self, key: &str, value: &str) -> TestPoint {
        self.tags.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a field.
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> TestPoint {
        self.fields.push((key.to_owned(), value.into()));
        self
    }

    /// Sets the timestamp.
    pub fn timestamp(mut self, ns: i64) -> TestPoint {
        self.timestamp_ns = ns;
        self
    }

    /// Sets the source topic.
    pub fn topic(mut self, topic: &str) -> TestPoint {
        self.topic = topic.to_owned();
        self
    }

    /// Sets the source format.
    pub fn format(mut self, format: Format) -> TestPoint {
        self.format = format;
        self
    }

    /// Sets the routed tenant.
    pub fn tenant(mut self, tenant: &str) -> TestPoint {
        self.tenant = tenant.to_owned();
        self
    }
}

/// Encodes test points as a batch, the way the host does.
pub fn to_batch(points: &[TestPoint]) -> Batch {
    let mut batch = Batch::new();
    for (i, p) in points.iter().enumerate() {
        let source = batch.source(&p.topic, p.format);
        let measurement = batch.push_str(&p.measurement);
        batch.begin_point(measurement, p.timestamp_ns, source);
        for (k, v) in &p.tags {
            let (k, v) = (batch.push_str(k), batch.push_str(v));
            batch.push_tag(k, v);
        }
        for (k, v) in &p.fields {
            batch.push_field_value(k, v.as_field());
        }
        let tenant = batch.push_str(&p.tenant);
        let record = batch.points.last_mut().expect("just pushed");
        record.tenant = tenant;
        record.origin = i as u32;
    }
    batch
}

/// Reads every point of a batch back as test points.
pub fn from_batch(batch: &Batch) -> Vec<TestPoint> {
    batch
        .iter()
        .map(|p| TestPoint {
            measurement: p.measurement().to_owned(),
            tags: p
                .tags()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            fields: p.fields().map(|(k, v)| (k.to_owned(), v.into())).collect(),
            timestamp_ns: p.timestamp_ns(),
            topic: p.source_topic().to_owned(),
            format: p.format().unwrap_or(Format::InfluxLine),
            tenant: p.tenant().to_owned(),
        })
        .collect()
}

/// What a transform made of a batch of test points.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The kept points, in order.
    pub kept: Vec<TestPoint>,
    /// For each kept point, the index of the input point it came from.
    pub origins: Vec<usize>,
    /// The rejected input points: index and verdict.
    pub rejected: Vec<(usize, Verdict)>,
}

impl Output {
    /// The dropped input points, as `(index, reason)`.
    pub fn dropped(&self) -> Vec<(usize, &str)> {
        self.with(|v| matches!(v, Verdict::Drop(_)))
    }

    /// The dead-lettered input points, as `(index, reason)`.
    pub fn dead_lettered(&self) -> Vec<(usize, &str)> {
        self.with(|v| matches!(v, Verdict::DeadLetter(_)))
    }

    fn with(&self, which: impl Fn(&Verdict) -> bool) -> Vec<(usize, &str)> {
        self.rejected
            .iter()
            .filter(|(_, v)| which(v))
            .map(|(i, v)| (*i, v.reason()))
            .collect()
    }
}

/// Runs a transform over test points, through the batch encoding and decoding the
/// component uses, and checks that its output is a valid batch.
pub fn run<T: Transform>(transform: &mut T, points: &[TestPoint]) -> Output {
    let input = codec::encode(&to_batch(points));
    codec::check(&input).expect("valid test batch");
    // SAFETY: checked just above.
    let Ok((output, rejections)) = (unsafe { process_bytes(transform, input) }) else {
        panic!("the SDK could not read a valid batch");
    };
    let output = codec::decode(&output).expect("the SDK writes valid batches");
    Output {
        kept: from_batch(&output),
        origins: output.points.iter().map(|p| p.origin as usize).collect(),
        rejected: rejections
            .into_iter()
            .map(|r| (r.point as usize, r.verdict))
            .collect(),
    }
}
