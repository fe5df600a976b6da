//! The loop over a batch's points, shared by the component export and the tests.

use crate::point::Point;
use crate::Transform;
use boulder_batch::{codec, Batch, BatchError};
use std::borrow::Cow;

/// What a transform decides about a point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the point, with whatever changes (and splits) were made to it.
    Keep,
    /// Discard the point on purpose. Boulder counts drops by reason, so keep the
    /// number of distinct reasons small: no values in them.
    Drop(Cow<'static, str>),
    /// The point is bad and must not be lost: Boulder writes it to the dead-letter
    /// queue with the reason.
    DeadLetter(Cow<'static, str>),
}

impl Verdict {
    /// [`Verdict::Drop`] with this reason.
    pub fn drop(reason: impl Into<Cow<'static, str>>) -> Verdict {
        Verdict::Drop(reason.into())
    }

    /// [`Verdict::DeadLetter`] with this reason.
    pub fn dead_letter(reason: impl Into<Cow<'static, str>>) -> Verdict {
        Verdict::DeadLetter(reason.into())
    }

    /// The reason of a drop or dead-letter; empty for [`Verdict::Keep`].
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Keep => "",
            Verdict::Drop(r) | Verdict::DeadLetter(r) => r,
        }
    }
}

/// Whether every point's tag and field records follow the previous point's, with
/// none shared: true of every batch the host builds and of every answer of this SDK.
fn records_are_disjoint(batch: &Batch) -> bool {
    let (mut tags_end, mut fields_end) = (0, 0);
    batch.points.iter().all(|p| {
        let disjoint =
            u64::from(p.tags.start) >= tags_end && u64::from(p.fields.start) >= fields_end;
        tags_end = tags_end.max(p.tags.end());
        fields_end = fields_end.max(p.fields.end());
        disjoint
    })
}

/// An input point that the transform did not keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Index of the point in the input batch.
    pub point: u32,
    /// [`Verdict::Drop`] or [`Verdict::DeadLetter`], with the reason.
    pub verdict: Verdict,
}

pub(crate) enum ProcessError {
    InvalidBatch(BatchError),
}

/// Decodes a batch, runs `transform` over it and encodes the kept points. When the
/// transform kept every point as it was, the answer is the input itself: nothing
/// to encode here, and for the host an answer equal to what it sent needs no check.
///
/// # Safety
/// `input_bytes` must be a valid batch: one that [`codec::check`] accepts. The
/// host checks every batch it passes to a guest (the contract says so), so a guest
/// need not check it again, and does not: the points' strings are read without
/// bounds checks. Bytes that fail only the layout (not a batch at all) are an
/// `InvalidBatch` error, not undefined behaviour.
pub(crate) unsafe fn process_bytes<T: Transform>(
    transform: &mut T,
    input_bytes: Vec<u8>,
) -> Result<(Vec<u8>, Vec<Rejection>), ProcessError> {
    // SAFETY: the caller promises a valid batch, whose arena is UTF-8.
    let mut input =
        unsafe { codec::decode_checked(&input_bytes) }.map_err(ProcessError::InvalidBatch)?;
    // The answer's arena starts as the input's strings: moved there, not copied
    // (the loop reads the input's records, never its strings).
    let strings = std::mem::take(&mut input.arena);
    // SAFETY: the caller promises that the bytes are valid, so the batch is, and
    // `strings` are its strings.
    let answer = unsafe { run_points(transform, &input, strings) };
    if answer.is_input(&input) {
        return Ok((input_bytes, answer.rejections));
    }
    Ok((codec::encode(&answer.output), answer.rejections))
}

/// Runs `transform` over every point of `input`, in order.
///
/// The output batch starts with a copy of the input's string arena, so a point that
/// is kept unchanged costs copying its fixed-size records and nothing else; a
/// renamed string is appended to the arena.
///
/// # Safety
/// `input` must be valid: every span in the bounds of what it refers to and every
/// string span on character boundaries, as [`Batch::validate`] checks. Every
/// batch built with `Batch`'s own methods is; the points' strings are read
/// without bounds checks.
pub unsafe fn transform_batch<T: Transform>(
    transform: &mut T,
    input: &Batch,
) -> (Batch, Vec<Rejection>) {
    // SAFETY: the caller promises that `input` is valid.
    let answer = unsafe { run_points(transform, input, input.arena.clone()) };
    (answer.output, answer.rejections)
}

/// What [`run_points`] made of a batch.
struct Answer {
    output: Batch,
    rejections: Vec<Rejection>,
    // Whether the output's records started as copies of the input's.
    records_in_place: bool,
    // Whether any kept point's records were written.
    edited: bool,
    // Whether a string was added to the arena.
    strings_added: bool,
}

