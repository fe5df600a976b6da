//! Bench-only guest for `host/benches/boundary.rs`: echoes a batch either as
//! `boulder-batch` bytes (what Boulder does) or as typed WIT records, after reading
//! every point the same way in both, so that the bench measures only what the
//! representation costs.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

// Not in a wit/ folder: cargo component would generate unused bindings from it.
wit_bindgen::generate!({ path: "boundary.wit", world: "boundary" });

use boulder_batch::{codec, Batch, FieldValue};
use exports::boulder::bench::echo::{self, Guest, Point};
use std::hint::black_box;

struct Echo;

impl Guest for Echo {
    fn bytes(batch: Vec<u8>) -> Result<Vec<u8>, String> {
        let batch = codec::decode(&batch).map_err(|e| e.to_string())?;
        black_box(touch_batch(&batch));
        Ok(codec::encode(&batch))
    }

    fn typed(points: Vec<Point>) -> Vec<Point> {
        black_box(touch_points(&points));
        points
    }
}

#[cfg(target_arch = "wasm32")]
export!(Echo);

// The same reads in both variants, folded into a value the optimiser cannot drop:
// a stage always looks at its points, and an echo that never did would let the
// bytes variant skip work the typed one cannot.
fn touch_batch(batch: &Batch) -> u64 {
    let mut sum = 0;
    for point in batch.iter() {
        sum = mix(sum, touch(point.measurement()));
        for (key, value) in point.tags() {
            sum = mix(sum, touch(key) ^ touch(value));
        }
        for (key, value) in point.fields() {
            let value = match value {
                FieldValue::Float(v) => v.to_bits(),
                FieldValue::Int(v) => v as u64,
                FieldValue::UInt(v) => v,
                FieldValue::Bool(v) => u64::from(v),
                FieldValue::String(s) => touch(s),
            };
            sum = mix(sum, touch(key) ^ value);
        }
        sum = mix(sum, point.timestamp_ns() as u64);
    }
    sum
}

fn touch_points(points: &[Point]) -> u64 {
    let mut sum = 0;
    for point in points {
        sum = mix(sum, touch(&point.measurement));
        for tag in &point.tags {
            sum = mix(sum, touch(&tag.key) ^ touch(&tag.value));
        }
        for field in &point.fields {
            let value = match &field.value {
                echo::FieldValue::Float(v) => v.to_bits(),
                echo::FieldValue::Int(v) => *v as u64,
                echo::FieldValue::Uint(v) => *v,
                echo::FieldValue::Bool(v) => u64::from(*v),
                echo::FieldValue::String(s) => touch(s),
            };
            sum = mix(sum, touch(&field.key) ^ value);
        }
        sum = mix(sum, point.timestamp_ns as u64);
    }
    sum
}

// Length and first byte: enough to force every string to be located, without
// turning the bench into a hashing benchmark.
fn touch(s: &str) -> u64 {
    (s.len() as u64) << 8 | u64::from(s.as_bytes().first().copied().unwrap_or(0))
}

fn mix(sum: u64, value: u64) -> u64 {
    sum.rotate_left(5) ^ value
}
