//! Failed-pod backoff (§4.5): per (set, observedGeneration, node) entry, first delay 1 s,
//! doubling to 15 min; an entry idle for more than twice the maximum expires.
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.
//!
//! Same semantics as client-go `flowcontrol.Backoff` without jitter: "in backoff" means
//! `now - last_update < delay` and the entry has not expired.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Backoff tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// First delay.
    pub initial: Duration,
    /// Maximum delay.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(15 * 60),
        }
    }
}

/// One backoff entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackoffEntry {
    /// Current delay.
    pub delay: Duration,
    /// When the entry was last advanced.
    pub last_update: Timestamp,
}

/// `now - then` as a signed duration.
pub(crate) fn since(now: Timestamp, then: Timestamp) -> SignedDuration {
    now.duration_since(then)
}

pub(crate) fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

impl BackoffEntry {
    /// Idle for more than twice the maximum delay: treated as absent and may be dropped.
    pub fn is_expired(&self, now: Timestamp, cfg: &BackoffConfig) -> bool {
        since(now, self.last_update) > signed(cfg.max.saturating_mul(2))
    }

    /// Still waiting at `now`.
    pub fn in_backoff(&self, now: Timestamp, cfg: &BackoffConfig) -> bool {
        !self.is_expired(now, cfg) && since(now, self.last_update) < signed(self.delay)
    }

    /// Advances `entry` at `now`: initial delay when absent or expired, else doubled (capped).
    pub fn next(entry: Option<&Self>, now: Timestamp, cfg: &BackoffConfig) -> Self {
        let delay = match entry {
            Some(e) if !e.is_expired(now, cfg) => e.delay.saturating_mul(2).min(cfg.max),
            _ => cfg.initial,
        };
        Self {
            delay,
            last_update: now,
        }
    }
}
