//! Keeping one message's trouble to itself: a group is cut into chunks of at most
//! `pipeline.max_points_per_call` points before it meets a guest, and a call that
//! fails on points of several messages is narrowed down to the messages it fails
//! on before anything is dead-lettered.
//!
//! Narrowing halves the failed call's messages and calls again on each half,
//! going on into the halves that fail, until each failing part is one message.
//! It is bounded so that a guest that fails on everything costs a failed call a
//! few more calls, not one per message: once [`failures_allowed`] of the calls it
//! makes have failed, what still fails is dead-lettered as it stands. A failed
//! call costs microseconds, so 16 may fail: one bad message is found exactly
//! among 65,536, two among 256, three among 40. A call that ran into its
//! deadline cost the whole deadline, so after one of those only the two halves
//! are tried (a call too large for its deadline passes in halves).

use crate::runtime::{Failure, StageError};
use boulder_batch::Batch;
use std::collections::VecDeque;
use std::ops::Range;

/// How many of the calls made while narrowing down a call that failed with
/// `failure` may fail before narrowing stops.
pub fn failures_allowed(failure: &Failure) -> usize {
    match failure {
        Failure::Deadline(_) => 2,
        _ => 16,
    }
}

/// A batch of more than `max` points as chunks of `max` (the last may be
/// smaller), in order, each holding only its own strings.
pub(super) fn chunks(batch: &Batch, max: usize) -> impl Iterator<Item = Batch> + '_ {
    (0..batch.len())
        .step_by(max)
        .map(move |start| batch.extract(start..(start + max).min(batch.len())))
}

/// What narrowing a failed call came to.
pub(super) struct Narrowed<T> {
    /// What the calls on parts that passed returned.
    pub(super) passed: Vec<T>,
    /// The parts that failed: indices of points of the failed call's batch, and
    /// the error of the last call that held them.
    pub(super) failed: Vec<(Vec<usize>, StageError)>,
}

/// Narrows down a call on `batch` that failed with `error`, by calling `call` on
/// parts of it; a part is the points of some of its messages (by `origin`). A
/// failure of the host's own ([`crate::runtime::Failure::is_host`]) is not
/// narrowed: it would fail the parts as well.
pub(super) fn narrow<T>(
    batch: &Batch,
    error: StageError,
    mut call: impl FnMut(&Batch) -> Result<T, StageError>,
) -> Narrowed<T> {
    let messages = points_by_message(batch);
    let mut narrowed = Narrowed {
        passed: Vec::new(),
        failed: Vec::new(),
    };
    let points = |range: Range<usize>| -> Vec<usize> { messages[range].concat() };
    if error.failure.is_host() {
        narrowed.failed.push((points(0..messages.len()), error));
        return narrowed;
    }
    let mut failures_left = failures_allowed(&error.failure);
    let mut failing: VecDeque<(Range<usize>, StageError)> = VecDeque::new();
    failing.push_back((0..messages.len(), error));
    while let Some((range, error)) = failing.pop_front() {
        if range.len() < 2 || failures_left == 0 {
            narrowed.failed.push((points(range), error));
            continue;
        }
        let middle = range.start + range.len() / 2;
        for half in [range.start..middle, middle..range.end] {
            if failures_left == 0 {
                // Untried: it shares the failed call's error.
                narrowed.failed.push((points(half), error.clone()));
                continue;
            }
            match call(&batch.extract(points(half.clone()))) {
                Ok(output) => narrowed.passed.push(output),
                Err(e) => {
                    failures_left -= 1;
                    failing.push_back((half, e));
                }
            }
        }
    }
    narrowed
}

