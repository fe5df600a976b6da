//! Line protocol decoded, written back by Boulder's encoder, and decoded again
//! gives the same points: the encoder's escapes are the decoder's.
#![no_main]

use boulder::decode::Precision;
use boulder::encode::line_protocol;
use boulder_batch::{Batch, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = boulder_fuzz::decode_any(Format::InfluxLine, data);
    let mut text = Vec::new();
    let unwritable = line_protocol::write_batch(&first, &mut text);
    if text.is_empty() {
        return; // nothing was read, or nothing of it can be written
    }
    let mut again = Batch::new();
    let source = again.source("fuzz", Format::InfluxLine);
    let errors = boulder::decode::decode(
        Format::InfluxLine,
        Precision::Ns,
        &text,
        0,
        source,
        &mut again,
    );
    assert!(
        errors.is_empty(),
        "Boulder cannot read what it wrote: {errors:?}\n{}",
        String::from_utf8_lossy(&text)
    );
    let written: Vec<String> = (0..first.len())
        .filter(|i| !unwritable.iter().any(|(u, _)| u == i))
        .map(|i| line_protocol::point_to_line(&first, i))
        .collect();
    let read: Vec<String> = (0..again.len())
        .map(|i| line_protocol::point_to_line(&again, i))
        .collect();
    assert_eq!(written, read);
});
