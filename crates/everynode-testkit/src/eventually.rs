//! Polling assertions with explicit timeouts.

use std::future::Future;
use std::time::{Duration, Instant};

/// Poll interval of [`eventually`] and [`consistently`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Retries `check` until it returns `Ok`, at most for `timeout`, and returns its value.
///
/// `check` returns `Err(observation)` while the condition does not hold yet; the last
/// observation is part of the failure message.
///
/// # Panics
/// When `timeout` passes: `timed out after 30s waiting for <what>; last observation: <...>`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            panic!(
                "timed out after {:.1?} waiting for {what}; last observation: {last}",
                timeout
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Checks that `check` keeps returning `Ok` for the whole `duration`.
///
/// # Panics
/// At the first `Err`, with its observation and the time it took to break.
pub async fn consistently<F, Fut>(what: &str, duration: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        if let Err(e) = check().await {
            panic!(
                "expected {what} to hold for {:.1?}, but after {:.1?}: {e}",
                duration,
                start.elapsed()
            );
        }
        if start.elapsed() >= duration {
            return;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Turns any displayable error into an observation string (for use with `?` inside checks).
pub fn obs<E: std::fmt::Display>(context: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{context}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_value() {
        let mut n = 0;
        let v = eventually("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let now = n;
            async move {
                if now >= 3 {
                    Ok(now)
                } else {
                    Err(format!("n={now}"))
                }
            }
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for the impossible; last observation: nope")]
    async fn eventually_panics_with_the_last_observation() {
        eventually("the impossible", Duration::from_millis(300), || async {
            Err::<(), _>("nope".to_owned())
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "expected calm to hold")]
    async fn consistently_panics_on_first_error() {
        consistently("calm", Duration::from_secs(5), || async {
            Err("storm".to_owned())
        })
        .await;
    }
}
