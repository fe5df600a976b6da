//! The bytes a hostile guest can answer with, through what the host does with
//! them: the in-place check of every span, index and code; for an answer that
//! passes, decoding it without checks, reading its points in place, and writing
//! them as line protocol, as the host does for its outputs. None may panic, and
//! an answer that passes must decode to a batch that validates.
#![no_main]

use boulder::encode::line_protocol;
use boulder_batch::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if codec::check(data).is_err() {
        return;
    }
    let batch = codec::decode_trusted(data).expect("a checked answer decodes");
    batch.validate().expect("a checked answer validates");
    let in_place = codec::PointsInPlace::new(data).expect("a checked answer reads in place");
    assert_eq!(in_place.len(), batch.len());
    let mut out = Vec::new();
    let unwritable = line_protocol::write_batch(&batch, &mut out);
    for (i, _) in unwritable {
        let _ = line_protocol::point_to_line(&batch, i);
    }
});
