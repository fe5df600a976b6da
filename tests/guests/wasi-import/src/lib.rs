//! Hostile guest: a well-behaved stage that also imports WASI (`wasi:random`).
//! The host must refuse it at load and say what it imports and what is allowed.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

wit_bindgen::generate!({ path: "world", world: "wasi-import", generate_all });

use exports::boulder::transform::stage::{Error, Guest, Output};

struct WasiImport;

impl Guest for WasiImport {
    fn init(_params: String) -> Result<(), String> {
        Ok(())
    }

    fn process(batch: Vec<u8>) -> Result<Output, Error> {
        // The capability a sandboxed transform must not have.
        let _ = wasi::random::random::get_random_u64();
        Ok(Output {
            batch,
            rejections: Vec::new(),
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(WasiImport);
