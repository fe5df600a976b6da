//! `keep-all`: keeps every point unchanged. A chain of these costs what crossing
//! the sandbox costs (copying the batch in, reading, copying every point, writing
//! it out) and nothing else; the pipeline benchmark compares it with the built-in
//! chain to tell the boundary's share from the transforms'.

use boulder_guest_sdk::{export, Params, Point, Transform, Verdict};

/// The transform.
pub struct KeepAll;

impl Transform for KeepAll {
    fn init(_: Params) -> Result<Self, String> {
        Ok(KeepAll)
    }

    fn process(&mut self, _: &mut Point<'_>) -> Verdict {
        Verdict::Keep
    }
}

export!(KeepAll);
