//! The loop over a batch's points, shared by the component export and the tests.

use crate::point::Point;
use crate::Transform;
use boulder_batch::{codec, Batch, BatchError, FieldRecord, PointRecord, TagRecord};
use std::borrow::Cow;
use std::cell::OnceCell;

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
fn records_are_disjoint(points: &[PointRecord]) -> bool {
    let (mut tags_end, mut fields_end) = (0, 0);
    points.iter().all(|p| {
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
    // The answer takes the decoded records over; the originals, needed only to
    // split a point, are decoded again then.
    let originals = Originals::Wire {
        bytes: &input_bytes,
        decoded: OnceCell::new(),
    };
    // SAFETY: the caller promises that the bytes are valid, so both decodings are.
    let answer = unsafe { run_points(transform, &mut input, originals) };
    if answer.is_input(input.points.len()) {
        return Ok((input_bytes, answer.rejections));
    }
    Ok((codec::encode(&answer.output), answer.rejections))
}

/// Runs `transform` over every point of `input`, in order.
///
/// The output batch starts with a copy of the input's string arena and records, so
/// a point that is kept unchanged costs copying one fixed-size record; a renamed
/// string is appended to the arena.
///
/// # Safety
/// `input` must be valid: every span in the bounds of what it refers to and every
/// string span on character boundaries, as [`Batch::validate`] checks (a batch
/// whose spans all come from its own `push_str`, `push_tag` and the like is).
/// The points' strings are read without bounds checks.
pub unsafe fn transform_batch<T: Transform>(
    transform: &mut T,
    input: &Batch,
) -> (Batch, Vec<Rejection>) {
    // SAFETY: the caller promises that `input` is valid, and so is its copy.
    let answer = unsafe {
        run_points(
            transform,
            &mut input.copy_with_room(),
            Originals::Batch(input),
        )
    };
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
    fn is_input(&self, input_points: usize) -> bool {
        self.records_in_place
            && !self.edited
            && self.rejections.is_empty()
            && self.output.points.len() == input_points
            && !self.strings_added
    }
}

/// The input of the loop: its points, and its tag and field records as they were
/// before any edit (a point's first copy may edit them in place), which
/// [`Point::split`] copies again.
pub(crate) struct Input<'a> {
    pub(crate) points: &'a [PointRecord],
    originals: Originals<'a>,
}

/// Where the original tag and field records are.
enum Originals<'a> {
    /// In the input batch, which the output's records were copied from.
    Batch(&'a Batch),
    /// Moved into the output: decoded again from the input's encoding, the first
    /// time a point is split.
    Wire {
        bytes: &'a [u8],
        decoded: OnceCell<Batch>,
    },
}

impl Input<'_> {
    /// The original tag records of a point.
    pub(crate) fn tags_of(&self, point: &PointRecord) -> &[TagRecord] {
        self.originals().tags_of(point)
    }

    /// The original field records of a point.
    pub(crate) fn fields_of(&self, point: &PointRecord) -> &[FieldRecord] {
        self.originals().fields_of(point)
    }

    fn originals(&self) -> &Batch {
        match &self.originals {
            Originals::Batch(batch) => batch,
            Originals::Wire { bytes, decoded } => decoded.get_or_init(|| {
                // SAFETY: the bytes that `process_bytes` was given and decoded,
                // valid by its caller's promise.
                unsafe { codec::decode_checked(bytes) }.expect("decoded once already")
            }),
        }
    }
}

/// [`transform_batch`], telling also whether anything was edited.
///
/// The answer takes over `input`'s strings and sources (which therefore need room
/// to grow, as a decoded batch or [`Batch::copy_with_room`] has) and, when no two
/// input points share records, its tag and field records too, for each point's
/// first copy to use where they are (see `Point::copy_of`; a dropped point's
/// records stay, referred to by nothing). A point's first copy may edit those in
/// place, so `originals` holds the records as they came, for [`Point::split`].
/// When input points do share records (editing one would change the other), the
/// answer starts with none, each point's are copied, and `input`'s own records
/// are the originals.
///
/// # Safety
/// `input` must be valid (as [`Batch::validate`] checks), and `originals` must
/// hold its records: the [`Point`]s made here read their strings without bounds
/// checks.
unsafe fn run_points<T: Transform>(
    transform: &mut T,
    input: &mut Batch,
    originals: Originals<'_>,
) -> Answer {
    let records_in_place = records_are_disjoint(&input.points);
    let (tags, fields) = if records_in_place {
        (
            std::mem::take(&mut input.tags),
            std::mem::take(&mut input.fields),
        )
    } else {
        Default::default()
    };
    let mut output = Batch {
        arena: std::mem::take(&mut input.arena),
        sources: std::mem::take(&mut input.sources),
        points: Vec::with_capacity(input.points.len()),
        tags,
        fields,
    };
    let input_strings = output.arena.len();
    let input: &Batch = input;
    let input = Input {
        points: &input.points,
        originals: if records_in_place {
            originals
        } else {
            Originals::Batch(input)
        },
    };
    let mut rejections = Vec::new();
    let mut edited = false;
    for index in 0..input.points.len() {
        let mark = (output.points.len(), output.tags.len(), output.fields.len());
        // SAFETY: the input's records are valid against the strings `output`'s
        // arena starts with (this function's precondition), and `output` is built
        // from them as `Point` requires.
        let mut point = unsafe { Point::copy_of(&mut output, &input, index, records_in_place) };
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

    /// Edits the first copy in place (a tag's value, a removed field), then
    /// splits: the second copy starts from the input point as it came, whether the
    /// originals are the input batch's (transform_batch) or decoded again from the
    /// encoding whose records the answer took over (a component's process_bytes).
    #[test]
    fn a_split_copy_starts_from_the_point_as_it_came() {
        struct EditThenSplit;
        impl Transform for EditThenSplit {
            fn init(_: Params) -> Result<Self, String> {
                Ok(EditThenSplit)
            }
            fn process(&mut self, p: &mut Point<'_>) -> Verdict {
                if p.measurement() == "m" {
                    p.set_tag_value_at(0, "edited");
                    p.remove_field_at(0);
                    p.split();
                    p.set_measurement("copy");
                }
                Verdict::Keep
            }
        }
        let before = point("before").tag("t", "0").field("f", 0i64);
        let m = point("m")
            .tag("t", "1")
            .tag("u", "2")
            .field("f", 1i64)
            .field("g", 2i64);
        let expected = vec![
            before.clone(),
            point("m").tag("t", "edited").tag("u", "2").field("g", 2i64),
            point("copy")
                .tag("t", "1")
                .tag("u", "2")
                .field("f", 1i64)
                .field("g", 2i64),
            before.clone(),
        ];
        let input = [before.clone(), m, before];
        assert_eq!(run(&mut EditThenSplit, &input).kept, expected);
        // SAFETY: built with `Batch`'s methods.
        let (output, _) = unsafe { transform_batch(&mut EditThenSplit, &to_batch(&input)) };
        assert_eq!(from_batch(&output), expected);
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
        assert!(!records_are_disjoint(&input.points));

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
