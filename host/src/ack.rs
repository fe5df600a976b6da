//! At-least-once bookkeeping: which consumed offsets are finished, per partition.
//!
//! Every consumed message gets an [`Ack`]. Work that carries points of the message
//! (a write to an output, a dead letter) holds a [`Ack::split`] of it and calls
//! [`Ack::done`] once the sink or the dead-letter queue has confirmed. When every
//! token of a message is done, the message is finished; a partition's offset is
//! stored only up to the last message before which *every* message is finished, so
//! out-of-order completion never commits past a gap.
//!
//! A token dropped without `done` (work abandoned: a shutdown, a bug) marks its
//! message as never finished, so its partition commits no further in this process;
//! after a restart or rebalance the message is consumed again. Duplicates are the
//! price; loss is not possible. Once a partition is revoked ([`Tracker::forget`]),
//! its tokens count for nothing, done or dropped: the next owner reads what was
//! not committed, and a later assignment of the partition here starts afresh.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Where stored offsets go: `(topic, partition, offset)` of the last finished
/// message before which everything is finished (librdkafka commits `offset + 1`).
pub type StoreOffset = Box<dyn Fn(&str, i32, i64) + Send + Sync>;

/// The finished-offsets tracker of one consumer.
pub struct Tracker {
    partitions: Mutex<HashMap<(Arc<str>, i32), Partition>>,
    /// Numbers each partition's state: a partition revoked and assigned again
    /// gets a new one, so that work finished for its former assignment (on the
    /// same offsets, read again) cannot finish messages of the new one.
    next_epoch: AtomicU64,
    store: StoreOffset,
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

struct Partition {
    /// Which assignment of the partition this is.
    epoch: u64,
    /// Offsets consumed and not finished (including abandoned ones).
    pending: BTreeSet<i64>,
    /// The lowest offset consumed: nothing below it is this process's to store.
    first_seen: Option<i64>,
    /// The highest offset consumed so far.
    last_seen: Option<i64>,
    /// The last offset stored.
    stored: Option<i64>,
    /// Messages abandoned: their offsets stay pending forever.
    abandoned: usize,
}

impl Partition {
    fn new(epoch: u64) -> Partition {
        Partition {
            epoch,
            pending: BTreeSet::new(),
            first_seen: None,
            last_seen: None,
            stored: None,
            abandoned: 0,
        }
    }
}

impl Tracker {
    /// A tracker that reports committable offsets to `store`.
    pub fn new(store: StoreOffset) -> Arc<Tracker> {
        Tracker::with_gauge(store, Default::default())
    }

    /// A tracker that also keeps `in_flight` at the number of unfinished messages.
    pub fn with_gauge(
        store: StoreOffset,
        in_flight: prometheus_client::metrics::gauge::Gauge,
    ) -> Arc<Tracker> {
        Arc::new(Tracker {
            partitions: Mutex::new(HashMap::new()),
            next_epoch: AtomicU64::new(0),
            store,
            in_flight,
        })
    }

    /// Registers a consumed message; call in offset order per partition.
    pub fn register(self: &Arc<Tracker>, topic: Arc<str>, partition: i32, offset: i64) -> Ack {
        let mut partitions = self.partitions.lock().expect("poisoned");
        let p = partitions
            .entry((topic.clone(), partition))
            .or_insert_with(|| Partition::new(self.next_epoch.fetch_add(1, Ordering::Relaxed)));
        if p.pending.insert(offset) {
            self.in_flight.inc();
        }
        p.first_seen = Some(p.first_seen.map_or(offset, |f| f.min(offset)));
        p.last_seen = Some(p.last_seen.map_or(offset, |l| l.max(offset)));
        Ack {
            message: Some(Arc::new(Message {
                tracker: self.clone(),
                topic,
                partition,
                offset,
                epoch: p.epoch,
                tokens: AtomicUsize::new(1),
            })),
        }
    }

    /// Forgets a partition (revoked in a rebalance): its late completions are ignored.
    pub fn forget(&self, topic: &str, partition: i32) {
        let mut partitions = self.partitions.lock().expect("poisoned");
        partitions.retain(|(t, p), state| {
            let revoked = &**t == topic && *p == partition;
            if revoked {
                self.in_flight.dec_by(state.pending.len() as i64);
            }
            !revoked
        });
    }

    /// Messages consumed and not yet finished, across partitions.
    pub fn pending(&self) -> usize {
        let partitions = self.partitions.lock().expect("poisoned");
        partitions.values().map(|p| p.pending.len()).sum()
    }

    /// Messages abandoned since start, across partitions.
    pub fn abandoned(&self) -> usize {
        let partitions = self.partitions.lock().expect("poisoned");
        partitions.values().map(|p| p.abandoned).sum()
    }

    fn finish(&self, topic: &Arc<str>, partition: i32, offset: i64, epoch: u64) {
        let to_store = {
            let mut partitions = self.partitions.lock().expect("poisoned");
            let Some(p) = partitions
                .get_mut(&(topic.clone(), partition))
                .filter(|p| p.epoch == epoch)
            else {
                return;
            };
            if p.pending.remove(&offset) {
                self.in_flight.dec();
            }
            let watermark = match p.pending.first() {
                Some(first) => first - 1,
                None => p.last_seen.unwrap_or(offset),
            };
            let below_start = p.first_seen.is_none_or(|f| watermark < f);
            if below_start || p.stored.is_some_and(|s| s >= watermark) {
                None
            } else {
                p.stored = Some(watermark);
                Some(watermark)
            }
        };
        if let Some(watermark) = to_store {
            (self.store)(topic, partition, watermark);
        }
    }

