//! Pacing per set: a minimum interval between two goes of the same kind for one set.
//!
//! - **Reconciles** ([`reconciles`]): a reconcile starts at most every 100 ms per set. A
//!   rollout over 1,000 nodes makes thousands of pod events; without a gap every one of them
//!   starts a reconcile that snapshots and plans the whole set. The first event after a quiet
//!   spell is reconciled at once; the events of the next 100 ms are folded into one reconcile.
//!   A reconcile that waited for the caches to show its earlier pod writes does not count
//!   ([`Pacer::forget`]): the event that shows the last of them starts the next one at once.
//! - **Status writes that only report progress** ([`status_progress`],
//!   [`everynode_core::StatusWrite::Progress`]): at most one per second per set, and when many
//!   sets roll at once they share about five such writes a second (50 sets: one each per
//!   10 s). The held one goes out with the next reconcile after its wait. Every other status
//!   write (first, settled, new generation, condition, revision, failure) goes out at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest time between the starts of two reconciles of one set.
pub const RECONCILE_INTERVAL: Duration = Duration::from_millis(100);

/// Shortest time between two progress-only status writes of one set.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Each set that wrote progress within the last [`STATUS_INTERVAL_MAX`] lengthens every set's
/// progress interval by this much: together they write about 1 / 200 ms = 5 a second.
pub const STATUS_INTERVAL_PER_SET: Duration = Duration::from_millis(200);

/// Longest time between two progress-only status writes of one set.
pub const STATUS_INTERVAL_MAX: Duration = Duration::from_secs(10);

/// The pacer of reconcile starts.
pub fn reconciles() -> Pacer {
    Pacer::new(RECONCILE_INTERVAL)
}

/// The pacer of progress-only status writes.
pub fn status_progress() -> Pacer {
    Pacer {
        per_active_set: STATUS_INTERVAL_PER_SET,
        max: STATUS_INTERVAL_MAX,
        ..Pacer::new(STATUS_INTERVAL)
    }
}

/// When each set last went (sets that went within the longest interval only).
#[derive(Debug)]
pub struct Pacer {
    min: Duration,
    per_active_set: Duration,
    max: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    /// A pacer allowing one go per `interval` per set, however many sets go.
    pub fn new(interval: Duration) -> Self {
        Self {
            min: interval,
            per_active_set: Duration::ZERO,
            max: interval,
            last: Mutex::default(),
        }
    }

    /// How long set `key` must wait at `now` before its next go; `None`: go now.
    pub fn wait(&self, key: &str, now: Instant) -> Option<Duration> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let went = *last.get(key)?;
        let active = last
            .values()
            .filter(|at| now.saturating_duration_since(**at) < self.max)
            .count();
        self.interval(active)
            .checked_sub(now.saturating_duration_since(went))
            .filter(|wait| !wait.is_zero())
    }

    /// Records that set `key` went at `at`, forgetting sets idle for the longest interval.
    pub fn went(&self, key: &str, at: Instant) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.retain(|_, went| at.saturating_duration_since(*went) < self.max);
        last.insert(key.to_owned(), at);
    }

    /// Forgets that set `key` went: its next go need not wait.
    pub fn forget(&self, key: &str) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// The interval while `active` sets go.
    fn interval(&self, active: usize) -> Duration {
        let shared = self
            .per_active_set
            .saturating_mul(u32::try_from(active).unwrap_or(u32::MAX));
        shared.clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_waits_out_the_interval_after_it_went() {
        let pacer = status_progress();
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
    fn many_sets_going_at_once_share_the_progress_writes() {
        let pacer = status_progress();
        let start = Instant::now();
        for set in 0..20 {
            pacer.went(&format!("ns/{set}"), start);
        }
        // 20 sets × 200 ms: each waits 4 s.
        let later = start + Duration::from_secs(1);
        assert_eq!(pacer.wait("ns/0", later), Some(Duration::from_secs(3)));
        for set in 20..100 {
            pacer.went(&format!("ns/{set}"), later);
        }
        // 100 sets: the longest interval, 10 s.
        assert_eq!(pacer.wait("ns/0", later), Some(Duration::from_secs(9)));
        // Once the others are quiet the interval shrinks back to a second.
        let quiet = start + STATUS_INTERVAL_MAX + Duration::from_secs(1);
        pacer.went("ns/0", quiet);
        let next = quiet + STATUS_INTERVAL;
        assert_eq!(pacer.wait("ns/0", next), None);
    }

    #[test]
    fn reconciles_are_paced_per_set_only() {
        let pacer = reconciles();
        let start = Instant::now();
        for set in 0..100 {
            pacer.went(&format!("ns/{set}"), start);
        }
        assert_eq!(
            pacer.wait("ns/0", start + Duration::from_millis(40)),
            Some(Duration::from_millis(60))
        );
    }

    #[test]
    fn a_forgotten_set_goes_at_once() {
        let pacer = reconciles();
        let start = Instant::now();
        pacer.went("ns/a", start);
        pacer.went("ns/b", start);
        pacer.forget("ns/a");
        let soon = start + Duration::from_millis(10);
        assert_eq!(pacer.wait("ns/a", soon), None);
        assert_eq!(pacer.wait("ns/b", soon), Some(Duration::from_millis(90)));
    }

    #[test]
    fn sets_idle_for_an_interval_are_forgotten() {
        let pacer = reconciles();
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
