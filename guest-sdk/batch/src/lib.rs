//! The flat batch of points that the Boulder host and its guests exchange.
//!
//! One call crosses the sandbox per batch, as bytes. What costs across that boundary
//! is not the copy but allocating and (de)serialising every string of every point, so
//! the batch is laid out flat: one UTF-8 string arena, and arrays of fixed-size
//! records that refer to the arena and to each other by [`Span`]s. The decoder in the
//! host writes points straight into it, guests read typed views over it, a stage that
//! renames something appends the new string to the arena and rewrites one span, and
//! the host encodes line protocol straight from it.
//!
//! - [`codec`]: the wire encoding (bincode 2.0.1, fixed-size little-endian integers);
//! - [`Batch`]: the records, with a builder API for writers and views for readers;
//! - [`Batch::validate`] and [`codec::check`]: the checks that make untrusted
//!   bytes safe to read, on a batch or on its encoding in place.
//!
//! This crate is part of the `boulder:transform@0.1.0` contract: changing a record
//! changes the wire format and bumps that version.
#![deny(missing_docs)]
// Two unsafe operations, both in the codec: copying records out of the wire
// without zeroing their vector first, and `decode_checked`'s arena for bytes that
// the host has checked.
#![deny(unsafe_code)]

pub mod codec;

/// Room for the strings of an arena of `len` bytes and a quarter more, and
/// ([`room_for_records`]) for `len` tag or field records and an eighth more. A
/// stage's answer starts as its input's strings and records, and a full vector
/// would be copied whole to grow by the first string a stage renames (as every
/// stage of the benchmark's chain does) or the first record it adds.
pub(crate) fn room_for_strings(len: usize) -> usize {
    len + len / 4 + 16
}

/// See [`room_for_strings`].
pub(crate) fn room_for_records(len: usize) -> usize {
    len + len / 8 + 16
}
mod point;
mod validate;

use bincode::{Decode, Encode};
use std::ops::Range;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use point::{FieldValue, PointRef};
pub use validate::BatchError;

/// A `(start, len)` reference: into the arena for strings, into a record array for
/// the tags and fields of a point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Encode, Decode)]
#[repr(C)]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Span {
    /// Index of the first byte (or record).
    pub start: u32,
    /// Number of bytes (or records).
    pub len: u32,
}

impl Span {
    /// The empty span.
    pub const EMPTY: Span = Span { start: 0, len: 0 };

    /// The span as a `usize` range, for slicing.
    #[inline]
    pub fn range(self) -> Range<usize> {
        self.start as usize..self.start as usize + self.len as usize
    }

    /// One past the last index, without overflow.
    #[inline]
    pub fn end(self) -> u64 {
        u64::from(self.start) + u64::from(self.len)
    }
}

/// The wire format a point was decoded from. Stages use it to treat points by
/// origin: Influx points name series `measurement_field`, Prometheus and OpenTSDB
/// points are one series each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Format {
    /// InfluxDB line protocol.
    InfluxLine = 0,
    /// Telegraf's influx JSON serializer.
    InfluxJson = 1,
    /// prometheus-kafka-adapter JSON.
    PrometheusJson = 2,
    /// OpenTSDB's JSON put format.
    OpentsdbJson = 3,
}

impl Format {
    /// Every format, in code order.
    pub const ALL: [Format; 4] = [
        Format::InfluxLine,
        Format::InfluxJson,
        Format::PrometheusJson,
        Format::OpentsdbJson,
    ];

    /// The format with this wire code, if any.
    pub fn from_code(code: u32) -> Option<Format> {
        Format::ALL.get(code as usize).copied()
    }

    /// The name used in Boulder's config (`influx-line`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Format::InfluxLine => "influx-line",
            Format::InfluxJson => "influx-json",
            Format::PrometheusJson => "prometheus-json",
            Format::OpentsdbJson => "opentsdb-json",
        }
    }

    /// The format a name of [`Format::name`] names.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// Whether points of this format follow Influx's naming (series `M_F` per field).
    pub fn is_influx(self) -> bool {
        matches!(self, Format::InfluxLine | Format::InfluxJson)
    }
}

/// Where a point came from: read-only context for stages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[repr(C)]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SourceRecord {
    /// The Kafka topic (or the name given to `boulder transform`), in the arena.
    pub topic: Span,
    /// A [`Format`] code.
    pub format: u32,
}

