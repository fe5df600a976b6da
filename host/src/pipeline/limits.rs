//! Per-tenant ingestion limits, enforced by the host after the router and before
//! the tenant's chain, so that no tenant's code can opt out of them:
//!
//! - a rate (`limits.points_per_second`, `limits.burst`): a token bucket;
//! - active series (`limits.max_series` within `limits.series_window`): a point of
//!   a series not seen within the window is refused once the tenant has that many;
//!   known series flow on. A series is its measurement and tags (in any order),
//!   kept as a 64-bit hash with the second it was last seen: memory is bounded by
//!   the limit (at most ~40 bytes per series), never by what a tenant sends.
//!
//! A point over a limit is dead-lettered or dropped (`limits.over_limit`), and
//! always counted. A tenant without limits costs nothing here.

use crate::config::{Limits, OverLimit};
use boulder_batch::Batch;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often active series are swept for ones past the window, at most (and at
/// once when a new series finds the set full).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Which limit a point is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Limit {
    /// `points_per_second`.
    Rate,
    /// `max_series`.
    Series,
}

impl Limit {
    /// The metric label and the end of the dead-letter class.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Rate => "rate",
            Limit::Series => "series",
        }
    }
}

/// A tenant's limits and what they have counted so far.
pub struct TenantLimits {
    rate: Option<Mutex<Bucket>>,
    series: Option<Mutex<ActiveSeries>>,
    limits: Limits,
}

impl TenantLimits {
    /// The limits of `limits` that are set, or `None` if none is.
    pub fn new(limits: &Limits) -> Option<TenantLimits> {
        if limits.points_per_second.is_none() && limits.max_series.is_none() {
            return None;
        }
        let now = Instant::now();
        Some(TenantLimits {
            rate: limits.points_per_second.map(|rate| {
                let burst = f64::from(limits.burst.unwrap_or(rate));
                Mutex::new(Bucket {
                    rate: f64::from(rate),
                    burst,
                    tokens: burst,
                    at: now,
                })
            }),
            series: limits.max_series.map(|max| {
                Mutex::new(ActiveSeries {
                    seen: HashMap::default(),
                    max: max as usize,
                    window: limits.series_window.as_secs().max(1) as u32,
                    start: now,
                    swept: 0,
                })
            }),
            limits: *limits,
        })
    }

    /// Whether `points` points may all pass without looking at them: only a rate
    /// is set and its bucket holds enough (the tokens are taken).
    pub fn admit_all(&self, points: usize, now: Instant) -> bool {
        if self.series.is_some() {
            return false;
        }
        let Some(rate) = &self.rate else {
            return true;
        };
        let mut bucket = rate.lock().unwrap_or_else(|e| e.into_inner());
        bucket.refill(now);
        if bucket.tokens >= points as f64 {
            bucket.tokens -= points as f64;
            true
        } else {
            false
        }
    }

