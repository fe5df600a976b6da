//! `normalize`: lowercases the measurement, field keys and tag keys, so that
//! `CPU`, `Cpu` and `cpu` are one series. Tag values are lowercased too when
//! `tag_values = true` (off by default: values such as host names or paths are
//! often case-sensitive).
//!
//! Params: `tag_values = false`.
#![forbid(unsafe_code)]

use boulder_guest_sdk::scan::{any_word, bytes_in, non_ascii};
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
    // Where lowercased names are written, reused from name to name: most names
    // need no change, and the rest need no allocation.
    key: String,
    value: String,
}

impl Transform for Normalize {
    fn init(params: Params) -> Result<Self, String> {
        let p: NormalizeParams = params.parse()?;
        Ok(Normalize {
            tag_values: p.tag_values,
            key: String::new(),
            value: String::new(),
        })
    }

    // Inlined into the SDK's loop over points: a call per point per stage cost
    // 9-10 ns per point over the three stages, in the sandbox and natively alike.
    #[inline(always)]
    fn process(&mut self, point: &mut Point<'_>) -> Verdict {
        if lowercase(point.measurement(), &mut self.key) {
            point.set_measurement(&self.key);
        }
        for i in 0..point.tag_count() {
            let (key, value) = point.tag_at(i);
            let value_changed = self.tag_values && lowercase(value, &mut self.value);
            if lowercase(key, &mut self.key) {
                point.set_tag_key_at(i, &self.key);
            }
            if value_changed {
                point.set_tag_value_at(i, &self.value);
            }
        }
        for i in 0..point.field_count() {
            if lowercase(point.field_at(i).0, &mut self.key) {
                point.set_field_key_at(i, &self.key);
            }
        }
        Verdict::Keep
    }
}

/// Writes `s` in lowercase to `out` and returns `true`, or returns `false` when `s`
/// has no uppercase letter (the common case, which writes nothing).
///
/// The common case is inlined into the caller, the rest is not: a call per name
/// costs more than the scan itself in the sandbox.
#[inline(always)]
pub fn lowercase(s: &str, out: &mut String) -> bool {
    // One pass over the words decides for nearly every name: no uppercase ASCII and
    // nothing beyond ASCII means nothing to do.
    any_word(s.as_bytes(), |w| {
        non_ascii(w) | bytes_in(w, b'A', b'Z') != 0
    }) && lowercase_into(s, out)
}

/// [`lowercase`] for a name that may have an uppercase letter.
#[inline(never)]
fn lowercase_into(s: &str, out: &mut String) -> bool {
    out.clear();
    if s.is_ascii() {
        out.push_str(s);
        out.make_ascii_lowercase();
        return true;
    }
    if !s.chars().any(char::is_uppercase) {
        return false;
    }
    // `str::to_lowercase`, for its rules beyond single characters (a final sigma).
    out.push_str(&s.to_lowercase());
    true
}

export!(Normalize);

#[cfg(test)]
mod tests {
    use super::*;
    use boulder_guest_sdk::testing::{ascii_names, point, run};

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
    fn finds_an_uppercase_letter_wherever_it_is() {
        for (b, name) in ascii_names() {
            let mut out = String::new();
            let changed = lowercase(&name, &mut out);
            assert_eq!(changed, b.is_ascii_uppercase(), "{name:?}");
            if changed {
                assert_eq!(out, name.to_lowercase());
            }
        }
        let mut out = String::new();
        assert!(lowercase("abcdefgÉ", &mut out));
        assert_eq!(out, "abcdefgé");
        assert!(!lowercase("abcdefgé", &mut out));
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