/// One point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[repr(C)]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PointRecord {
    /// The measurement (metric name), in the arena.
    pub measurement: Span,
    /// The point's tags: a range of [`Batch::tags`].
    pub tags: Span,
    /// The point's fields: a range of [`Batch::fields`]. Never empty on the wire to
    /// the sink; a stage that removes every field should drop the point.
    pub fields: Span,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// Index into [`Batch::sources`].
    pub source: u32,
    /// The tenant the router assigned, in the arena; empty before routing.
    pub tenant: Span,
    /// Opaque to guests: the host's reference to where the point came from. A stage
    /// copies it unchanged to every point it derives from an input point.
    pub origin: u32,
}

/// A tag: `key=value`, both in the arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode)]
#[repr(C)]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TagRecord {
    /// The tag key.
    pub key: Span,
    /// The tag value.
    pub value: Span,
}

/// A field. The value is held in 64 bits whose meaning depends on `kind`, so every
/// record has the same size.
///
/// Packed to 4-byte alignment so that, like the other records, it is laid out in
/// memory exactly as on the wire (20 bytes: `bits` at offset 12); read its fields
/// by value (`let bits = f.bits;`), as a reference to `bits` may be unaligned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, packed(4))]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FieldRecord {
    /// The field key, in the arena.
    pub key: Span,
    /// A [`FieldKind`] code.
    pub kind: u32,
    /// The value: `f64` bits, `i64` or `u64` bits, `0`/`1`, or for a string the
    /// arena span as `start | len << 32`.
    pub bits: u64,
}

// By hand: bincode's derive would take references to the packed fields.
impl Encode for FieldRecord {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        let FieldRecord { key, kind, bits } = *self;
        key.encode(encoder)?;
        kind.encode(encoder)?;
        bits.encode(encoder)
    }
}

impl<Context> Decode<Context> for FieldRecord {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        Ok(FieldRecord {
            key: Span::decode(decoder)?,
            kind: u32::decode(decoder)?,
            bits: u64::decode(decoder)?,
        })
    }
}
bincode::impl_borrow_decode!(FieldRecord);

/// The type of a field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum FieldKind {
    /// 64-bit float.
    Float = 0,
    /// Signed 64-bit integer (line protocol `1i`).
    Int = 1,
    /// Unsigned 64-bit integer (line protocol `1u`).
    UInt = 2,
    /// Boolean.
    Bool = 3,
    /// UTF-8 string.
    String = 4,
}

impl FieldKind {
    /// The kind with this wire code, if any.
    pub fn from_code(code: u32) -> Option<FieldKind> {
        match code {
            0 => Some(FieldKind::Float),
            1 => Some(FieldKind::Int),
            2 => Some(FieldKind::UInt),
            3 => Some(FieldKind::Bool),
            4 => Some(FieldKind::String),
            _ => None,
        }
    }
}

