//! A tenant's own transform: tags every point with the environment it runs in,
//! converts Fahrenheit readings to Celsius, and dead-letters readings from a sensor
//! known to be broken.

use boulder_guest_sdk::{export, FieldValue, Params, Point, Transform, Verdict};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    env: String,
    #[serde(default)]
    broken_sensors: Vec<String>,
}

pub struct Tenant {
    config: Config,
}

impl Transform for Tenant {
    fn init(params: Params) -> Result<Self, String> {
        Ok(Tenant {
            config: params.parse()?,
        })
    }

    fn process(&mut self, point: &mut Point<'_>) -> Verdict {
        if let Some(sensor) = point.tag("sensor") {
            if self.config.broken_sensors.iter().any(|s| s == sensor) {
                return Verdict::dead_letter("broken sensor");
            }
        }
        if let Some(FieldValue::Float(f)) = point.field("fahrenheit") {
            point.remove_field("fahrenheit");
            point.set_field("celsius", FieldValue::Float((f - 32.0) * 5.0 / 9.0));
        }
        point.set_tag("env", &self.config.env);
        Verdict::Keep
    }
}

export!(Tenant);

#[cfg(test)]
mod tests {
    use super::*;
    use boulder_guest_sdk::testing::{point, run};

    #[test]
    fn converts_and_tags() {
        let mut t = Tenant::init(Params::from_json(r#"{"env":"prod","broken_sensors":["s9"]}"#)).unwrap();
        let out = run(
            &mut t,
            &[point("temp").tag("sensor", "s1").field("fahrenheit", 212.0), point("temp").tag("sensor", "s9").field("fahrenheit", 1.0)],
        );
        assert_eq!(out.kept, vec![point("temp").tag("sensor", "s1").tag("env", "prod").field("celsius", 100.0)]);
        assert_eq!(out.dead_lettered(), vec![(1, "broken sensor")]);
    }
}
