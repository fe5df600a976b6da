//! `validate`: makes every point acceptable to a Prometheus-compatible database.
//!
//! - In the measurement, field keys and tag keys, every character outside
//!   `[a-zA-Z0-9_:]` becomes `_` (one `_` per character, so `é` becomes `_`).
//! - A point whose measurement does not start with a letter after that is dropped:
//!   it cannot be a metric name.
//! - Tags whose key starts with `__` (reserved by Prometheus) or whose key or value
//!   is empty are removed.
//! - NaN and ±Inf float fields, and string fields, follow a policy each:
//!   `drop-field` (the default), `keep`, or `dead-letter` (the whole point).
//! - A point left without fields is dropped.
//!
//! Params: `non_finite = "drop-field" | "keep" | "dead-letter"`, `strings = ...`.
#![forbid(unsafe_code)]

use boulder_guest_sdk::scan::{any_word, bytes_in, HIGH_BITS};
use boulder_guest_sdk::{export, FieldValue, Params, Point, Transform, Verdict};
use serde::Deserialize;

/// What to do with a field whose value a Prometheus database cannot store.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Remove the field, keep the rest of the point.
    #[default]
    DropField,
    /// Keep the field as it is.
    Keep,
    /// Dead-letter the whole point.
    DeadLetter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateParams {
    #[serde(default)]
    non_finite: Policy,
    #[serde(default)]
    strings: Policy,
}

/// The `validate` transform.
pub struct Validate {
    non_finite: Policy,
    strings: Policy,
    // Where sanitized names are written, reused from name to name.
    name: String,
}

impl Transform for Validate {
    fn init(params: Params) -> Result<Self, String> {
        let p: ValidateParams = params.parse()?;
        Ok(Validate {
            non_finite: p.non_finite,
            strings: p.strings,
            name: String::new(),
        })
    }

    // Inlined into the SDK's loop over points: a call per point per stage cost
    // 9-10 ns per point over the three stages, in the sandbox and natively alike.
    #[inline(always)]
    fn process(&mut self, point: &mut Point<'_>) -> Verdict {
        if sanitize(point.measurement(), &mut self.name) {
            point.set_measurement(&self.name);
        }
        if !point
            .measurement()
            .starts_with(|c: char| c.is_ascii_alphabetic())
        {
            return Verdict::drop("measurement does not start with a letter");
        }

        // Nearly every point has nothing to change: one read-only pass over its
        // tags and one over its fields say so, cheaper than the editing loops'
        // lookups by index.
        let tags_clean = point
            .tags()
            .all(|(key, value)| !needs_sanitizing(key) && !is_removed(key, value));
        let mut i = 0;
        while !tags_clean && i < point.tag_count() {
            let (key, value) = point.tag_at(i);
            let sanitized = sanitize(key, &mut self.name);
            let key = if sanitized { self.name.as_str() } else { key };
            if is_removed(key, value) {
                point.remove_tag_at(i);
                continue;
            }
            if sanitized {
                point.set_tag_key_at(i, &self.name);
            }
            i += 1;
        }

        let fields_clean = point
            .fields()
            .all(|(key, value)| self.policy(value) == Policy::Keep && !needs_sanitizing(key));
        let mut i = 0;
        while !fields_clean && i < point.field_count() {
            let (key, value) = point.field_at(i);
            let policy = self.policy(value);
            match policy {
                Policy::Keep => {}
                Policy::DropField => {
                    point.remove_field_at(i);
                    continue;
                }
                Policy::DeadLetter => {
                    return Verdict::dead_letter(match value {
                        FieldValue::String(_) => "string field",
                        _ => "non-finite float field",
                    })
                }
            }
            if sanitize(key, &mut self.name) {
                point.set_field_key_at(i, &self.name);
            }
            i += 1;
        }
        if point.field_count() == 0 {
            return Verdict::drop("no fields");
        }
        Verdict::Keep
    }
}

/// Whether a tag with this (sanitized) key and value is removed: an empty key or
/// value, or a key that Prometheus reserves.
#[inline(always)]
fn is_removed(key: &str, value: &str) -> bool {
    key.is_empty() || key.starts_with("__") || value.is_empty()
}

impl Validate {
    /// What happens to a field with this value.
    #[inline(always)]
    fn policy(&self, value: FieldValue<'_>) -> Policy {
        match value {
            FieldValue::Float(v) if !v.is_finite() => self.non_finite,
            FieldValue::String(_) => self.strings,
            _ => Policy::Keep,
        }
    }
}

/// Whether a word has a byte outside `[a-zA-Z0-9_:]` (bytes beyond ASCII are).
fn has_other_than_name_bytes(w: u64) -> bool {
    let name = bytes_in(w, b'0', b':') // the digits, then ':'
        | bytes_in(w, b'A', b'Z')
        | bytes_in(w, b'_', b'_')
        | bytes_in(w, b'a', b'z');
    name != HIGH_BITS
}

/// `has_other_than_name_bytes` for one byte: only names that need sanitizing get
/// here, a character at a time.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// Writes `name` with every character outside `[a-zA-Z0-9_:]` replaced by `_` to
/// `out` and returns `true`, or returns `false` when `name` is already clean (the
/// common case, which writes nothing).
///
/// The common case is inlined into the caller, the rest is not: a call per name
/// costs more than the scan itself in the sandbox.
#[inline(always)]
pub fn sanitize(name: &str, out: &mut String) -> bool {
    needs_sanitizing(name) && sanitize_into(name, out)
}