/// A batch of points: one string arena and flat record arrays.
///
/// Writers append with [`Batch::push_str`], [`Batch::begin_point`],
/// [`Batch::push_tag`] and [`Batch::push_field`]; readers use [`Batch::point`].
/// Bytes from elsewhere must pass [`Batch::validate`] (or [`codec::check`]) before
/// they are trusted: the accessors assume valid spans and return empty strings
/// otherwise. The host checks every batch it passes to a guest, so the guest SDK
/// decodes its input with [`codec::decode_trusted`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Batch {
    /// Every string of the batch, back to back. A `String` rather than bytes so that
    /// UTF-8 is checked once per batch (when decoding) instead of once per read;
    /// on the wire it is the same length-prefixed bytes.
    pub arena: String,
    /// Sources referred to by [`PointRecord::source`].
    pub sources: Vec<SourceRecord>,
    /// The points.
    pub points: Vec<PointRecord>,
    /// The tags of all points; each point owns a contiguous range.
    pub tags: Vec<TagRecord>,
    /// The fields of all points; each point owns a contiguous range.
    pub fields: Vec<FieldRecord>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// An empty batch with room for `points` points of typical shape.
    pub fn with_capacity(points: usize) -> Batch {
        Batch::with_room(points, points * 64)
    }

    /// An empty batch with room for `points` points of typical shape and
    /// `arena_bytes` bytes of strings.
    pub fn with_room(points: usize, arena_bytes: usize) -> Batch {
        Batch {
            arena: String::with_capacity(arena_bytes),
            sources: Vec::new(),
            points: Vec::with_capacity(points),
            tags: Vec::with_capacity(points * 3),
            fields: Vec::with_capacity(points * 3),
        }
    }

    /// A copy with room to grow in its arena and its tag and field records, as a
    /// decoded batch has: what a stage's answer starts from.
    pub fn copy_with_room(&self) -> Batch {
        let mut arena = String::with_capacity(room_for_strings(self.arena.len()));
        arena.push_str(&self.arena);
        fn records<R: Copy>(records: &[R]) -> Vec<R> {
            let mut copy = Vec::with_capacity(room_for_records(records.len()));
            copy.extend_from_slice(records);
            copy
        }
        Batch {
            arena,
            sources: self.sources.clone(),
            points: self.points.clone(),
            tags: records(&self.tags),
            fields: records(&self.fields),
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the batch has no points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The string a span refers to; empty if the span is out of range or splits a
    /// character (which [`Batch::validate`] rules out).
    #[inline]
    pub fn str(&self, span: Span) -> &str {
        self.arena.get(span.range()).unwrap_or("")
    }

    /// Appends a string to the arena and returns its span.
    ///
    /// # Panics
    /// If the arena would grow past 4 GiB, which the host's batch limits rule out.
    pub fn push_str(&mut self, s: &str) -> Span {
        let start = u32::try_from(self.arena.len()).expect("batch arena exceeds 4 GiB");
        let len = u32::try_from(s.len()).expect("string exceeds 4 GiB");
        self.arena.push_str(s);
        Span { start, len }
    }

    /// Returns the index of a source with this topic and format, adding it if new.
    pub fn source(&mut self, topic: &str, format: Format) -> u32 {
        let found = self
            .sources
            .iter()
            .position(|s| s.format == format as u32 && self.str(s.topic) == topic);
        let index = found.unwrap_or_else(|| {
            let topic = self.push_str(topic);
            self.sources.push(SourceRecord {
                topic,
                format: format as u32,
            });
            self.sources.len() - 1
        });
        index as u32
    }

    /// Starts a new point with no tags or fields; [`Batch::push_tag`] and
    /// [`Batch::push_field`] then add to it. Returns its index.
    pub fn begin_point(&mut self, measurement: Span, timestamp_ns: i64, source: u32) -> usize {
        self.points.push(PointRecord {
            measurement,
            tags: Span {
                start: self.tags.len() as u32,
                len: 0,
            },
            fields: Span {
                start: self.fields.len() as u32,
                len: 0,
            },
            timestamp_ns,
            source,
            tenant: Span::EMPTY,
            origin: 0,
        });
        self.points.len() - 1
    }

    /// Adds a tag to the last point.
    ///
    /// # Panics
    /// If there is no point, or tags were added after another point's.
    pub fn push_tag(&mut self, key: Span, value: Span) {
        let point = self.points.last_mut().expect("push_tag before begin_point");
        assert_eq!(
            point.tags.end(),
            self.tags.len() as u64,
            "tags must be contiguous"
        );
        self.tags.push(TagRecord { key, value });
        point.tags.len += 1;
    }

    /// Adds a field to the last point. A string value must already be in the arena
    /// (see [`Batch::push_field_value`] for the convenient form).
    ///
    /// # Panics
    /// If there is no point, or fields were added after another point's.
    pub fn push_field(&mut self, key: Span, kind: FieldKind, bits: u64) {
        let point = self
            .points
            .last_mut()
            .expect("push_field before begin_point");
        assert_eq!(
            point.fields.end(),
            self.fields.len() as u64,
            "fields must be contiguous"
        );
        self.fields.push(FieldRecord {
            key,
            kind: kind as u32,
            bits,
        });
        point.fields.len += 1;
    }

    /// Adds a field with this key and value to the last point, copying strings into
    /// the arena.
    pub fn push_field_value(&mut self, key: &str, value: FieldValue<'_>) {
        let key = self.push_str(key);
        let (kind, bits) = self.field_bits(value);
        self.push_field(key, kind, bits);
    }

    /// Encodes a value as a field record's kind and bits, copying a string into
    /// the arena.
    pub fn field_bits(&mut self, value: FieldValue<'_>) -> (FieldKind, u64) {
        match value {
            FieldValue::Float(v) => (FieldKind::Float, v.to_bits()),
            FieldValue::Int(v) => (FieldKind::Int, v as u64),
            FieldValue::UInt(v) => (FieldKind::UInt, v),
            FieldValue::Bool(v) => (FieldKind::Bool, u64::from(v)),
            FieldValue::String(s) => {
                let span = self.push_str(s);
                (FieldKind::String, string_bits(span))
            }
        }
    }

    /// A read-only view of point `index`.
    ///
    /// # Panics
    /// If `index` is out of range.
    #[inline]
    pub fn point(&self, index: usize) -> PointRef<'_> {
        PointRef::new(self, index)
    }

    /// Views of every point, in order.
    pub fn iter(&self) -> impl Iterator<Item = PointRef<'_>> + '_ {
        (0..self.points.len()).map(move |i| self.point(i))
    }

    /// The tag records of a point.
    #[inline]
    pub fn tags_of(&self, point: &PointRecord) -> &[TagRecord] {
        self.tags.get(point.tags.range()).unwrap_or(&[])
    }

    /// The field records of a point.
    #[inline]
    pub fn fields_of(&self, point: &PointRecord) -> &[FieldRecord] {
        self.fields.get(point.fields.range()).unwrap_or(&[])
    }

    /// The typed value of a field record.
    #[inline]
    pub fn field_value(&self, field: &FieldRecord) -> FieldValue<'_> {
        match FieldKind::from_code(field.kind) {
            Some(FieldKind::Float) => FieldValue::Float(f64::from_bits(field.bits)),
            Some(FieldKind::Int) => FieldValue::Int(field.bits as i64),
            Some(FieldKind::UInt) => FieldValue::UInt(field.bits),
            Some(FieldKind::Bool) => FieldValue::Bool(field.bits != 0),
            Some(FieldKind::String) => FieldValue::String(self.str(string_span(field.bits))),
            // Unreachable in a validated batch.
            None => FieldValue::Float(f64::NAN),
        }
    }

    /// A batch of the points at `indices`, in that order, sharing this batch's
    /// strings: the arena and sources are copied whole, the records one by one, so
    /// no string is looked at.
    ///
    /// # Panics
    /// If an index is out of range.
    pub fn select(&self, indices: &[usize]) -> Batch {
        let mut out = Batch {
            arena: self.arena.clone(),
            sources: self.sources.clone(),
            points: Vec::with_capacity(indices.len()),
            tags: Vec::new(),
            fields: Vec::new(),
        };
        for &i in indices {
            let mut p = self.points[i];
            let tags = self.tags_of(&p);
            let fields = self.fields_of(&p);
            p.tags.start = out.tags.len() as u32;
            p.fields.start = out.fields.len() as u32;
            out.tags.extend_from_slice(tags);
            out.fields.extend_from_slice(fields);
            out.points.push(p);
        }
        out
    }

    /// The points at `indices`, in that order, in a batch of their own that holds
    /// only their strings (unlike [`Batch::select`], which keeps the whole
    /// arena): a part of a large batch that costs memory in proportion to itself.
    pub fn extract(&self, indices: impl IntoIterator<Item = usize>) -> Batch {
        let mut out = Batch::new();
        for i in indices {
            out.copy_point_from(self, i);
        }
        out
    }

    /// Copies point `index` of `from` (with its tags, fields and source) to the end
    /// of this batch, and returns the new point's index.
    pub fn copy_point_from(&mut self, from: &Batch, index: usize) -> usize {
        let view = from.point(index);
        let source = match view.format() {
            Some(format) => self.source(view.source_topic(), format),
            None => 0,
        };
        let measurement = self.push_str(view.measurement());
        let new = self.begin_point(measurement, view.timestamp_ns(), source);
        for (key, value) in view.tags() {
            let (key, value) = (self.push_str(key), self.push_str(value));
            self.push_tag(key, value);
        }
        for (key, value) in view.fields() {
            self.push_field_value(key, value);
        }
        let tenant = self.push_str(view.tenant());
        let point = &mut self.points[new];
        point.tenant = tenant;
        point.origin = view.origin();
        new
    }
}

