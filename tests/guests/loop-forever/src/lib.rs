//! Hostile guest: never returns from `process`. The host's CPU deadline must stop it.
use boulder_guest_sdk::{export, Params, Point, Transform, Verdict};

pub struct LoopForever(u64);

impl Transform for LoopForever {
    fn init(_: Params) -> Result<Self, String> {
        Ok(LoopForever(0))
    }

    fn process(&mut self, _: &mut Point<'_>) -> Verdict {
        loop {
            // black_box keeps the optimiser from proving the loop has no effect.
            self.0 = std::hint::black_box(self.0.wrapping_add(1));
        }
    }
}

export!(LoopForever);
