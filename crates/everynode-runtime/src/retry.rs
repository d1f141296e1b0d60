//! Retries of throttled or unavailable answers (429, 503, 504): at most [`MAX_RETRIES`] per
//! request, as client-go; exponential from [`MIN_DELAY`] to [`MAX_DELAY`]; never sooner than
//! the server's `Retry-After` (capped at [`MAX_RETRY_AFTER`]); and jittered per request.
//!
//! The jitter matters under API Priority and Fairness: a priority level that rejects what does
//! not fit answers a burst of creates with a burst of 429s, all with the same `Retry-After`.
//! Retried after the same delay they come back as the same burst and are rejected again
//! (kube's own policy clones one random generator into every request, so all its "jittered"
//! delays are equal). Here each retry waits a random time between the delay and twice it.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tower::BoxError;
use tower::retry::Policy;

use crate::metrics::RetryLabels;

/// Most retries of one request.
pub const MAX_RETRIES: u32 = 10;
/// Delay before the first retry (before jitter); it doubles with each retry.
pub const MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest delay from the exponential backoff (before jitter).
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Longest `Retry-After` honoured (before jitter).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The wait before retry number `attempt` (0-based): the exponential delay or the server's
/// `retry_after`, whichever is longer, stretched by `jitter` in `[0, 1)` to between once and
/// twice that.
#[must_use]
pub fn delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let exponential = MIN_DELAY
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(MAX_DELAY);
    let base = retry_after
        .map_or(exponential, |after| after.min(MAX_RETRY_AFTER))
        .max(exponential);
    base.mul_f64(1.0 + jitter.clamp(0.0, 1.0))
}

/// Whether an answer with `status` is worth sending again.
#[must_use]
pub fn is_retryable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The `tower` retry policy of the controller's client; every retry counts in `retries`.
#[derive(Clone)]
pub struct ThrottleRetry {
    attempt: u32,
    retries: Family<RetryLabels, Counter>,
}

impl ThrottleRetry {
    /// A policy for a fresh request (`tower` clones it for each).
    #[must_use]
    pub fn new(retries: Family<RetryLabels, Counter>) -> Self {
        Self {
            attempt: 0,
            retries,
        }
    }
}

impl<Res> Policy<Request<Body>, Response<Res>, BoxError> for ThrottleRetry {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _request: &mut Request<Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        let response = result.as_ref().ok()?;
        if !is_retryable(response.status()) || self.attempt >= MAX_RETRIES {
            return None;
        }
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let wait = delay(self.attempt, retry_after, fastrand::f64());
        self.attempt += 1;
        self.retries
            .get_or_create(&RetryLabels {
                code: response.status().as_u16(),
            })
            .inc();
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, request: &Request<Body>) -> Option<Request<Body>> {
        let mut clone = Request::builder()
            .method(request.method().clone())
            .uri(request.uri().clone())
            .version(request.version())
            .body(request.body().try_clone()?)
            .ok()?;
        *clone.headers_mut() = request.headers().clone();
        *clone.extensions_mut() = request.extensions().clone();
        Some(clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_100_ms_to_10_s_and_jitter_up_to_twice() {
        assert_eq!(delay(0, None, 0.0), Duration::from_millis(100));
        assert_eq!(delay(3, None, 0.0), Duration::from_millis(800));
        assert_eq!(delay(9, None, 0.0), MAX_DELAY);
        assert_eq!(delay(u32::MAX, None, 0.0), MAX_DELAY);
        assert_eq!(delay(0, None, 0.5), Duration::from_millis(150));
        assert!(delay(9, None, 0.999_999) < MAX_DELAY * 2);
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_30_s() {
        assert_eq!(
            delay(0, Some(Duration::from_secs(1)), 0.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            delay(0, Some(Duration::from_secs(1)), 0.25),
            Duration::from_millis(1250)
        );
        // A longer exponential delay wins over a short Retry-After.
        assert_eq!(
            delay(9, Some(Duration::from_secs(1)), 0.0),
            Duration::from_secs(10)
        );
        assert_eq!(
            delay(0, Some(Duration::from_secs(3600)), 0.0),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn a_whole_retry_sequence_is_bounded() {
        let worst: Duration = (0..MAX_RETRIES)
            .map(|attempt| delay(attempt, Some(MAX_RETRY_AFTER), 0.999_999))
            .sum();
        assert!(worst < Duration::from_secs(10 * 60), "{worst:?}");
    }

    #[test]
    fn only_throttled_or_unavailable_answers_are_retried() {
        assert!(is_retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(is_retryable(StatusCode::GATEWAY_TIMEOUT));
        assert!(!is_retryable(StatusCode::CONFLICT));
        assert!(!is_retryable(StatusCode::INTERNAL_SERVER_ERROR));
    }
}
