//! Where a set's slow start begins. Upstream creates pods in batches of 1, 2, 4, … so that a
//! create every pod would fail (a quota, a rejecting webhook) costs a few calls, and starts
//! over at one pod in every sync: a rolling update pays the slow start again in every step and
//! a node that joins waits behind it. everynode starts a set's creates at the batch size its
//! last round reached when that round succeeded in full within [`WARM_FOR`] (at most
//! [`MAX_WARM_BATCH`]); any failed create starts the set over at one pod.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upstream's first slow-start batch size.
pub const INITIAL_BATCH: usize = 1;

/// The largest batch a set's creates start at after earlier creates succeeded: the most calls
/// a new failure (quota just exhausted) can cost before the set starts over at one.
pub const MAX_WARM_BATCH: usize = 64;

/// How long a round that succeeded in full keeps the set's slow start warm.
pub const WARM_FOR: Duration = Duration::from_secs(60);

/// The batch size each set's last round of creates reached in full, and when it ended.
#[derive(Debug, Default)]
pub struct SlowStarts {
    sets: Mutex<HashMap<String, (usize, Instant)>>,
}

impl SlowStarts {
    /// The first batch size of the set's next round of creates.
    pub fn first_batch(&self, key: &str, now: Instant) -> usize {
        match self.lock().get(key) {
            Some(&(batch, at)) if now.saturating_duration_since(at) <= WARM_FOR => {
                batch.clamp(INITIAL_BATCH, MAX_WARM_BATCH)
            }
            _ => INITIAL_BATCH,
        }
    }

    /// A round of creates ended at `now` with every create made; `reached` was the size of its
    /// last batch (as planned: a batch of 64 that had only 3 pods left counts as 64).
    pub fn succeeded(&self, key: &str, reached: usize, now: Instant) {
        self.lock().insert(key.to_owned(), (reached, now));
    }

    /// A create failed, or the set is gone: its next round starts at one pod.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (usize, Instant)>> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_starts_at_one_pod_until_a_round_succeeded() {
        let starts = SlowStarts::default();
        let now = Instant::now();
        assert_eq!(starts.first_batch("ns/a", now), INITIAL_BATCH);
        starts.succeeded("ns/a", 16, now);
        assert_eq!(starts.first_batch("ns/a", now + Duration::from_secs(5)), 16);
        assert_eq!(starts.first_batch("ns/b", now), INITIAL_BATCH, "per set");
    }

    #[test]
    fn the_warm_start_is_capped_and_expires() {
        let starts = SlowStarts::default();
        let now = Instant::now();
        starts.succeeded("ns/a", 512, now);
        assert_eq!(starts.first_batch("ns/a", now), MAX_WARM_BATCH);
        let later = now + WARM_FOR + Duration::from_millis(1);
        assert_eq!(starts.first_batch("ns/a", later), INITIAL_BATCH);
    }

    #[test]
    fn a_failure_starts_the_set_over() {
        let starts = SlowStarts::default();
        let now = Instant::now();
        starts.succeeded("ns/a", 32, now);
        starts.forget("ns/a");
        assert_eq!(starts.first_batch("ns/a", now), INITIAL_BATCH);
    }
}
