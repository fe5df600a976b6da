//! Read-only typed views over a point of a [`Batch`].

use crate::{Batch, Format, PointRecord};

/// The value of a field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FieldValue<'a> {
    /// 64-bit float (may be NaN or infinite).
    Float(f64),
    /// Signed 64-bit integer.
    Int(i64),
    /// Unsigned 64-bit integer.
    UInt(u64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    String(&'a str),
}

impl FieldValue<'_> {
    /// The value as a float, if it is numeric or boolean (strings are not).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            FieldValue::Float(v) => Some(v),
            FieldValue::Int(v) => Some(v as f64),
            FieldValue::UInt(v) => Some(v as f64),
            FieldValue::Bool(v) => Some(if v { 1.0 } else { 0.0 }),
            FieldValue::String(_) => None,
        }
    }
}

/// A read-only view of one point.
#[derive(Clone, Copy, Debug)]
pub struct PointRef<'a> {
    batch: &'a Batch,
    record: &'a PointRecord,
}

impl<'a> PointRef<'a> {
    #[inline]
    pub(crate) fn new(batch: &'a Batch, index: usize) -> PointRef<'a> {
        PointRef {
            batch,
            record: &batch.points[index],
        }
    }

    /// The underlying record.
    #[inline]
    pub fn record(&self) -> &'a PointRecord {
        self.record
    }

    /// The measurement (metric name).
    #[inline]
    pub fn measurement(&self) -> &'a str {
        self.batch.str(self.record.measurement)
    }

    /// The tags, as `(key, value)`, in order.
    #[inline]
    pub fn tags(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + 'a {
        let batch = self.batch;
        batch
            .tags_of(self.record)
            .iter()
            .map(move |t| (batch.str(t.key), batch.str(t.value)))
    }

    /// The value of the first tag with this key.
    pub fn tag(&self, key: &str) -> Option<&'a str> {
        self.tags().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The fields, as `(key, value)`, in order.
    #[inline]
    pub fn fields(&self) -> impl ExactSizeIterator<Item = (&'a str, FieldValue<'a>)> + 'a {
        let batch = self.batch;
        batch
            .fields_of(self.record)
            .iter()
            .map(move |f| (batch.str(f.key), batch.field_value(f)))
    }

    /// The value of the first field with this key.
    pub fn field(&self, key: &str) -> Option<FieldValue<'a>> {
        self.fields().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Nanoseconds since the Unix epoch.
    #[inline]
    pub fn timestamp_ns(&self) -> i64 {
        self.record.timestamp_ns
    }

    /// The topic the point was read from.
    #[inline]
    pub fn source_topic(&self) -> &'a str {
        self.batch
            .sources
            .get(self.record.source as usize)
            .map(|s| self.batch.str(s.topic))
            .unwrap_or("")
    }

    /// The wire format the point was decoded from.
    #[inline]
    pub fn format(&self) -> Option<Format> {
        self.batch
            .sources
            .get(self.record.source as usize)
            .and_then(|s| Format::from_code(s.format))
    }

    /// The tenant the router assigned; empty before routing.
    #[inline]
    pub fn tenant(&self) -> &'a str {
        self.batch.str(self.record.tenant)
    }

    /// The host's opaque reference to the point's origin.
    #[inline]
    pub fn origin(&self) -> u32 {
        self.record.origin
    }
}
