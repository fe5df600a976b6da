//! The checks that make a batch from untrusted bytes safe to read.

use crate::{string_span, Batch, FieldKind, Format, Span};
use std::fmt;

/// Why a batch is malformed. Names the record and what is wrong, never the data.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchError {
    /// The bytes are not a bincode-encoded batch of this contract's version.
    Decode(String),
    /// A span points outside the array (or arena) it refers to.
    OutOfRange {
        /// Which record, e.g. `point 3 tags`.
        what: String,
        /// The offending span.
        span: Span,
        /// Length of what it refers to.
        limit: usize,
    },
    /// A string span is not valid UTF-8 (or splits a character).
    InvalidUtf8 {
        /// Which record, e.g. `tag 7 value`.
        what: String,
    },
    /// A record carries a code this version does not define.
    UnknownCode {
        /// Which record, e.g. `field 2 kind`.
        what: String,
        /// The code.
        code: u32,
    },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Decode(e) => write!(f, "not a boulder:transform@0.1.0 batch: {e}"),
            BatchError::OutOfRange { what, span, limit } => write!(
                f,
                "{what} span ({}, {}) is out of range (length {limit})",
                span.start, span.len
            ),
            BatchError::InvalidUtf8 { what } => write!(f, "{what} is not valid UTF-8"),
            BatchError::UnknownCode { what, code } => write!(f, "{what} has unknown code {code}"),
        }
    }
}

impl std::error::Error for BatchError {}

impl Batch {
    /// Checks every span, index and code, and that every string span holds whole
    /// UTF-8 characters.
    ///
    /// After this succeeds the accessors of [`Batch`] and [`crate::PointRef`] return
    /// exactly what the records say. The host runs it on every guest's output and the
    /// guest SDK on every input, so neither side trusts the other's bytes.
    pub fn validate(&self) -> Result<(), BatchError> {
        for (i, s) in self.sources.iter().enumerate() {
            self.check_str(s.topic, || format!("source {i} topic"))?;
            if Format::from_code(s.format).is_none() {
                return Err(BatchError::UnknownCode {
                    what: format!("source {i} format"),
                    code: s.format,
                });
            }
        }
        for (i, t) in self.tags.iter().enumerate() {
            self.check_str(t.key, || format!("tag {i} key"))?;
            self.check_str(t.value, || format!("tag {i} value"))?;
        }
        for (i, f) in self.fields.iter().enumerate() {
            self.check_str(f.key, || format!("field {i} key"))?;
            match FieldKind::from_code(f.kind) {
                Some(FieldKind::String) => {
                    self.check_str(string_span(f.bits), || format!("field {i} value"))?
                }
                Some(_) => {}
                None => {
                    return Err(BatchError::UnknownCode {
                        what: format!("field {i} kind"),
                        code: f.kind,
                    })
                }
            }
        }
        for (i, p) in self.points.iter().enumerate() {
            self.check_str(p.measurement, || format!("point {i} measurement"))?;
            self.check_str(p.tenant, || format!("point {i} tenant"))?;
            check_range(p.tags, self.tags.len(), || format!("point {i} tags"))?;
            check_range(p.fields, self.fields.len(), || format!("point {i} fields"))?;
            if p.source as usize >= self.sources.len() {
                return Err(BatchError::OutOfRange {
                    what: format!("point {i} source"),
                    span: Span {
                        start: p.source,
                        len: 1,
                    },
                    limit: self.sources.len(),
                });
            }
        }
        Ok(())
    }

    // The arena is a `String`, so it is UTF-8 as a whole (decoding checked it once);
    // a span is then UTF-8 exactly when both its ends fall on character boundaries.
    fn check_str(&self, span: Span, what: impl Fn() -> String) -> Result<(), BatchError> {
        check_range(span, self.arena.len(), &what)?;
        let (start, end) = (span.start as usize, span.end() as usize);
        if self.arena.is_char_boundary(start) && self.arena.is_char_boundary(end) {
            Ok(())
        } else {
            Err(BatchError::InvalidUtf8 { what: what() })
        }
    }
}

fn check_range(span: Span, limit: usize, what: impl Fn() -> String) -> Result<(), BatchError> {
    if span.end() > limit as u64 {
        return Err(BatchError::OutOfRange {
            what: what(),
            span,
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FieldValue, PointRecord, TagRecord};

    fn one_point() -> Batch {
        let mut b = Batch::new();
        let s = b.source("t", Format::InfluxLine);
        let m = b.push_str("m");
        b.begin_point(m, 0, s);
        b.push_field_value("f", FieldValue::String("v"));
        b
    }

    #[test]
    fn accepts_a_built_batch() {
        one_point().validate().unwrap();
    }

    #[test]
    fn rejects_a_measurement_past_the_arena() {
        let mut b = one_point();
        b.points[0].measurement = Span { start: 1, len: 100 };
        let err = b.validate().unwrap_err();
        assert!(err.to_string().contains("point 0 measurement"), "{err}");
    }

    #[test]
    fn rejects_a_span_that_overflows_u32() {
        let mut b = one_point();
        b.points[0].measurement = Span {
            start: u32::MAX,
            len: u32::MAX,
        };
        assert!(matches!(b.validate(), Err(BatchError::OutOfRange { .. })));
    }

    #[test]
    fn rejects_a_string_that_splits_a_character() {
        let mut b = Batch::new();
        let s = b.source("t", Format::InfluxLine);
        let m = b.push_str("é");
        b.begin_point(
            Span {
                start: m.start,
                len: 1,
            },
            0,
            s,
        );
        b.push_field_value("f", FieldValue::Int(1));
        assert!(matches!(b.validate(), Err(BatchError::InvalidUtf8 { .. })));
    }

    #[test]
    fn rejects_unknown_codes_and_bad_indices() {
        let mut b = one_point();
        b.fields[0].kind = 9;
        assert!(matches!(b.validate(), Err(BatchError::UnknownCode { .. })));

        let mut b = one_point();
        b.sources[0].format = 4;
        assert!(matches!(b.validate(), Err(BatchError::UnknownCode { .. })));

        let mut b = one_point();
        b.points[0].source = 1;
        assert!(matches!(b.validate(), Err(BatchError::OutOfRange { .. })));

        let mut b = one_point();
        b.points.push(PointRecord {
            tags: Span { start: 0, len: 1 },
            ..b.points[0]
        });
        assert!(b.validate().is_err());
        b.tags.push(TagRecord::default());
        b.validate().unwrap();
    }
}