/// The bits of a string field whose value is at `span`.
pub fn string_bits(span: Span) -> u64 {
    u64::from(span.start) | (u64::from(span.len) << 32)
}

/// The span of a string field's value, from its bits.
pub fn string_span(bits: u64) -> Span {
    Span {
        start: bits as u32,
        len: (bits >> 32) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_reads_a_point() {
        let mut batch = Batch::new();
        let source = batch.source("metrics", Format::InfluxLine);
        let m = batch.push_str("cpu");
        batch.begin_point(m, 42, source);
        let (k, v) = (batch.push_str("host"), batch.push_str("a"));
        batch.push_tag(k, v);
        batch.push_field_value("usage", FieldValue::Float(0.5));
        batch.push_field_value("note", FieldValue::String("ünï"));
        batch.validate().unwrap();

        let p = batch.point(0);
        assert_eq!(p.measurement(), "cpu");
        assert_eq!(p.tags().collect::<Vec<_>>(), vec![("host", "a")]);
        assert_eq!(
            p.fields().collect::<Vec<_>>(),
            vec![
                ("usage", FieldValue::Float(0.5)),
                ("note", FieldValue::String("ünï"))
            ]
        );
        assert_eq!(p.timestamp_ns(), 42);
        assert_eq!(p.source_topic(), "metrics");
        assert_eq!(p.format(), Some(Format::InfluxLine));
    }

    #[test]
    fn sources_are_shared() {
        let mut batch = Batch::new();
        let a = batch.source("t", Format::InfluxLine);
        let b = batch.source("t", Format::InfluxLine);
        let c = batch.source("t", Format::OpentsdbJson);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn extract_keeps_the_chosen_points_and_only_their_strings() {
        let mut a = Batch::new();
        let source = a.source("x", Format::InfluxLine);
        for (m, tag) in [("a", "1"), ("bbbbbbbbbbbbbbbb", "2"), ("c", "3")] {
            let m = a.push_str(m);
            let p = a.begin_point(m, 7, source);
            let (k, v) = (a.push_str("t"), a.push_str(tag));
            a.push_tag(k, v);
            a.push_field_value("f", FieldValue::Int(p as i64));
            a.points[p].origin = 10 + p as u32;
        }
        let b = a.extract([2, 0]);
        b.validate().unwrap();
        let points: Vec<_> = b
            .iter()
            .map(|p| (p.measurement(), p.tag("t"), p.origin(), p.source_topic()))
            .collect();
        assert_eq!(
            points,
            vec![("c", Some("3"), 12, "x"), ("a", Some("1"), 10, "x")]
        );
        assert_eq!(
            b.point(0).fields().collect::<Vec<_>>(),
            [("f", FieldValue::Int(2))]
        );
        assert!(!b.arena.contains("bbbb"), "{:?}", b.arena);
    }

    #[test]
    fn select_keeps_the_chosen_points_whole() {
        let mut a = Batch::new();
        let source = a.source("x", Format::InfluxLine);
        for (m, tag) in [("a", "1"), ("b", "2"), ("c", "3")] {
            let m = a.push_str(m);
            a.begin_point(m, 1, source);
            let (k, v) = (a.push_str("t"), a.push_str(tag));
            a.push_tag(k, v);
            a.push_field_value("f", FieldValue::Float(1.0));
        }
        let b = a.select(&[2, 0]);
        b.validate().unwrap();
        let names: Vec<_> = b.iter().map(|p| (p.measurement(), p.tag("t"))).collect();
        assert_eq!(names, vec![("c", Some("3")), ("a", Some("1"))]);
        assert_eq!(b.point(1).fields().count(), 1);
    }

    #[test]
    fn copy_point_keeps_everything() {
        let mut a = Batch::new();
        let source = a.source("x", Format::PrometheusJson);
        let m = a.push_str("up");
        a.begin_point(m, -5, source);
        a.push_field_value("value", FieldValue::Int(-3));
        a.points[0].origin = 77;
        let mut b = Batch::new();
        b.copy_point_from(&a, 0);
        b.validate().unwrap();
        assert_eq!(b.point(0).origin(), 77);
        assert_eq!(b.point(0).format(), Some(Format::PrometheusJson));
        assert_eq!(
            b.point(0).fields().collect::<Vec<_>>(),
            vec![("value", FieldValue::Int(-3))]
        );
    }
}
