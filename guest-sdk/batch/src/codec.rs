//! The wire encoding of a [`Batch`]: bincode 2.0.1 with fixed-size little-endian
//! integers.
//!
//! Fixed-size integers make every record the same size, so each array is a packed
//! little-endian array behind a `u64` length: cheap to write, cheap to read, and
//! readable in place. The decode limit keeps a hostile length prefix from making the
//! reader allocate more than any batch can hold.

use crate::{Batch, BatchError};
use bincode::config::{self, Configuration, Fixint, Limit, LittleEndian};

/// The largest encoded batch either side accepts: 256 MiB.
pub const MAX_BATCH_BYTES: usize = 256 * 1024 * 1024;

type Config = Configuration<LittleEndian, Fixint, Limit<MAX_BATCH_BYTES>>;

const CONFIG: Config = config::standard()
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
    struct VecWriter<'a>(&'a mut Vec<u8>);
    impl bincode::enc::write::Writer for VecWriter<'_> {
        fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }
    // Writing into a Vec cannot fail; the limit applies to decoding only.
    bincode::encode_into_writer(batch, VecWriter(out), CONFIG)
        .expect("encoding a batch into memory cannot fail");
}

/// Decodes a batch and checks it with [`Batch::validate`].
pub fn decode(bytes: &[u8]) -> Result<Batch, BatchError> {
    let (batch, read): (Batch, usize) =
        bincode::decode_from_slice(bytes, CONFIG).map_err(|e| BatchError::Decode(e.to_string()))?;
    if read != bytes.len() {
        return Err(BatchError::Decode(format!(
            "{} trailing bytes after the batch",
            bytes.len() - read
        )));
    }
    batch.validate()?;
    Ok(batch)
}

fn encoded_len_hint(batch: &Batch) -> usize {
    // 5 length prefixes, then the arena and the fixed-size records.
    40 + batch.arena.len()
        + batch.sources.len() * 12
        + batch.points.len() * 48
        + batch.tags.len() * 16
        + batch.fields.len() * 20
}

#[cfg(test)]
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
            prop_assert_eq!(decode(&bytes).unwrap(), b);
        }

        #[test]
        fn never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn never_panics_on_a_corrupted_batch(b in batch(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = encode(&b);
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if let Ok(decoded) = decode(&bytes) {
                // Whatever survives decoding must be safe to read in full.
                for p in decoded.iter() {
                    let _ = (p.measurement(), p.tags().count(), p.fields().count(), p.source_topic());
                }
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
}
