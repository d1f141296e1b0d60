//! The apiserver's clock, as seen from this process: every response's `Date` header bounds the
//! offset between the two clocks, and the bounds of recent responses are intersected. Deadlines,
//! bake times and pacing compare the pods' timestamps (written by the apiserver and the kubelets)
//! with this clock, so a controller host whose clock is minutes off fires none of them early or
//! late by more than about a second.

use std::sync::Mutex;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// How long a bound stays trusted: older bounds are dropped, so a clock that is stepped (NTP,
/// a suspended VM) is followed within this time.
const BOUND_LIFETIME: Duration = Duration::from_secs(300);

/// The offset of the apiserver's clock from this process's wall clock.
#[derive(Debug, Default)]
pub struct ServerClock {
    bounds: Mutex<Bounds>,
}

/// Offset bounds in milliseconds (server minus local), and when they were last tightened.
#[derive(Debug, Default, Clone, Copy)]
struct Bounds {
    lower: Option<(i64, SystemTime)>,
    upper: Option<(i64, SystemTime)>,
}

impl ServerClock {
    /// The apiserver's time now: the local wall clock plus the estimated offset (no offset
    /// before the first response).
    pub fn now(&self) -> Timestamp {
        let local = Timestamp::now();
        local
            .checked_add(SignedDuration::from_millis(self.offset_millis()))
            .unwrap_or(local)
    }

    /// The estimated offset (server minus local), in milliseconds.
    pub fn offset_millis(&self) -> i64 {
        let bounds = *self.lock();
        match (bounds.lower, bounds.upper) {
            (Some((lower, _)), Some((upper, _))) => lower + (upper - lower) / 2,
            (Some((bound, _)), None) | (None, Some((bound, _))) => bound,
            (None, None) => 0,
        }
    }

    /// Records a response sent at `sent` and received at `received` (local wall clock) whose
    /// `Date` header says `date` (whole seconds): the server's clock read between `date` and
    /// `date` + 1 s while the local one read between `sent` and `received`.
    pub fn observe(&self, sent: SystemTime, received: SystemTime, date: SystemTime) {
        let millis = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        let lower = millis(date) - millis(received);
        let upper = millis(date) + 1000 - millis(sent);
        let mut bounds = self.lock();
        let fresh = |b: Option<(i64, SystemTime)>| {
            b.filter(|(_, at)| received.duration_since(*at).unwrap_or_default() < BOUND_LIFETIME)
        };
        let mut next = Bounds {
            lower: fresh(bounds.lower)
                .filter(|(l, _)| *l >= lower)
                .or(Some((lower, received))),
            upper: fresh(bounds.upper)
                .filter(|(u, _)| *u <= upper)
                .or(Some((upper, received))),
        };
        // Bounds that cross mean a clock was stepped: start over from this response.
        if let (Some((l, _)), Some((u, _))) = (next.lower, next.upper)
            && l > u
        {
            next = Bounds {
                lower: Some((lower, received)),
                upper: Some((upper, received)),
            };
        }
        *bounds = next;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bounds> {
        self.bounds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A client layer feeding every response's `Date` header to a [`ServerClock`].
#[derive(Clone)]
pub struct ClockLayer {
    /// The clock to feed.
    pub clock: std::sync::Arc<ServerClock>,
}

impl<S> tower::Layer<S> for ClockLayer {
    type Service = ClockService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClockService {
            inner,
            clock: self.clock.clone(),
        }
    }
}

/// See [`ClockLayer`].
#[derive(Clone)]
pub struct ClockService<S> {
    inner: S,
    clock: std::sync::Arc<ServerClock>,
}

impl<S, B, R> tower::Service<http::Request<B>> for ClockService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let sent = SystemTime::now();
        let response = self.inner.call(request);
        let clock = self.clock.clone();
        Box::pin(async move {
            let response = response.await?;
            let date = response
                .headers()
                .get(http::header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok());
            if let Some(date) = date {
                clock.observe(sent, SystemTime::now(), date);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
    }

    #[test]
    fn no_response_means_no_offset() {
        assert_eq!(ServerClock::default().offset_millis(), 0);
    }

    #[test]
    fn responses_narrow_the_offset_of_a_clock_five_minutes_ahead() {
        // The local clock runs 300 s ahead of the server's.
        let clock = ServerClock::default();
        let local = 1_700_000_300_000u64;
        for step in 0..20u64 {
            let sent = local + step * 137;
            let received = sent + 20;
            let server_ms = received - 300_000 - 10;
            let date = at(server_ms / 1000 * 1000);
            clock.observe(at(sent), at(received), date);
        }
        let offset = clock.offset_millis();
        assert!((offset + 300_000).abs() <= 500, "offset {offset}");
    }

    #[test]
    fn a_stepped_clock_is_followed() {
        let clock = ServerClock::default();
        clock.observe(at(10_000), at(10_010), at(10_000));
        assert!(clock.offset_millis().abs() <= 1000);
        // The local clock jumps 60 s ahead.
        clock.observe(at(71_000), at(71_010), at(11_000));
        let offset = clock.offset_millis();
        assert!((offset + 60_000).abs() <= 1000, "offset {offset}");
    }
}
