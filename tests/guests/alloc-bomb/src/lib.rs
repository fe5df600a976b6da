//! Hostile guest: allocates until memory runs out. The host's memory cap must stop it.
use boulder_guest_sdk::{export, Params, Point, Transform, Verdict};

pub struct AllocBomb(Vec<Vec<u8>>);

impl Transform for AllocBomb {
    fn init(_: Params) -> Result<Self, String> {
        Ok(AllocBomb(Vec::new()))
    }

    fn process(&mut self, _: &mut Point<'_>) -> Verdict {
        loop {
            // Touch every page so the memory is really used, not just reserved.
            self.0.push(vec![1u8; 1 << 20]);
        }
    }
}

export!(AllocBomb);