/// The indices of `batch`'s points, grouped by message (`origin`), messages in
/// order of their first point.
fn points_by_message(batch: &Batch) -> Vec<Vec<usize>> {
    let mut messages: Vec<Vec<usize>> = Vec::new();
    let mut index_of = std::collections::HashMap::new();
    for (i, p) in batch.points.iter().enumerate() {
        let m = *index_of.entry(p.origin).or_insert_with(|| {
            messages.push(Vec::new());
            messages.len() - 1
        });
        messages[m].push(i);
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::StageId;
    use boulder_batch::{FieldValue, Format};
    use std::cell::Cell;

    /// `n` points, point `i` from message `i / per_message`.
    fn batch(n: usize, per_message: usize) -> Batch {
        let mut b = Batch::new();
        let source = b.source("t", Format::InfluxLine);
        for i in 0..n {
            let m = b.push_str("m");
            let p = b.begin_point(m, i as i64, source);
            b.push_field_value("v", FieldValue::Int(i as i64));
            b.points[p].origin = (i / per_message) as u32;
        }
        b
    }

    fn error(failure: Failure) -> StageError {
        StageError {
            stage: StageId::stage("t", 1, "x"),
            failure,
        }
    }

    /// A call that fails on any batch holding a point of a message in `bad`.
    fn failing_on<'a>(
        bad: &[u32],
        calls: &'a Cell<usize>,
    ) -> impl FnMut(&Batch) -> Result<Vec<u32>, StageError> + 'a {
        let bad = bad.to_vec();
        move |part: &Batch| {
            calls.set(calls.get() + 1);
            let origins: Vec<u32> = part.points.iter().map(|p| p.origin).collect();
            match origins.iter().any(|o| bad.contains(o)) {
                true => Err(error(Failure::Guest("bad".into()))),
                false => Ok(origins),
            }
        }
    }

    fn failed_messages<T>(batch: &Batch, narrowed: &Narrowed<T>) -> Vec<u32> {
        let mut messages: Vec<u32> = narrowed
            .failed
            .iter()
            .flat_map(|(points, _)| points.iter().map(|&i| batch.points[i].origin))
            .collect();
        messages.sort();
        messages.dedup();
        messages
    }

    #[test]
    fn one_bad_message_among_many_is_found_exactly() {
        let b = batch(1000 * 3, 3);
        let calls = Cell::new(0);
        let narrowed = narrow(
            &b,
            error(Failure::Guest("bad".into())),
            failing_on(&[637], &calls),
        );
        assert_eq!(failed_messages(&b, &narrowed), [637]);
        let passed: usize = narrowed.passed.iter().map(Vec::len).sum();
        assert_eq!(
            passed,
            999 * 3,
            "every point of every other message passed once"
        );
        assert_eq!(calls.get(), 20, "two calls for each of ten halvings");
    }

    #[test]
    fn several_bad_messages_are_found_in_a_group_of_a_few_dozen() {
        let b = batch(40, 1);
        let calls = Cell::new(0);
        let bad = [3, 11, 29];
        let narrowed = narrow(
            &b,
            error(Failure::Guest("bad".into())),
            failing_on(&bad, &calls),
        );
        assert_eq!(failed_messages(&b, &narrowed), bad);
        let passed: usize = narrowed.passed.iter().map(Vec::len).sum();
        assert_eq!(passed, 37);
    }

    #[test]
    fn a_guest_that_fails_on_everything_costs_a_few_calls_not_one_per_message() {
        for (failure, calls_made) in [
            (Failure::Guest("bad".into()), 16),
            (Failure::Deadline(Default::default()), 2),
        ] {
            let b = batch(1000, 1);
            let calls = Cell::new(0);
            let all: Vec<u32> = (0..1000).collect();
            let narrowed = narrow(&b, error(failure), failing_on(&all, &calls));
            assert!(narrowed.passed.is_empty());
            assert_eq!(failed_messages(&b, &narrowed), all);
            assert_eq!(calls.get(), calls_made);
            let failed_points: usize = narrowed.failed.iter().map(|(p, _)| p.len()).sum();
            assert_eq!(failed_points, 1000, "every point dead-lettered once");
        }
    }

    #[test]
    fn a_call_too_large_for_its_deadline_passes_in_halves() {
        let b = batch(10, 1);
        let calls = Cell::new(0);
        let narrowed = narrow(
            &b,
            error(Failure::Deadline(Default::default())),
            failing_on(&[], &calls),
        );
        assert!(narrowed.failed.is_empty());
        assert_eq!(narrowed.passed.len(), 2);
    }

    #[test]
    fn a_single_message_and_the_hosts_own_failures_are_not_narrowed() {
        let calls = Cell::new(0);
        let b = batch(10, 10);
        let narrowed = narrow(
            &b,
            error(Failure::Guest("bad".into())),
            failing_on(&[0], &calls),
        );
        assert_eq!(narrowed.failed.len(), 1);
        let b = batch(10, 1);
        let host = Failure::NoInstance {
            max_instances: 1,
            waited: Default::default(),
        };
        let narrowed = narrow(&b, error(host), failing_on(&[], &calls));
        assert_eq!(narrowed.failed.len(), 1);
        assert_eq!(calls.get(), 0);
    }

    #[test]
    fn chunks_cut_a_batch_in_order_and_keep_origins() {
        let b = batch(25, 25);
        let chunks: Vec<Batch> = chunks(&b, 10).collect();
        assert_eq!(
            chunks.iter().map(Batch::len).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        let timestamps: Vec<i64> = chunks
            .iter()
            .flat_map(|c| c.iter().map(|p| p.timestamp_ns()).collect::<Vec<_>>())
            .collect();
        assert_eq!(timestamps, (0..25).collect::<Vec<i64>>());
        assert!(chunks
            .iter()
            .all(|c| c.points.iter().all(|p| p.origin == 0)));
    }
}