impl Answer {
    /// Whether the output is the input, record for record and byte for byte:
    /// every point kept in place, none edited, split or rejected, no string added.
    fn is_input(&self, input: &Batch) -> bool {
        self.records_in_place
            && !self.edited
            && self.rejections.is_empty()
            && self.output.points.len() == input.points.len()
            && !self.strings_added
    }
}

/// [`transform_batch`], telling also whether anything was edited. The output's
/// arena starts as `strings`, the input's strings (its arena, moved or copied: the
/// input's own arena is not read here).
///
/// # Safety
/// `input`'s records must be valid (as [`Batch::validate`] checks) against the
/// arena `strings`: the [`Point`]s made here read their strings without bounds
/// checks.
unsafe fn run_points<T: Transform>(transform: &mut T, input: &Batch, strings: String) -> Answer {
    // The records copied whole, once, for each point's first copy to use in place
    // (see `Point::copy_of`); a dropped point's records stay, referred to by
    // nothing. Not when input points share records: editing one would change the
    // other.
    let records_in_place = records_are_disjoint(input);
    let (tags, fields) = if records_in_place {
        (input.tags.clone(), input.fields.clone())
    } else {
        (
            Vec::with_capacity(input.tags.len()),
            Vec::with_capacity(input.fields.len()),
        )
    };
    let input_strings = strings.len();
    let mut output = Batch {
        arena: strings,
        sources: input.sources.clone(),
        points: Vec::with_capacity(input.points.len()),
        tags,
        fields,
    };
    let mut rejections = Vec::new();
    let mut edited = false;
    for index in 0..input.points.len() {
        let mark = (output.points.len(), output.tags.len(), output.fields.len());
        // SAFETY: `input`'s records are valid against the strings `output`'s
        // arena starts with (this function's precondition), and `output` is built
        // from them as `Point` requires.
        let mut point = unsafe { Point::copy_of(&mut output, input, index, records_in_place) };
        let verdict = transform.process(&mut point);
        let point_edited = point.edited();
        if !matches!(verdict, Verdict::Keep) {
            // Forget the copies made for this point; strings it appended stay in the
            // arena unreferenced, which is cheaper than compacting.
            output.points.truncate(mark.0);
            output.tags.truncate(mark.1);
            output.fields.truncate(mark.2);
            rejections.push(Rejection {
                point: index as u32,
                verdict,
            });
        } else {
            edited |= point_edited;
        }
    }
    Answer {
        strings_added: output.arena.len() != input_strings,
        output,
        rejections,
        records_in_place,
        edited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{from_batch, point, run, to_batch};
    use crate::{FieldValue, Params};

    /// Edits by measurement: `grow` gets a tag and a field, `shrink` loses its
    /// first tag and field, `drop` is dropped after being edited, `split` is split
    /// in two with a tag each.
    struct Editor;

    impl Transform for Editor {
        fn init(_: Params) -> Result<Self, String> {
            Ok(Editor)
        }

        fn process(&mut self, p: &mut Point<'_>) -> Verdict {
            match p.measurement() {
                "grow" => {
                    p.set_tag("added", "yes");
                    p.set_field("extra", FieldValue::Int(7));
                }
                "shrink" => {
                    p.remove_tag_at(0);
                    p.remove_field_at(0);
                }
                "drop" => {
                    p.set_tag("added", "never seen");
                    p.remove_field_at(0);
                    return Verdict::drop("dropped");
                }
                "split" => {
                    p.set_tag("copy", "1");
                    p.split();
                    p.set_tag("copy", "2");
                }
                _ => {}
            }
            Verdict::Keep
        }
    }

    fn input() -> Vec<crate::testing::TestPoint> {
        ["keep", "grow", "shrink", "drop", "split", "keep"]
            .iter()
            .enumerate()
            .map(|(i, m)| {
                point(m)
                    .tag("a", &format!("a{i}"))
                    .tag("b", &format!("b{i}"))
                    .field("x", i as i64)
                    .field("y", 1.5)
            })
            .collect()
    }

    #[test]
    fn edits_grow_shrink_split_and_drop_points_between_untouched_ones() {
        let out = run(&mut Editor, &input());
        let base = |m: &str, i: usize| {
            point(m)
                .tag("a", &format!("a{i}"))
                .tag("b", &format!("b{i}"))
                .field("x", i as i64)
                .field("y", 1.5)
        };
        let split = |copy: &str| {
            point("split")
                .tag("a", "a4")
                .tag("b", "b4")
                .tag("copy", copy)
                .field("x", 4i64)
                .field("y", 1.5)
        };
        assert_eq!(
            out.kept,
            vec![
                base("keep", 0),
                point("grow")
                    .tag("a", "a1")
                    .tag("b", "b1")
                    .tag("added", "yes")
                    .field("x", 1i64)
                    .field("y", 1.5)
                    .field("extra", 7i64),
                point("shrink").tag("b", "b2").field("y", 1.5),
                split("1"),
                split("2"),
                base("keep", 5),
            ]
        );
        assert_eq!(out.dropped(), vec![(3, "dropped")]);
    }

    type Edit = fn(&mut Point<'_>);

    /// Applies one edit to every point.
    struct EditEach(Edit);

    impl Transform for EditEach {
        fn init(_: Params) -> Result<Self, String> {
            Err("built directly".into())
        }

        fn process(&mut self, p: &mut Point<'_>) -> Verdict {
            (self.0)(p);
            Verdict::Keep
        }
    }

    #[test]
    fn a_batch_kept_as_it_is_is_answered_with_its_own_bytes() {
        let bytes = codec::encode(&to_batch(&input()));
        let (ptr, expected) = (bytes.as_ptr(), bytes.clone());
        // Reads everything, writes nothing.
        let mut reader = EditEach(|p| {
            let _ = (p.measurement(), p.tags().count(), p.fields().count());
        });
        // SAFETY: the encoding of a batch built with `Batch`'s methods.
        let (answer, rejections) = unsafe { process_bytes(&mut reader, bytes) }.ok().unwrap();
        assert!(rejections.is_empty());
        assert_eq!(answer, expected);
        assert_eq!(answer.as_ptr(), ptr, "the input's own buffer, not a copy");
    }

    #[test]
    fn every_kind_of_edit_is_answered_with_a_new_batch() {
        // Each edit leaves the number of points, records and string bytes as they
        // were, so only the record of the edit tells the answer from the input.
        let edits: [(&str, Edit); 6] = [
            ("timestamp", |p| p.set_timestamp_ns(p.timestamp_ns() + 1)),
            ("field value", |p| {
                p.set_field_value_at(0, FieldValue::Int(-1))
            }),
            ("remove tag", |p| p.remove_tag_at(0)),
            ("remove field", |p| p.remove_field_at(1)),
            ("retain tags", |p| p.retain_tags(|k, _| k != "b")),
            ("split", |p| p.split()),
        ];
        for (name, edit) in edits {
            let input = input();
            let bytes = codec::encode(&to_batch(&input));
            // SAFETY: the encoding of a batch built with `Batch`'s methods.
            let (answer, _) = unsafe { process_bytes(&mut EditEach(edit), bytes.clone()) }
                .ok()
                .unwrap();
            assert_ne!(answer, bytes, "{name}");
            // SAFETY: built with `Batch`'s methods.
            let expected = unsafe { transform_batch(&mut EditEach(edit), &to_batch(&input)) }.0;
            assert_eq!(
                from_batch(&codec::decode(&answer).unwrap()),
                from_batch(&expected),
                "{name}"
            );
        }
    }

    /// Reads are not checked in release builds, which trust the batch (the host
    /// checks every batch it passes); debug builds, the tests', still check each
    /// one, so that a batch breaking that promise fails a test instead of reading
    /// past its arena.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "the batch is invalid")]
    fn a_span_past_the_arena_fails_in_debug_builds() {
        let mut input = to_batch(&[point("m").field("x", 1i64)]);
        input.points[0].measurement.len = 1_000;
        assert!(input.validate().is_err());
        let mut reader = EditEach(|p| {
            let _ = p.measurement();
        });
        // SAFETY: not met, on purpose: the debug check panics before the read.
        let _ = unsafe { transform_batch(&mut reader, &input) };
    }

    #[test]
    fn points_that_share_records_are_edited_apart() {
        // Two points whose spans cover the same tag and field records, as a guest
        // may answer: shrinking the first must not shrink the second.
        let mut input = to_batch(&[point("shrink").tag("a", "1").tag("b", "2").field("x", 1i64)]);
        let mut twin = input.points[0];
        twin.measurement = input.push_str("keep");
        input.points.push(twin);
        input.validate().unwrap();
        assert!(!records_are_disjoint(&input));

        // SAFETY: validated above.
        let (output, rejections) = unsafe { transform_batch(&mut Editor, &input) };
        output.validate().unwrap();
        assert!(rejections.is_empty());
        assert_eq!(
            from_batch(&output),
            vec![
                point("shrink").tag("b", "2"),
                point("keep").tag("a", "1").tag("b", "2").field("x", 1i64),
            ]
        );
    }
}
