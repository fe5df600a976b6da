//! Hostile guest whose misdeeds each point chooses with its tag `do`, so that one
//! message can misbehave among well-behaved ones:
//! - `do=panic`: panics, failing the whole call it is in;
//! - `do=huge-panic`: panics with a 10 MB message;
//! - `do=huge-reason`: dead-lettered with a 10 MB reason;
//! - `do=distinct`: dropped with a reason of its own, `reason <field n>`;
//! - `do=slow`: kept, after some milliseconds of busy work (so that calls overlap);
//! - no `do` tag: kept as it is.
use boulder_guest_sdk::{export, FieldValue, Params, Point, Transform, Verdict};

/// 10 MB: more than a Kafka record may be by default, and far more than a label.
const HUGE: usize = 10 << 20;

pub struct ByTag;

impl Transform for ByTag {
    fn init(_: Params) -> Result<Self, String> {
        Ok(ByTag)
    }

    fn process(&mut self, point: &mut Point<'_>) -> Verdict {
        match point.tag("do") {
            Some("panic") => panic!("asked to panic by {}", point.measurement()),
            Some("huge-panic") => panic!("{}", "p".repeat(HUGE)),
            Some("huge-reason") => Verdict::dead_letter("r".repeat(HUGE)),
            Some("distinct") => {
                let n = match point.field("n") {
                    Some(FieldValue::Int(n)) => n,
                    _ => -1,
                };
                Verdict::drop(format!("reason {n}"))
            }
            Some("slow") => {
                let mut x = 0u64;
                for i in 0..5_000_000u64 {
                    x = std::hint::black_box(x.wrapping_add(i));
                }
                Verdict::Keep
            }
            _ => Verdict::Keep,
        }
    }
}

export!(ByTag);