    /// The points of `batch` over a limit, in order: a point of a new series past
    /// `max_series` is over `Series` (and takes no token); of the rest, those the
    /// bucket has no token for are over `Rate`.
    pub fn over(&self, batch: &Batch, now: Instant) -> Vec<(usize, Limit)> {
        let mut over: Vec<Option<Limit>> = vec![None; batch.len()];
        if let Some(series) = &self.series {
            let mut series = series.lock().unwrap_or_else(|e| e.into_inner());
            let now_s = series.seconds(now);
            series.sweep_if_due(now_s);
            for (i, verdict) in over.iter_mut().enumerate() {
                if !series.admit(series_hash(batch, i), now_s) {
                    *verdict = Some(Limit::Series);
                }
            }
        }
        if let Some(rate) = &self.rate {
            let mut bucket = rate.lock().unwrap_or_else(|e| e.into_inner());
            bucket.refill(now);
            for verdict in over.iter_mut().filter(|v| v.is_none()) {
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                } else {
                    *verdict = Some(Limit::Rate);
                }
            }
        }
        over.into_iter()
            .enumerate()
            .filter_map(|(i, verdict)| Some((i, verdict?)))
            .collect()
    }

    /// The limits that are set.
    pub fn limits(&self) -> impl Iterator<Item = Limit> {
        let rate = self.rate.is_some().then_some(Limit::Rate);
        let series = self.series.is_some().then_some(Limit::Series);
        rate.into_iter().chain(series)
    }

    /// Active series now (as of the last sweep), if `max_series` is set.
    pub fn active_series(&self) -> Option<usize> {
        let series = self.series.as_ref()?;
        Some(series.lock().unwrap_or_else(|e| e.into_inner()).seen.len())
    }

    /// What happens to points over a limit.
    pub fn over_limit(&self) -> OverLimit {
        self.limits.over_limit
    }

    /// Why a point is over `limit`, for its dead letter.
    pub fn reason(&self, tenant: &str, limit: Limit) -> String {
        let l = &self.limits;
        match limit {
            Limit::Rate => format!(
                "tenant '{tenant}' is over its limit of {} points per second (burst {}): limits.points_per_second",
                l.points_per_second.unwrap_or_default(),
                l.burst.or(l.points_per_second).unwrap_or_default()
            ),
            Limit::Series => format!(
                "tenant '{tenant}' has {} active series (seen within {}): a new series is refused: limits.max_series",
                l.max_series.unwrap_or_default(),
                humantime::format_duration(l.series_window)
            ),
        }
    }
}

/// A token bucket.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }
}

/// Series seen within the window: hash → second last seen (since `start`).
struct ActiveSeries {
    seen: HashMap<u64, u32, IdentityHash>,
    max: usize,
    window: u32,
    start: Instant,
    swept: u32,
}

impl ActiveSeries {
    fn seconds(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.start).as_secs() as u32
    }

    /// Whether a point of series `hash` may pass; it counts as seen now if so.
    fn admit(&mut self, hash: u64, now_s: u32) -> bool {
        if let Some(last) = self.seen.get_mut(&hash) {
            *last = now_s;
            return true;
        }
        if self.seen.len() >= self.max && self.swept != now_s {
            self.sweep(now_s);
        }
        if self.seen.len() >= self.max {
            return false;
        }
        self.seen.insert(hash, now_s);
        true
    }

    fn sweep_if_due(&mut self, now_s: u32) {
        if now_s.saturating_sub(self.swept) >= SWEEP_EVERY.as_secs() as u32 {
            self.sweep(now_s);
        }
    }

    fn sweep(&mut self, now_s: u32) {
        let window = self.window;
        self.seen
            .retain(|_, last| now_s.saturating_sub(*last) < window);
        self.swept = now_s;
    }
}

/// The hash of point `i`'s series: its measurement and its tags in any order
/// (each tag hashed on its own, the hashes summed).
pub fn series_hash(batch: &Batch, i: usize) -> u64 {
    let seed = foldhash::fast::FixedState::with_seed(0x626f756c646572);
    let point = &batch.points[i];
    let mut tags = 0u64;
    for tag in batch.tags_of(point) {
        let mut h = seed.build_hasher();
        h.write(batch.str(tag.key).as_bytes());
        h.write_u8(0xff);
        h.write(batch.str(tag.value).as_bytes());
        tags = tags.wrapping_add(h.finish());
    }
    let mut h = seed.build_hasher();
    h.write(batch.str(point.measurement).as_bytes());
    h.write_u64(tags);
    h.finish()
}

/// The keys are hashes already.
#[derive(Clone, Copy, Default)]
struct IdentityHash;

impl BuildHasher for IdentityHash {
    type Hasher = Identity;
    fn build_hasher(&self) -> Identity {
        Identity(0)
    }
}

