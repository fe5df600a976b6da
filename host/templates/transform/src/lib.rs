//! `{{crate_name}}`, a Boulder transform.
//!
//! A sample to start from: it converts millisecond fields to seconds, the base unit
//! Prometheus names expect (`latency_ms=250i` becomes `latency_seconds=0.25`), and
//! drops the points of the measurements listed in its `drop` parameter.

use boulder_guest_sdk::{export, FieldValue, Params, Point, Transform, Verdict};
use serde::Deserialize;

/// The stage's `params` in the Boulder config. Unknown keys are refused, so a
/// misspelt one stops the config from loading instead of being ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Measurements whose points are dropped.
    #[serde(default)]
    drop: Vec<String>,
}

pub struct MillisToSeconds {
    config: Config,
}

impl Transform for MillisToSeconds {
    fn init(params: Params) -> Result<Self, String> {
        // An error here refuses the config, with this message, when Boulder loads it.
        Ok(MillisToSeconds {
            config: params.parse()?,
        })
    }

    fn process(&mut self, point: &mut Point<'_>) -> Verdict {
        if self.config.drop.iter().any(|m| m == point.measurement()) {
            // Boulder counts dropped points by stage and reason.
            return Verdict::drop("measurement listed in drop");
        }
        for i in 0..point.field_count() {
            let (key, value) = point.field_at(i);
            let Some(name) = key.strip_suffix("_ms") else {
                continue;
            };
            let ms = match value {
                FieldValue::Float(v) => v,
                FieldValue::Int(v) => v as f64,
                FieldValue::UInt(v) => v as f64,
                // Not a duration: left as it is.
                FieldValue::Bool(_) | FieldValue::String(_) => continue,
            };
            let key = format!("{name}_seconds");
            point.set_field_key_at(i, &key);
            point.set_field_value_at(i, FieldValue::Float(ms / 1000.0));
        }
        Verdict::Keep
    }
}

export!(MillisToSeconds);

#[cfg(test)]
mod tests {
    use super::*;
    use boulder_guest_sdk::testing::{point, run};

    fn stage(params: &str) -> MillisToSeconds {
        MillisToSeconds::init(Params::from_json(params)).expect("valid params")
    }

    #[test]
    fn converts_millisecond_fields_to_seconds() {
        let out = run(
            &mut stage("{}"),
            &[point("http")
                .tag("host", "a")
                .field("latency_ms", 250i64)
                .field("status", 200i64)
                .field("note_ms", "late")],
        );
        assert_eq!(
            out.kept,
            vec![point("http")
                .tag("host", "a")
                .field("latency_seconds", 0.25)
                .field("status", 200i64)
                .field("note_ms", "late")]
        );
    }

    #[test]
    fn drops_the_listed_measurements() {
        let out = run(
            &mut stage(r#"{"drop": ["debug"]}"#),
            &[
                point("debug").field("x", 1.0),
                point("cpu").field("usage", 0.5),
            ],
        );
        assert_eq!(out.kept, vec![point("cpu").field("usage", 0.5)]);
        assert_eq!(out.dropped(), vec![(0, "measurement listed in drop")]);
    }

    #[test]
    fn refuses_unknown_params() {
        let Err(message) = MillisToSeconds::init(Params::from_json(r#"{"dorp": []}"#)) else {
            panic!("a misspelt parameter was accepted");
        };
        assert!(message.contains("dorp"), "{message}");
    }
}
