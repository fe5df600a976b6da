//! What the fuzz targets share: a decoder run on arbitrary bytes, and the
//! properties every decoder keeps whatever it is given.

use boulder::decode::{decode, Precision};
use boulder_batch::{Batch, Format};

/// Decodes `data` as `format`, its first byte choosing the precision, and checks
/// what any decoder promises for any input: no panic (the fuzzer sees one), a
/// batch that passes the same validation as a guest's answer, and errors that
/// point inside the message.
pub fn decode_any(format: Format, data: &[u8]) -> Batch {
    let (precision, message) = match data.split_first() {
        Some((&choice, rest)) => (
            [Precision::Ns, Precision::Us, Precision::Ms, Precision::S][usize::from(choice % 4)],
            rest,
        ),
        None => (Precision::Ns, data),
    };
    let mut batch = Batch::new();
    let source = batch.source("fuzz", format);
    let errors = decode(
        format,
        precision,
        message,
        1_700_000_000_000_000_000,
        source,
        &mut batch,
    );
    batch.validate().expect("a decoder wrote an invalid batch");
    for e in &errors {
        assert!(
            e.bytes.start <= e.bytes.end && e.bytes.end <= message.len(),
            "error bytes {:?} outside a message of {}",
            e.bytes,
            message.len()
        );
        assert!(!e.reason.is_empty());
    }
    batch
}
