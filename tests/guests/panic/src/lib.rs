//! Hostile guest: panics on the first point. The host must report the panic message.
use boulder_guest_sdk::{export, Params, Point, Transform, Verdict};

pub struct Panic;

impl Transform for Panic {
    fn init(_: Params) -> Result<Self, String> {
        Ok(Panic)
    }

    fn process(&mut self, point: &mut Point<'_>) -> Verdict {
        panic!("boom on measurement {}", point.measurement());
    }
}

export!(Panic);
