//! Pacing per set: a minimum interval between two goes of the same kind for one set.
//!
//! - **Reconciles** ([`reconciles`]): a reconcile starts at most every 100 ms per set. A
//!   rollout over 1,000 nodes makes thousands of pod events; without a gap every one of them
//!   starts a reconcile that snapshots and plans the whole set. The first event after a quiet
//!   spell is reconciled at once; the events of the next 100 ms are folded into one reconcile.
//!   (An interval of 20 times the last plan's cost, tried at 5,000 nodes, made rolling updates
//!   slower without saving CPU: the rollout advances by reconciles.)
//!   While the caches do not show the set's own pod writes yet, a plan writes no pod and can
//!   only report progress: the reconcile is deferred to when both this interval and the
//!   status pacer's allow a go ([`start`]), and the event that shows the last of the writes
//!   starts the next reconcile at once.
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

/// When a reconcile starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// At once.
    Now,
    /// After the rest of the set's reconcile interval.
    After(Duration),
    /// Not now: requeued after this.
    Deferred(Duration),
}

/// The set's own pod writes, as its caches show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnWrites {
    /// None pending.
    Settled,
    /// The caches just showed the last of them.
    Shown,
    /// Some are not in the caches yet.
    Awaited,
}

/// When a reconcile of a set starts: `interval_left` of its reconcile interval,
/// `progress_held` how long the status pacer holds a progress-only write, `new_generation`
/// whether the set has a generation its status has not recorded (which is written at once).
pub fn start(
    own_writes: OwnWrites,
    interval_left: Option<Duration>,
    progress_held: Option<Duration>,
    new_generation: bool,
) -> Start {
    match own_writes {
        OwnWrites::Settled => interval_left.map_or(Start::Now, Start::After),
        OwnWrites::Shown => Start::Now,
        OwnWrites::Awaited => {
            let progress = progress_held.filter(|_| !new_generation);
            interval_left
                .into_iter()
                .chain(progress)
                .max()
                .map_or(Start::Now, Start::Deferred)
        }
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
    fn a_reconcile_waits_out_the_interval_unless_its_writes_just_showed() {
        let left = Some(Duration::from_millis(60));
        let held = Some(Duration::from_millis(700));
        assert_eq!(start(OwnWrites::Settled, None, held, false), Start::Now);
        assert_eq!(
            start(OwnWrites::Settled, left, held, false),
            Start::After(Duration::from_millis(60))
        );
        assert_eq!(start(OwnWrites::Shown, left, held, false), Start::Now);
    }

    #[test]
    fn awaiting_its_writes_a_reconcile_is_deferred_until_it_may_report_progress() {
        let left = Some(Duration::from_millis(60));
        let held = Some(Duration::from_millis(700));
        let deferred = |ms| Start::Deferred(Duration::from_millis(ms));
        assert_eq!(start(OwnWrites::Awaited, left, held, false), deferred(700));
        assert_eq!(start(OwnWrites::Awaited, None, held, false), deferred(700));
        assert_eq!(start(OwnWrites::Awaited, left, None, false), deferred(60));
        assert_eq!(start(OwnWrites::Awaited, None, None, false), Start::Now);
        // A new generation is recorded at once: only the interval is waited for.
        assert_eq!(start(OwnWrites::Awaited, left, held, true), deferred(60));
        assert_eq!(start(OwnWrites::Awaited, None, held, true), Start::Now);
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
