//! The retry schedule shared by the writers and the dead-letter producer.

use backon::BackoffBuilder;
use std::time::Duration;

/// Exponential backoff with jitter from 100 ms up to `max_delay`, without end:
/// callers decide when to give up (or never do).
pub fn backoff(max_delay: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(max_delay)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_stays_under_the_cap() {
        let delays: Vec<Duration> = backoff(Duration::from_secs(1)).take(12).collect();
        assert_eq!(delays.len(), 12, "never runs out");
        // Jitter adds up to one more delay on top of the schedule.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(2)),
            "{delays:?}"
        );
        assert!(delays[11] >= Duration::from_secs(1), "{delays:?}");
    }
}