#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    fn batch(lines: &[(&str, &[(&str, &str)])]) -> Batch {
        let mut b = Batch::new();
        let source = b.source("t", boulder_batch::Format::InfluxLine);
        for (measurement, tags) in lines {
            let m = b.push_str(measurement);
            b.begin_point(m, 0, source);
            for (k, v) in *tags {
                let (k, v) = (b.push_str(k), b.push_str(v));
                b.push_tag(k, v);
            }
            b.push_field_value("v", boulder_batch::FieldValue::Float(1.0));
        }
        b
    }

    const NO_TAGS: &[(&str, &str)] = &[];

    fn limits(f: impl FnOnce(&mut Limits)) -> TenantLimits {
        let mut l = Limits::default();
        f(&mut l);
        TenantLimits::new(&l).expect("a limit is set")
    }

    #[test]
    fn a_series_is_its_measurement_and_its_tags_in_any_order() {
        let b = batch(&[
            ("m", &[("a", "1"), ("b", "2")]),
            ("m", &[("b", "2"), ("a", "1")]),
            ("m", &[("a", "2"), ("b", "1")]),
            ("n", &[("a", "1"), ("b", "2")]),
            ("m", &[("a", "1b"), ("", "2")]),
        ]);
        let h: Vec<u64> = (0..b.len()).map(|i| series_hash(&b, i)).collect();
        assert_eq!(h[0], h[1]);
        assert_ne!(h[0], h[2]);
        assert_ne!(h[0], h[3]);
        assert_ne!(h[0], h[4]);
    }

    #[test]
    fn no_limit_set_is_no_limits() {
        assert!(TenantLimits::new(&Limits::default()).is_none());
    }

    #[test]
    fn a_bucket_passes_its_burst_then_its_rate() {
        let l = limits(|l| {
            l.points_per_second = Some(10);
            l.burst = Some(5);
        });
        let t0 = Instant::now();
        let b = batch(&[("m", NO_TAGS); 8]);
        let over = l.over(&b, t0);
        assert_eq!(over, (5..8).map(|i| (i, Limit::Rate)).collect::<Vec<_>>());
        assert!(!l.admit_all(1, t0), "the bucket is empty");
        // 0.3 s refill 3 tokens.
        assert!(l.admit_all(3, t0 + Duration::from_millis(300)));
        assert!(!l.admit_all(1, t0 + Duration::from_millis(300)));
        // Never more than the burst, however long the wait.
        assert!(!l.admit_all(6, t0 + Duration::from_secs(3600)));
        assert!(l.admit_all(5, t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn new_series_past_the_limit_are_refused_and_known_ones_flow() {
        let l = limits(|l| {
            l.max_series = Some(2);
            l.series_window = Duration::from_secs(60);
        });
        let t0 = Instant::now();
        let b = batch(&[
            ("a", NO_TAGS),
            ("b", NO_TAGS),
            ("c", NO_TAGS),
            ("a", NO_TAGS),
            ("b", NO_TAGS),
        ]);
        assert_eq!(l.over(&b, t0), [(2, Limit::Series)]);
        assert_eq!(l.active_series(), Some(2));
        // Within the window `a` and `b` hold their places; past it, `c` gets one.
        let c = batch(&[("c", NO_TAGS)]);
        assert_eq!(
            l.over(&c, t0 + Duration::from_secs(59)),
            [(0, Limit::Series)]
        );
        assert_eq!(l.over(&c, t0 + Duration::from_secs(120)), []);
        assert_eq!(l.active_series(), Some(1));
    }

    #[test]
    fn a_refused_series_takes_no_token() {
        let l = limits(|l| {
            l.max_series = Some(1);
            l.points_per_second = Some(2);
        });
        let b = batch(&[
            ("a", NO_TAGS),
            ("b", NO_TAGS),
            ("a", NO_TAGS),
            ("a", NO_TAGS),
        ]);
        assert_eq!(
            l.over(&b, Instant::now()),
            [(1, Limit::Series), (3, Limit::Rate)]
        );
    }
}
