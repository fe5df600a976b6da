//! Hostile guest: turns every point into 10,000 copies. The host must refuse an output
//! that is far larger than its input.
use boulder_guest_sdk::{export, Params, Point, Transform, Verdict};

pub struct HugeOutput;

impl Transform for HugeOutput {
    fn init(_: Params) -> Result<Self, String> {
        Ok(HugeOutput)
    }

    fn process(&mut self, point: &mut Point<'_>) -> Verdict {
        for _ in 0..10_000 {
            point.split();
        }
        Verdict::Keep
    }
}

export!(HugeOutput);
