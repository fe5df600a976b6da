//! The prometheus_json decoder on arbitrary bytes: see `boulder_fuzz::decode_any`.
#![no_main]

use boulder_batch::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    boulder_fuzz::decode_any(Format::PrometheusJson, data);
});
