//! Test guest for live swap: tags every point `version=<VERSION>`. The tests make
//! further versions of the built component by rewriting the bytes of
//! [`VERSION`] in the `.wasm` file (same length, found once), so that one build
//! gives as many distinct components as a test needs.
use boulder_guest_sdk::{export, Params, Point, Transform, Verdict};

/// The version, as the component's data holds it.
pub const VERSION: &str = "swap-version-1";

pub struct Versioned;

impl Transform for Versioned {
    fn init(_: Params) -> Result<Self, String> {
        Ok(Versioned)
    }

    fn process(&mut self, point: &mut Point<'_>) -> Verdict {
        point.set_tag("version", std::hint::black_box(VERSION));
        Verdict::Keep
    }
}

export!(Versioned);
