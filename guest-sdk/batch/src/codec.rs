//! The wire encoding of a [`Batch`]: bincode 2.0.1 with fixed-size little-endian
//! integers.
//!
//! Fixed-size integers make every record the same size, so each array is a packed
//! little-endian array behind a `u64` length: cheap to write, cheap to read, and
//! readable in place. Each record type is laid out in memory exactly as on the wire
//! (`repr(C)`, no padding; `FieldRecord` packed), so on a little-endian machine an
//! array is read and written as one copy of its bytes. The decode limit keeps a
//! hostile length prefix from making the reader allocate more than any batch can
//! hold.

use crate::validate::{Parts, Records};
use crate::{room_for_records, room_for_strings};
use crate::{Batch, BatchError, FieldRecord, PointRecord, SourceRecord, TagRecord};
use bincode::config::{self, Configuration, Fixint, Limit, LittleEndian};
use std::convert::identity;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

// Records are copied as their in-memory bytes, which are the little-endian wire's
// only on a little-endian machine (x86-64, AArch64, wasm32 all are).
#[cfg(not(target_endian = "little"))]
compile_error!(
    "boulder-batch's codec copies records as their bytes: it needs a little-endian target"
);

/// The largest encoded batch either side accepts: 256 MiB.
pub const MAX_BATCH_BYTES: usize = 256 * 1024 * 1024;

type Config = Configuration<LittleEndian, Fixint, Limit<MAX_BATCH_BYTES>>;

/// The bincode configuration that defines the wire format. The codec below writes
/// and reads exactly what `bincode` would with it (a property test holds them to
/// that), but as whole fixed-size records: bincode's generic reader checks its limit
/// and bounds per integer, which cost as much as the transforms themselves.
pub const CONFIG: Config = config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<MAX_BATCH_BYTES>();

/// Encodes a batch into a new buffer.
pub fn encode(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len_hint(batch));
    encode_into(batch, &mut out);
    out
}

/// Appends the encoding of a batch to `out`, reusing its allocation.
pub fn encode_into(batch: &Batch, out: &mut Vec<u8>) {
    write(batch, out);
}

/// The encoding of `batch` with every point's origin replaced by its index, as if
/// its points had been numbered first (what a stage is given, so that its answer's
/// origins index its input), without copying the batch to number it.
pub fn encode_numbered(batch: &Batch) -> Vec<u8> {
    let mut out = Vec::new();
    let points = write(batch, &mut out);
    let origin = std::mem::offset_of!(PointRecord, origin);
    for (i, point) in out[points].chunks_exact_mut(PointRecord::SIZE).enumerate() {
        point[origin..origin + 4].copy_from_slice(&(i as u32).to_le_bytes());
    }
    out
}

/// Appends the encoding; returns where the point records are in `out`.
fn write(batch: &Batch, out: &mut Vec<u8>) -> std::ops::Range<usize> {
    out.reserve(encoded_len_hint(batch));
    out.extend_from_slice(&(batch.arena.len() as u64).to_le_bytes());
    out.extend_from_slice(batch.arena.as_bytes());
    put_records(&batch.sources, out);
    let points = put_records(&batch.points, out);
    put_records(&batch.tags, out);
    put_records(&batch.fields, out);
    points
}

/// Decodes a batch and checks it with [`Batch::validate`].
pub fn decode(bytes: &[u8]) -> Result<Batch, BatchError> {
    let batch = decode_trusted(bytes)?;
    batch.validate()?;
    Ok(batch)
}

/// Decodes a batch without checking its spans, indices and codes: for bytes that
/// passed [`check`], as every batch the host passes to a guest has. The layout and
/// the arena's UTF-8 are still checked, so reading a batch that breaks the rules
/// stays safe: the accessors give empty strings and slices for what is out of range.
pub fn decode_trusted(bytes: &[u8]) -> Result<Batch, BatchError> {
    let sections = Sections::read(bytes, Utf8::Check)?;
    Ok(sections.into_batch())
}

/// [`decode_trusted`] without checking the arena's UTF-8 again: for a guest, whose
/// input the host has checked (a tenth of the guest's decoding was that check).
///
/// # Safety
/// `bytes` must be a batch that [`check`] accepts, or at least one whose string
/// arena is UTF-8: the arena becomes a `String` unchecked. The layout is still
/// checked.
#[allow(unsafe_code)]
pub unsafe fn decode_checked(bytes: &[u8]) -> Result<Batch, BatchError> {
    // The caller promises that the arena is UTF-8.
    let sections = Sections::read(bytes, Utf8::Trust)?;
    Ok(sections.into_batch())
}

