//! Small statistics: percentiles of latency samples.

use serde::{Deserialize, Serialize};

/// The `p`-th percentile (0–100) of `samples` by the nearest-rank method: the smallest sample
/// such that at least `p` % of the samples are less than or equal to it. `None` for no samples.
#[must_use]
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    // Nearest rank: ceil(p/100 * n), at least 1.
    let rank = ((p / 100.0) * n as f64).ceil().max(1.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let idx = (rank as usize).min(n) - 1;
    sorted.get(idx).copied()
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Number of samples.
    pub samples: usize,
    /// Median (nearest rank).
    pub p50_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Latency {
    /// Summarises samples given in milliseconds; `None` for no samples.
    #[must_use]
    pub fn of(samples_ms: &[f64]) -> Option<Self> {
        Some(Self {
            samples: samples_ms.len(),
            p50_ms: percentile(samples_ms, 50.0)?,
            p99_ms: percentile(samples_ms, 99.0)?,
            max_ms: percentile(samples_ms, 100.0)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&s, 100.0), Some(100.0));
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn unsorted_and_small_inputs() {
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[7.0], 1.0), Some(7.0));
        let l = Latency::of(&[10.0, 20.0, 30.0, 40.0]).unwrap();
        assert_eq!(l.samples, 4);
        assert_eq!(l.p50_ms, 20.0);
        assert_eq!(l.p99_ms, 40.0);
        assert_eq!(l.max_ms, 40.0);
        assert!(Latency::of(&[]).is_none());
    }
}