/// Whether `name` has a character outside `[a-zA-Z0-9_:]`.
#[inline(always)]
fn needs_sanitizing(name: &str) -> bool {
    any_word(name.as_bytes(), has_other_than_name_bytes)
}

/// [`sanitize`] for a name that has a byte to replace.
#[inline(never)]
fn sanitize_into(name: &str, out: &mut String) -> bool {
    out.clear();
    out.extend(name.chars().map(|c| {
        if c.is_ascii() && is_name_byte(c as u8) {
            c
        } else {
            '_'
        }
    }));
    true
}

export!(Validate);

#[cfg(test)]
mod tests {
    use super::*;
    use boulder_guest_sdk::testing::{ascii_names, point, run, TestPoint};

    fn validate(params: &str, points: &[TestPoint]) -> boulder_guest_sdk::testing::Output {
        let mut t = Validate::init(Params::from_json(params)).unwrap();
        run(&mut t, points)
    }

    #[test]
    fn sanitizes_names_and_keeps_colons() {
        let out = validate(
            "",
            &[point("http.requests:rate")
                .tag("host-name", "a b")
                .tag("zoné", "x")
                .field("p99 latency", 1.5)],
        );
        assert_eq!(
            out.kept,
            vec![point("http_requests:rate")
                .tag("host_name", "a b")
                .tag("zon_", "x")
                .field("p99_latency", 1.5)]
        );
    }

    #[test]
    fn leaves_clean_points_alone() {
        let p = point("cpu")
            .tag("host", "a")
            .field("usage_idle", 99.0)
            .timestamp(7);
        assert_eq!(validate("", std::slice::from_ref(&p)).kept, vec![p]);
    }

    #[test]
    fn drops_points_whose_name_does_not_start_with_a_letter() {
        let out = validate(
            "",
            &[
                point("").field("x", 1.0),
                point("9lives").field("x", 1.0),
                point("_hidden").field("x", 1.0),
                point("éclair").field("x", 1.0),
                point(":colon").field("x", 1.0),
            ],
        );
        assert!(out.kept.is_empty());
        assert_eq!(out.dropped().len(), 5);
        assert!(out
            .dropped()
            .iter()
            .all(|(_, r)| *r == "measurement does not start with a letter"));
    }

    #[test]
    fn removes_reserved_and_empty_tags() {
        let out = validate(
            "",
            &[point("m")
                .tag("__name__", "x")
                .tag("..sneaky", "y")
                .tag("empty", "")
                .tag("", "nokey")
                .tag("ok", "v")
                .field("f", 1i64)],
        );
        assert_eq!(out.kept, vec![point("m").tag("ok", "v").field("f", 1i64)]);
    }

    #[test]
    fn drops_non_finite_and_string_fields_by_default() {
        let out = validate(
            "",
            &[point("m")
                .field("nan", f64::NAN)
                .field("inf", f64::INFINITY)
                .field("neg", f64::NEG_INFINITY)
                .field("s", "text")
                .field("ok", 2u64)],
        );
        assert_eq!(out.kept, vec![point("m").field("ok", 2u64)]);
    }

    #[test]
    fn a_point_left_without_fields_drops() {
        let out = validate("", &[point("m").field("s", "text"), point("m")]);
        assert_eq!(out.dropped(), vec![(0, "no fields"), (1, "no fields")]);
    }

    #[test]
    fn policies_keep_or_dead_letter() {
        let keep = validate(
            r#"{"non_finite":"keep","strings":"keep"}"#,
            &[point("m").field("s", "text").field("inf", f64::INFINITY)],
        );
        assert_eq!(
            keep.kept,
            vec![point("m").field("s", "text").field("inf", f64::INFINITY)]
        );
        let dlq = validate(
            r#"{"non_finite":"dead-letter","strings":"dead-letter"}"#,
            &[
                point("m").field("nan", f64::NAN),
                point("m").field("s", "x"),
                point("m").field("ok", true),
            ],
        );
        assert_eq!(
            dlq.dead_lettered(),
            vec![(0, "non-finite float field"), (1, "string field")]
        );
        assert_eq!(dlq.kept, vec![point("m").field("ok", true)]);
    }

    #[test]
    fn refuses_unknown_params() {
        let err = Validate::init(Params::from_json(r#"{"strings":"explode"}"#))
            .err()
            .unwrap();
        assert!(err.contains("unknown variant `explode`"), "{err}");
        let err = Validate::init(Params::from_json(r#"{"nan":"keep"}"#))
            .err()
            .unwrap();
        assert!(err.contains("unknown field `nan`"), "{err}");
    }

    fn sanitized(name: &str) -> Option<String> {
        let mut out = String::new();
        sanitize(name, &mut out).then_some(out)
    }

    #[test]
    fn the_word_check_agrees_with_the_byte_table() {
        for (b, name) in ascii_names() {
            assert_eq!(sanitized(&name).is_none(), is_name_byte(b), "{name:?}");
        }
        assert_eq!(sanitized("abcdefgé"), Some("abcdefg_".into()));
    }

    #[test]
    fn sanitize_replaces_each_character_once() {
        assert_eq!(sanitized("a-b"), Some("a_b".into()));
        assert_eq!(sanitized("日本"), Some("__".into()));
        assert_eq!(sanitized("a\\,b"), Some("a__b".into()));
        assert_eq!(sanitized("ok:name_1"), None);
    }
}