/// The point records of an encoded batch and its arena, read in place: for a reader
/// that wants a few fields of each point (the host, of a router's answer) and would
/// otherwise decode the whole batch for them. Nothing is checked beyond the layout,
/// so a span outside the arena reads as empty bytes.
pub struct PointsInPlace<'a> {
    arena: &'a [u8],
    points: &'a [u8],
}

impl<'a> PointsInPlace<'a> {
    /// The points of `bytes`; fails only if the layout is broken.
    pub fn new(bytes: &'a [u8]) -> Result<PointsInPlace<'a>, BatchError> {
        let mut reader = Reader { bytes };
        let arena = reader.take(1)?;
        reader.take(SourceRecord::SIZE)?;
        let points = reader.take(PointRecord::SIZE)?;
        Ok(PointsInPlace { arena, points })
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len() / PointRecord::SIZE
    }

    /// Whether there are no points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Every point's record, in order.
    pub fn iter(&self) -> impl Iterator<Item = PointRecord> + 'a {
        records(self.points)
    }

    /// The bytes a span of the arena holds; empty if it is out of range.
    pub fn arena_bytes(&self, span: crate::Span) -> &'a [u8] {
        self.arena.get(span.range()).unwrap_or_default()
    }
}

/// Checks encoded bytes exactly as [`decode`] does, without decoding them: the
/// host's check of every guest's answer, in place.
pub fn check(bytes: &[u8]) -> Result<(), BatchError> {
    let sections = Sections::read(bytes, Utf8::Check)?;
    Parts {
        arena: sections.arena,
        ascii: sections.ascii,
        sources: records(sections.sources),
        points: records(sections.points),
        tags: records(sections.tags),
        fields: records(sections.fields),
    }
    .validate()
}

/// An encoded batch cut into its arena and the bytes of each array of records.
struct Sections<'a> {
    arena: &'a str,
    /// Whether the arena is ASCII; `false` also when it was not looked at.
    ascii: bool,
    sources: &'a [u8],
    points: &'a [u8],
    tags: &'a [u8],
    fields: &'a [u8],
}

/// Whether [`Sections::read`] checks the arena's UTF-8.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Utf8 {
    Check,
    /// Only where the arena is known to be UTF-8 ([`decode_checked`]'s promise).
    Trust,
}

impl<'a> Sections<'a> {
    fn read(bytes: &'a [u8], utf8: Utf8) -> Result<Sections<'a>, BatchError> {
        if bytes.len() > MAX_BATCH_BYTES {
            return Err(BatchError::Decode(format!(
                "{} bytes is over the limit of {MAX_BATCH_BYTES}",
                bytes.len()
            )));
        }
        let mut reader = Reader { bytes };
        let arena = reader.take(1)?;
        // An ASCII arena, the usual one, is UTF-8: one pass over it decides both
        // (`Parts::validate` wants to know whether it is ASCII too).
        let ascii = utf8 == Utf8::Check && arena.is_ascii();
        let arena = match utf8 {
            Utf8::Check if !ascii => simdutf8::compat::from_utf8(arena)
                .map_err(|e| BatchError::Decode(format!("the string arena is not UTF-8: {e}")))?,
            // SAFETY: ASCII is UTF-8; `Utf8::Trust` is only passed where the arena
            // is UTF-8.
            #[allow(unsafe_code)]
            Utf8::Check | Utf8::Trust => unsafe { std::str::from_utf8_unchecked(arena) },
        };
        let sections = Sections {
            arena,
            ascii,
            sources: reader.take(SourceRecord::SIZE)?,
            points: reader.take(PointRecord::SIZE)?,
            tags: reader.take(TagRecord::SIZE)?,
            fields: reader.take(FieldRecord::SIZE)?,
        };
        if !reader.bytes.is_empty() {
            return Err(BatchError::Decode(format!(
                "{} trailing bytes after the batch",
                reader.bytes.len()
            )));
        }
        Ok(sections)
    }

    /// The batch, its records copied out of the sections, with room to grow in
    /// its arena and its tag and field records ([`crate::room_for_strings`]).
    fn into_batch(self) -> Batch {
        let mut arena = String::with_capacity(room_for_strings(self.arena.len()));
        arena.push_str(self.arena);
        Batch {
            arena,
            sources: collect(self.sources, identity),
            points: collect(self.points, identity),
            tags: collect(self.tags, room_for_records),
            fields: collect(self.fields, room_for_records),
        }
    }
}

/// The records in `bytes`, a whole number of them (as [`Reader::take`] cuts),
/// copied into a vector of `capacity(count)`: one copy, without zeroing the
/// vector first (which cost as much as the copy).
#[allow(unsafe_code)]
fn collect<R: Record>(bytes: &[u8], capacity: fn(usize) -> usize) -> Vec<R> {
    let count = bytes.len() / R::SIZE;
    assert_eq!(count * R::SIZE, bytes.len(), "a whole number of records");
    let mut records = Vec::<R>::with_capacity(capacity(count));
    // SAFETY: the vector has room for `count` records, `bytes.len()` bytes, and
    // cannot overlap `bytes`; every byte pattern is a valid `R` (`FromBytes`), so
    // the first `count` records are initialised once copied.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            records.as_mut_ptr().cast::<u8>(),
            bytes.len(),
        );
        records.set_len(count);
    }
    records
}

