//! What a guest answers, and the host's checks of it: the answer's size and
//! encoding, that it accounts for every input point, that its rejections name
//! input points (once each), and that its text stays bounded.
//!
//! Text from a guest (reasons, error and panic messages, and trap texts, which
//! name the guest's own functions) is cut to [`MAX_GUEST_TEXT`] bytes as it
//! arrives: it ends up in dead-letter headers and metric labels.

use super::bindings::exports::boulder::transform::stage as wit;
use super::Failure;
use crate::config::Limits;
use boulder_batch::{codec, Batch};

/// Longest text kept from a guest, in bytes: a log line, a reason, an error or
/// panic message, a trap's text. The rest is cut, and a marker says how much.
pub const MAX_GUEST_TEXT: usize = 1024;
/// How much an output may exceed `ratio x input` regardless of the ratio.
const OUTPUT_SLACK_BYTES: usize = 64 * 1024;

/// `text` cut to [`MAX_GUEST_TEXT`] bytes (at a character boundary), with a
/// marker saying how long it was.
pub fn cut(mut text: String) -> String {
    if text.len() <= MAX_GUEST_TEXT {
        return text;
    }
    let mut end = MAX_GUEST_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let original = text.len();
    text.truncate(end);
    text.push_str(&format!("… [cut: {original} bytes in all]"));
    text
}

/// An input point the stage did not keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Index in the stage's input batch.
    pub point: usize,
    /// True for dead-letter, false for drop.
    pub dead_letter: bool,
    /// The guest's reason.
    pub reason: String,
}

/// A guest's answer before the host has looked inside: the kept points still
/// encoded (only their size is checked), and the rejections as the guest gave them.
#[derive(Debug)]
pub struct RawOutput {
    /// The kept points, encoded by the guest.
    pub bytes: Vec<u8>,
    /// The input points it did not keep.
    pub rejections: Vec<Rejection>,
}

/// What a stage made of a batch, checked against its input.
#[derive(Debug)]
pub struct StageOutput {
    /// The kept points, validated.
    pub batch: Batch,
    /// The input points it did not keep.
    pub rejections: Vec<Rejection>,
}

/// The contract's "one entry per input point that was dropped or dead-lettered":
/// a rejection names a point of the input, and no point twice (so that a guest
/// cannot turn one point into many dead letters).
pub(crate) fn check_rejections(
    input_bytes: &[u8],
    rejections: &[wit::Rejection],
) -> Result<(), String> {
    let len = codec::PointsInPlace::new(input_bytes)
        .map_err(|e| e.to_string())?
        .len();
    if rejections.len() > len {
        return Err(format!(
            "{} rejections for a batch of {len} points",
            rejections.len()
        ));
    }
    let mut seen = vec![false; len];
    for r in rejections {
        match seen.get_mut(r.point as usize) {
            Some(true) => return Err(format!("point {} is rejected twice", r.point)),
            Some(seen) => *seen = true,
            None => return Err(rejection_out_of_range(r.point as usize, len).to_string()),
        }
    }
    Ok(())
}

/// The largest answer a stage may give to an input of `input_len` bytes.
pub(crate) fn output_limit(input_len: usize, limits: &Limits) -> usize {
    input_len
        .saturating_mul(limits.max_output_ratio as usize)
        .saturating_add(OUTPUT_SLACK_BYTES)
}

/// Checks a guest's answer against its input: encoding, and that every input point
/// is accounted for exactly once and no output point claims a foreign origin.
/// `output` is what [`Stage::call`] returned, so its bytes are checked already.
pub(crate) fn check_answer(input: &Batch, output: RawOutput) -> Result<StageOutput, Failure> {
    check_answer_to(input.len(), |i| input.points[i].origin, output)
}

/// [`check_answer`] for an input of `len` points whose `i`th has origin
/// `origin_of(i)`: an input numbered as it was encoded is not at hand in
/// numbered form.
pub(crate) fn check_answer_to(
    len: usize,
    origin_of: impl Fn(usize) -> u32,
    output: RawOutput,
) -> Result<StageOutput, Failure> {
    let batch = codec::decode_trusted(&output.bytes)
        .map_err(|e| Failure::MalformedOutput(e.to_string()))?;

    // Per origin: 0 = not in the input, 1 = in the input, 2 = accounted for.
    let origins = (0..len)
        .map(|i| origin_of(i) as usize + 1)
        .max()
        .unwrap_or(0);
    let mut state = vec![0u8; origins];
    for i in 0..len {
        state[origin_of(i) as usize] = 1;
    }
    for (i, p) in batch.points.iter().enumerate() {
        match state.get_mut(p.origin as usize) {
            Some(s) if *s > 0 => *s = 2,
            _ => {
                return Err(Failure::MalformedOutput(format!(
                    "output point {i} has origin {} that no input point has",
                    p.origin
                )))
            }
        }
    }
    for r in &output.rejections {
        if r.point >= len {
            return Err(rejection_out_of_range(r.point, len));
        }
        state[origin_of(r.point) as usize] = 2;
    }
    if let Some(i) = (0..len).position(|i| state[origin_of(i) as usize] != 2) {
        return Err(Failure::MalformedOutput(format!(
            "input point {i} was neither kept nor rejected"
        )));
    }
    Ok(StageOutput {
        batch,
        rejections: output.rejections,
    })
}

/// A rejection that names a point the input does not have.
pub(crate) fn rejection_out_of_range(point: usize, len: usize) -> Failure {
    Failure::MalformedOutput(format!("rejection of point {point} in a batch of {len}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_is_cut_at_a_character_boundary_with_its_length() {
        assert_eq!(cut("short".into()), "short");
        let long = "é".repeat(MAX_GUEST_TEXT); // 2 bytes each
        let cut = cut(long.clone());
        assert!(cut.starts_with(&"é".repeat(MAX_GUEST_TEXT / 2)));
        assert!(
            cut.ends_with(&format!("… [cut: {} bytes in all]", long.len())),
            "{cut}"
        );
        assert!(cut.len() < MAX_GUEST_TEXT + 64);
    }
}
