//! Hostile guest: built against a future contract version, `boulder:transform@0.2.0`.
//! The host must refuse it at load and name both versions.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

wit_bindgen::generate!({
    inline: r#"
        package boulder:transform@0.2.0;

        interface stage {
            init: func(params: string) -> result<_, string>;
            process: func(batch: list<u8>) -> result<list<u8>, string>;
        }

        world transform {
            export stage;
        }
    "#,
    world: "transform",
});

use exports::boulder::transform::stage::Guest;

struct WrongVersion;

impl Guest for WrongVersion {
    fn init(_params: String) -> Result<(), String> {
        Ok(())
    }

    fn process(batch: Vec<u8>) -> Result<Vec<u8>, String> {
        Ok(batch)
    }
}

#[cfg(target_arch = "wasm32")]
export!(WrongVersion);