/// The records in `bytes`, a whole number of them (as [`Reader::take`] cuts).
fn records<'a, R: Record + 'a>(bytes: &'a [u8]) -> impl Records<R> + 'a {
    bytes
        .chunks_exact(R::SIZE)
        .map(|b| R::read_from_bytes(b).expect("chunks of the record's size"))
}

/// A record of fixed size on the wire, laid out in memory as on the wire: its
/// fields in declaration order, each a little-endian integer of its own width.
trait Record: FromBytes + IntoBytes + Immutable + KnownLayout + Copy {
    const SIZE: usize = std::mem::size_of::<Self>();
}

impl Record for SourceRecord {}
impl Record for PointRecord {}
impl Record for TagRecord {}
impl Record for FieldRecord {}

// The wire's record sizes: a change to a record's layout must fail here.
const _: () = {
    assert!(SourceRecord::SIZE == 12);
    assert!(PointRecord::SIZE == 48);
    assert!(TagRecord::SIZE == 16);
    assert!(FieldRecord::SIZE == 20);
};

/// Writes the records' count, then the records; returns where the records are in `out`.
fn put_records<R: Record>(records: &[R], out: &mut Vec<u8>) -> std::ops::Range<usize> {
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    let start = out.len();
    out.extend_from_slice(records.as_bytes());
    start..out.len()
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A `u64` count of items of `size` bytes, then the items' bytes.
    fn take(&mut self, size: usize) -> Result<&'a [u8], BatchError> {
        let truncated = || BatchError::Decode("the batch is truncated".into());
        let (count, rest) = self.bytes.split_first_chunk::<8>().ok_or_else(truncated)?;
        let len = usize::try_from(u64::from_le_bytes(*count))
            .ok()
            .and_then(|n| n.checked_mul(size))
            .filter(|&len| len <= rest.len())
            .ok_or_else(truncated)?;
        let (items, rest) = rest.split_at(len);
        self.bytes = rest;
        Ok(items)
    }
}

fn encoded_len_hint(batch: &Batch) -> usize {
    // 5 length prefixes, then the arena and the fixed-size records.
    40 + batch.arena.len()
        + batch.sources.len() * SourceRecord::SIZE
        + batch.points.len() * PointRecord::SIZE
        + batch.tags.len() * TagRecord::SIZE
        + batch.fields.len() * FieldRecord::SIZE
}

#[cfg(test)]
#[allow(unsafe_code)] // decode_checked on bytes that `check` accepted
mod tests {
    use super::*;
    use crate::{FieldValue, Format};
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = (u8, i64, String)> {
        (0u8..5, any::<i64>(), "\\PC{0,8}")
    }

    prop_compose! {
        fn batch()(points in prop::collection::vec(
            ("\\PC{0,12}", prop::collection::vec(("\\PC{0,6}", "\\PC{0,6}"), 0..4),
             prop::collection::vec(("\\PC{0,6}", value()), 0..4), any::<i64>()), 0..20)
        ) -> Batch {
            let mut b = Batch::new();
            let source = b.source("topic", Format::InfluxJson);
            for (m, tags, fields, ts) in points {
                let m = b.push_str(&m);
                b.begin_point(m, ts, source);
                for (k, v) in tags {
                    let (k, v) = (b.push_str(&k), b.push_str(&v));
                    b.push_tag(k, v);
                }
                for (k, (kind, n, s)) in fields {
                    let v = match kind {
                        0 => FieldValue::Float(f64::from_bits(n as u64)),
                        1 => FieldValue::Int(n),
                        2 => FieldValue::UInt(n as u64),
                        3 => FieldValue::Bool(n & 1 == 1),
                        _ => FieldValue::String(&s),
                    };
                    b.push_field_value(&k, v);
                }
            }
            b
        }
    }

