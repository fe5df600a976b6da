//! `normalize`: lowercases the measurement, field keys and tag keys, so that
//! `CPU`, `Cpu` and `cpu` are one series. Tag values are lowercased too when
//! `tag_values = true` (off by default: values such as host names or paths are
//! often case-sensitive).
//!
//! Params: `tag_values = false`.
#![forbid(unsafe_code)]

use boulder_guest_sdk::{export, Params, Point, Transform, Verdict};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NormalizeParams {
    #[serde(default)]
    tag_values: bool,
}

/// The `normalize` transform.
pub struct Normalize {
    tag_values: bool,
}

impl Transform for Normalize {
    fn init(params: Params) -> Result<Self, String> {
        let p: NormalizeParams = params.parse()?;
        Ok(Normalize {
            tag_values: p.tag_values,
        })
    }

    fn process(&mut self, point: &mut Point<'_>) -> Verdict {
        if let Some(m) = lowercase(point.measurement()) {
            point.set_measurement(&m);
        }
        for i in 0..point.tag_count() {
            let (key, value) = point.tag_at(i);
            let value = if self.tag_values {
                lowercase(value)
            } else {
                None
            };
            if let Some(key) = lowercase(key) {
                point.set_tag_key_at(i, &key);
            }
            if let Some(value) = value {
                point.set_tag_value_at(i, &value);
            }
        }
        for i in 0..point.field_count() {
            if let Some(key) = lowercase(point.field_at(i).0) {
                point.set_field_key_at(i, &key);
            }
        }
        Verdict::Keep
    }
}

/// `s` in lowercase, or `None` when it has no uppercase letter (the common case,
/// which allocates nothing).
pub fn lowercase(s: &str) -> Option<String> {
    // One pass over the bytes decides for nearly every name: no uppercase ASCII and
    // nothing beyond ASCII means nothing to do.
    if !s.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
        return None;
    }
    let needs = s.is_ascii() || s.chars().any(char::is_uppercase);
    needs.then(|| s.to_lowercase())
}

export!(Normalize);

#[cfg(test)]
mod tests {
    use super::*;
    use boulder_guest_sdk::testing::{point, run};

    #[test]
    fn lowercases_names_but_not_tag_values_by_default() {
        let mut t = Normalize::init(Params::from_json("")).unwrap();
        let out = run(
            &mut t,
            &[point("CPU").tag("Host", "WebA").field("Usage_Idle", 1.0)],
        );
        assert_eq!(
            out.kept,
            vec![point("cpu").tag("host", "WebA").field("usage_idle", 1.0)]
        );
    }

    #[test]
    fn lowercases_tag_values_when_asked_and_handles_unicode() {
        let mut t = Normalize::init(Params::from_json(r#"{"tag_values":true}"#)).unwrap();
        let out = run(
            &mut t,
            &[point("ÉTÉ").tag("Ville", "ÅRHUS").field("F", "Keep Me")],
        );
        assert_eq!(
            out.kept,
            vec![point("été").tag("ville", "århus").field("f", "Keep Me")]
        );
    }

    #[test]
    fn keeps_empty_and_lowercase_names() {
        let mut t = Normalize::init(Params::from_json("")).unwrap();
        let p = point("").tag("", "").field("a:b", 1i64);
        assert_eq!(run(&mut t, std::slice::from_ref(&p)).kept, vec![p]);
    }

    #[test]
    fn refuses_unknown_params() {
        let err = Normalize::init(Params::from_json(r#"{"values":true}"#))
            .err()
            .unwrap();
        assert!(err.contains("unknown field `values`"), "{err}");
    }
}
