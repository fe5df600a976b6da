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

/// Decodes a batch, runs `transform` over it and encodes the kept points.
pub(crate) fn process_bytes<T: Transform>(
    transform: &mut T,
    input: &[u8],
) -> Result<(Vec<u8>, Vec<Rejection>), ProcessError> {
    let input = codec::decode(input).map_err(ProcessError::InvalidBatch)?;
    let (output, rejections) = transform_batch(transform, &input);
    Ok((codec::encode(&output), rejections))
}

/// Runs `transform` over every point of `input`, in order.
///
/// The output batch starts with a copy of the input's string arena, so a point that
/// is kept unchanged costs copying its fixed-size records and nothing else; a
/// renamed string is appended to the arena.
pub fn transform_batch<T: Transform>(transform: &mut T, input: &Batch) -> (Batch, Vec<Rejection>) {
    let mut output = Batch {
        arena: input.arena.clone(),
        sources: input.sources.clone(),
        points: Vec::with_capacity(input.points.len()),
        tags: Vec::with_capacity(input.tags.len()),
        fields: Vec::with_capacity(input.fields.len()),
    };
    let mut rejections = Vec::new();
    for index in 0..input.points.len() {
        let mark = (output.points.len(), output.tags.len(), output.fields.len());
        let verdict = transform.process(&mut Point::copy_of(&mut output, input, index));
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
        }
    }
    (output, rejections)
}