    proptest! {
        #[test]
        fn round_trips(b in batch()) {
            let bytes = encode(&b);
            prop_assert_eq!(bytes.len(), encoded_len_hint(&b));
            prop_assert_eq!(decode(&bytes).unwrap(), b.clone());
            prop_assert!(check(&bytes).is_ok());
            // SAFETY: `check` accepted the bytes just above.
            prop_assert_eq!(unsafe { decode_checked(&bytes) }.unwrap(), b);
        }

        #[test]
        fn writes_and_reads_exactly_what_bincode_does(b in batch()) {
            let bytes = encode(&b);
            prop_assert_eq!(&bytes, &bincode::encode_to_vec(&b, CONFIG).unwrap());
            let (theirs, read): (Batch, usize) = bincode::decode_from_slice(&bytes, CONFIG).unwrap();
            prop_assert_eq!(read, bytes.len());
            prop_assert_eq!(decode(&bytes).unwrap(), theirs);
        }

        #[test]
        fn numbering_while_encoding_is_numbering_then_encoding(b in batch()) {
            let mut numbered = b.clone();
            for (i, p) in numbered.points.iter_mut().enumerate() {
                p.origin = i as u32;
            }
            prop_assert_eq!(encode_numbered(&b), encode(&numbered));
        }

        #[test]
        fn never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            prop_assert_eq!(check(&bytes), decode(&bytes).map(drop));
        }

        // The host checks answers in place and then decodes them unchecked: the two
        // must agree with `decode` on every input.
        #[test]
        fn checking_in_place_agrees_with_decoding(c in corruption()) {
            let bytes = c.apply(Bytes::All);
            let decoded = decode(&bytes);
            prop_assert_eq!(check(&bytes), decoded.clone().map(drop));
            if let Ok(batch) = decoded {
                prop_assert_eq!(decode_trusted(&bytes).unwrap(), batch);
            }
        }

        #[test]
        fn never_panics_on_a_corrupted_batch(c in corruption()) {
            if let Ok(decoded) = decode(&c.apply(Bytes::All)) {
                // Whatever survives decoding must be safe to read in full.
                for p in decoded.iter() {
                    let _ = (p.measurement(), p.tags().count(), p.fields().count(), p.source_topic());
                }
            }
        }
    }

    /// Which bytes of an encoded batch [`Corruption::apply`] may change.
    enum Bytes {
        All,
        /// Not the arena, which then stays UTF-8.
        Records,
    }

    /// A batch, and one byte of its encoding to overwrite.
    #[derive(Debug)]
    struct Corruption {
        batch: Batch,
        /// Whether every byte beyond ASCII in the arena is replaced first: the same
        /// length, so every span keeps its range, and the checks' quick pass applies.
        ascii: bool,
        at: prop::sample::Index,
        byte: u8,
    }

    prop_compose! {
        fn corruption()(batch in batch(), ascii in any::<bool>(), at in any::<prop::sample::Index>(), byte in any::<u8>()) -> Corruption {
            Corruption { batch, ascii, at, byte }
        }
    }

    impl Corruption {
        /// The encoding with the byte (picked by `at` among `which`) set to `byte`.
        fn apply(mut self, which: Bytes) -> Vec<u8> {
            if self.ascii {
                let arena = self.batch.arena.bytes();
                let bytes = arena.map(|c| if c.is_ascii() { c } else { b'x' });
                self.batch.arena = String::from_utf8(bytes.collect()).unwrap();
            }
            let mut bytes = encode(&self.batch);
            let from = match which {
                Bytes::All => 0,
                Bytes::Records => 8 + self.batch.arena.len(),
            };
            let i = from + self.at.index(bytes.len() - from);
            bytes[i] = self.byte;
            bytes
        }
    }

    proptest! {
        // `validate` first tries a quick pass over ASCII batches; it must accept
        // exactly what the record-by-record check accepts.
        #[test]
        fn the_quick_check_agrees_with_the_thorough_one(c in corruption()) {
            let bytes = c.apply(Bytes::Records);
            if let Ok((corrupt, _)) = bincode::decode_from_slice::<Batch, _>(&bytes, CONFIG) {
                prop_assert_eq!(corrupt.validate(), corrupt.find_fault());
            }
        }
    }

    #[test]
    fn refuses_trailing_bytes_and_huge_lengths() {
        let mut bytes = encode(&Batch::new());
        bytes.push(0);
        assert!(decode(&bytes).unwrap_err().to_string().contains("trailing"));
        // An arena length prefix of 2^40 must fail, not allocate.
        let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 64]);
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn refuses_an_arena_that_is_not_utf8_wherever_the_bad_byte_is() {
        // Long enough for the vectorised check's blocks and its scalar tail.
        let mut batch = Batch::new();
        batch.push_str(&"abcdefgh".repeat(40));
        let clean = encode(&batch);
        let arena_start = 8; // after the arena's length
        for at in [0, 1, 63, 64, 200, 319] {
            let mut bytes = clean.clone();
            bytes[arena_start + at] = 0xff;
            for result in [
                check(&bytes),
                decode(&bytes).map(drop),
                decode_trusted(&bytes).map(drop),
            ] {
                let error = result.unwrap_err().to_string();
                assert!(error.contains("not UTF-8"), "byte {at}: {error}");
            }
        }
        assert!(check(&clean).is_ok());
    }
}
