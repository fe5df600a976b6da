//! Hostile guest: speaks the real contract but answers wrongly, in the way its
//! params say, to check that the host names it (and not the stage after it):
//! - `{"mode": "garbage"}`: bytes that are not a batch;
//! - `{"mode": "lose-point"}`: a valid batch without the last input point, which it
//!   neither keeps nor rejects;
//! - `{"mode": "foreign-origin"}`: a point with an origin no input point has.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

wit_bindgen::generate!({
    path: "../../../wit",
    world: "transform",
});

use boulder_batch::codec;
use exports::boulder::transform::stage::{Error, Guest, Output};
use std::cell::Cell;

thread_local! {
    static MODE: Cell<u8> = const { Cell::new(0) };
}

struct Malformed;

impl Guest for Malformed {
    fn init(params: String) -> Result<(), String> {
        let mode = if params.contains("garbage") {
            0
        } else if params.contains("lose-point") {
            1
        } else if params.contains("foreign-origin") {
            2
        } else {
            return Err(format!("unknown mode in {params}"));
        };
        MODE.with(|m| m.set(mode));
        Ok(())
    }

    fn process(batch: Vec<u8>) -> Result<Output, Error> {
        let mut input = codec::decode(&batch).map_err(|e| Error::InvalidBatch(e.to_string()))?;
        let answer = match MODE.with(Cell::get) {
            0 => b"this is not a batch".to_vec(),
            1 => {
                input.points.pop();
                codec::encode(&input)
            }
            _ => {
                if let Some(p) = input.points.first_mut() {
                    p.origin = 1_000_000;
                }
                codec::encode(&input)
            }
        };
        Ok(Output {
            batch: answer,
            rejections: Vec::new(),
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(Malformed);