    fn abandon(&self, topic: &Arc<str>, partition: i32, offset: i64, epoch: u64) {
        let mut partitions = self.partitions.lock().expect("poisoned");
        let key = (topic.clone(), partition);
        match partitions.get_mut(&key).filter(|p| p.epoch == epoch) {
            Some(p) => p.abandoned += 1,
            // Revoked meanwhile: its next owner reads the message again.
            None => return,
        }
        tracing::error!(%topic, partition, offset, "work on a message was abandoned; its partition commits no further until it is consumed again");
    }
}

struct Message {
    tracker: Arc<Tracker>,
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    epoch: u64,
    tokens: AtomicUsize,
}

/// One outstanding piece of work on a consumed message.
pub struct Ack {
    message: Option<Arc<Message>>,
}

impl Ack {
    /// Another token for the same message, for another piece of work.
    pub fn split(&self) -> Ack {
        let message = self.message.as_ref().expect("a live ack").clone();
        message.tokens.fetch_add(1, Ordering::AcqRel);
        Ack {
            message: Some(message),
        }
    }

    /// This piece of work is written or dead-lettered.
    pub fn done(mut self) {
        let message = self.message.take().expect("a live ack");
        if message.tokens.fetch_sub(1, Ordering::AcqRel) == 1 {
            message.tracker.finish(
                &message.topic,
                message.partition,
                message.offset,
                message.epoch,
            );
        }
    }

    /// Whether the message's partition is still assigned as it was when the
    /// message was consumed (not revoked since, nor revoked and assigned again).
    pub fn is_current(&self) -> bool {
        let m = self.message.as_ref().expect("a live ack");
        let partitions = m.tracker.partitions.lock().expect("poisoned");
        partitions
            .get(&(m.topic.clone(), m.partition))
            .is_some_and(|p| p.epoch == m.epoch)
    }

    /// `(topic, partition, offset)` of the message.
    pub fn source(&self) -> (&str, i32, i64) {
        let m = self.message.as_ref().expect("a live ack");
        (&m.topic, m.partition, m.offset)
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(m) = self.message.take() {
            m.tracker.abandon(&m.topic, m.partition, m.offset, m.epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Stored = Arc<Mutex<Vec<(String, i32, i64)>>>;

    fn tracker() -> (Arc<Tracker>, Stored) {
        let stored = Arc::new(Mutex::new(Vec::new()));
        let s = stored.clone();
        let t = Tracker::new(Box::new(move |topic, p, o| {
            s.lock().unwrap().push((topic.to_owned(), p, o))
        }));
        (t, stored)
    }

    #[test]
    fn stores_only_contiguous_finished_offsets() {
        let (t, stored) = tracker();
        let topic: Arc<str> = "m".into();
        let a: Vec<Ack> = (10..15).map(|o| t.register(topic.clone(), 0, o)).collect();
        let mut a = a.into_iter();
        let (a10, a11, a12, a13, a14) = (
            a.next().unwrap(),
            a.next().unwrap(),
            a.next().unwrap(),
            a.next().unwrap(),
            a.next().unwrap(),
        );
        a12.done();
        a13.done();
        assert!(
            stored.lock().unwrap().is_empty(),
            "10 and 11 are not finished"
        );
        a10.done();
        assert_eq!(stored.lock().unwrap().last(), Some(&("m".into(), 0, 10)));
        a11.done();
        assert_eq!(stored.lock().unwrap().last(), Some(&("m".into(), 0, 13)));
        a14.done();
        assert_eq!(stored.lock().unwrap().last(), Some(&("m".into(), 0, 14)));
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn a_message_is_finished_when_every_split_is_done() {
        let (t, stored) = tracker();
        let a = t.register("m".into(), 3, 0);
        let write = a.split();
        let dead_letter = a.split();
        a.done();
        write.done();
        assert!(stored.lock().unwrap().is_empty());
        dead_letter.done();
        assert_eq!(*stored.lock().unwrap(), vec![("m".into(), 3, 0)]);
    }

    #[test]
    fn an_abandoned_message_blocks_its_partition_only() {
        let (t, stored) = tracker();
        let lost = t.register("m".into(), 0, 0);
        let after = t.register("m".into(), 0, 1);
        let other = t.register("m".into(), 1, 0);
        drop(lost);
        after.done();
        other.done();
        assert_eq!(*stored.lock().unwrap(), vec![("m".into(), 1, 0)]);
        assert_eq!(t.abandoned(), 1);
    }

    #[test]
    fn work_of_a_revoked_assignment_cannot_finish_the_next_ones_messages() {
        let (t, stored) = tracker();
        let old = t.register("m".into(), 0, 7);
        let other = t.register("m".into(), 1, 3);
        t.forget("m", 0);
        // Assigned again: offset 7 is read again and is in flight once more.
        let again = t.register("m".into(), 0, 7);
        assert!(!old.is_current() && again.is_current() && other.is_current());
        other.done();
        assert_eq!(*stored.lock().unwrap(), vec![("m".into(), 1, 3)]);
        old.done();
        assert_eq!(
            stored.lock().unwrap().len(),
            1,
            "partition 0's 7 is not finished yet"
        );
        assert_eq!(t.pending(), 1);
        again.done();
        assert_eq!(stored.lock().unwrap().last(), Some(&("m".into(), 0, 7)));
    }

    #[test]
    fn a_forgotten_partition_ignores_late_completions() {
        let (t, stored) = tracker();
        let a = t.register("m".into(), 0, 5);
        t.forget("m", 0);
        a.done();
        assert!(stored.lock().unwrap().is_empty());
    }
}
