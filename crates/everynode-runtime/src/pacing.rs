//! Pacing per set: a minimum interval between two goes of the same kind for one set.
//!
//! - **Reconciles** ([`RECONCILE_INTERVAL`]): a reconcile starts at most every 100 ms per set.
//!   A rollout over 1,000 nodes makes thousands of pod events; without a gap every one of them
//!   starts a reconcile that snapshots and plans the whole set. The first event after a quiet
//!   spell is reconciled at once; the events of the next 100 ms are folded into one reconcile.
//! - **Status writes that only report progress** ([`STATUS_INTERVAL`],
//!   [`everynode_core::StatusWrite::Progress`]): at most one per second per set, the held one
//!   going out with the next reconcile after it. Every other status write (first, settled, new
//!   generation, condition, revision, failure) goes out at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest time between the starts of two reconciles of one set.
pub const RECONCILE_INTERVAL: Duration = Duration::from_millis(100);

/// Shortest time between two progress-only status writes of one set.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// When each set last went (sets that went within the last interval only).
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    /// A pacer allowing one go per `interval` per set.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::default(),
        }
    }

    /// How long set `key` must wait at `now` before its next go; `None`: go now.
    pub fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let last = *self
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)?;
        self.interval
            .checked_sub(now.saturating_duration_since(last))
            .filter(|wait| !wait.is_zero())
    }

    /// Records that set `key` went at `at`, forgetting sets idle for an interval.
    pub fn went(&self, key: &str, at: Instant) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.retain(|_, went| at.saturating_duration_since(*went) < self.interval);
        last.insert(key.to_owned(), at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_waits_out_the_interval_after_it_went() {
        let pacer = Pacer::new(STATUS_INTERVAL);
        let start = Instant::now();
        assert_eq!(pacer.wait("ns/a", start), None);
        pacer.went("ns/a", start);
        let later = start + Duration::from_millis(300);
        assert_eq!(pacer.wait("ns/a", later), Some(Duration::from_millis(700)));
        // Other sets do not wait.
        assert_eq!(pacer.wait("ns/b", later), None);
        assert_eq!(pacer.wait("ns/a", start + STATUS_INTERVAL), None);
    }

    #[test]
    fn sets_idle_for_an_interval_are_forgotten() {
        let pacer = Pacer::new(RECONCILE_INTERVAL);
        let start = Instant::now();
        pacer.went("ns/a", start);
        pacer.went("ns/b", start + RECONCILE_INTERVAL);
        let remembered: Vec<String> = pacer
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        assert_eq!(remembered, ["ns/b"]);
    }
}
