//! Pacing of status writes that only report progress ([`StatusWrite::Progress`]): at most one per
//! [`STATUS_INTERVAL`] per set, the held one going out with the next reconcile after it. Every
//! other status write (first, settled, new generation, condition, revision, failure) goes out at
//! once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use everynode_core::StatusWrite;

/// Shortest time between two progress-only status writes of one set.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// When each set's status was last written (sets written within the last interval only).
#[derive(Debug, Default)]
pub struct StatusPacer {
    last_write: Mutex<HashMap<String, Instant>>,
}

impl StatusPacer {
    /// How long the write of kind `write` to set `key` must wait at `now`; `None`: write now.
    pub fn wait(&self, key: &str, write: StatusWrite, now: Instant) -> Option<Duration> {
        if !write.may_wait() {
            return None;
        }
        let last = *self
            .last_write
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)?;
        STATUS_INTERVAL
            .checked_sub(now.saturating_duration_since(last))
            .filter(|wait| !wait.is_zero())
    }

    /// Records a write to set `key` at `now`, forgetting sets not written for an interval.
    pub fn wrote(&self, key: &str, now: Instant) {
        let mut last_write = self.last_write.lock().unwrap_or_else(|p| p.into_inner());
        last_write.retain(|_, at| now.saturating_duration_since(*at) < STATUS_INTERVAL);
        last_write.insert(key.to_owned(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_waits_out_the_interval_after_a_write() {
        let pacer = StatusPacer::default();
        let start = Instant::now();
        assert_eq!(pacer.wait("ns/a", StatusWrite::Progress, start), None);
        pacer.wrote("ns/a", start);
        let later = start + Duration::from_millis(300);
        assert_eq!(
            pacer.wait("ns/a", StatusWrite::Progress, later),
            Some(Duration::from_millis(700))
        );
        // Other sets and other kinds of write do not wait.
        assert_eq!(pacer.wait("ns/b", StatusWrite::Progress, later), None);
        for write in [
            StatusWrite::First,
            StatusWrite::Settled,
            StatusWrite::Changed,
        ] {
            assert_eq!(pacer.wait("ns/a", write, later), None);
        }
        assert_eq!(
            pacer.wait("ns/a", StatusWrite::Progress, start + STATUS_INTERVAL),
            None
        );
    }

    #[test]
    fn sets_not_written_for_an_interval_are_forgotten() {
        let pacer = StatusPacer::default();
        let start = Instant::now();
        pacer.wrote("ns/a", start);
        pacer.wrote("ns/b", start + STATUS_INTERVAL);
        let remembered: Vec<String> = pacer
            .last_write
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        assert_eq!(remembered, ["ns/b"]);
    }
}
