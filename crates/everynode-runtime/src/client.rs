//! The controller's client: the apiserver's clock read from every response
//! ([`crate::server_clock`]); with leader election every write through the leader's gate
//! ([`crate::leader::WriteGate`]); and retries of 429, 503 and 504 ([`crate::retry`]) outside
//! the gate, so that a write retried after a throttled attempt passes the gate again and never
//! goes out after the renew deadline.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tower::buffer::BufferLayer;
use tower::retry::RetryLayer;

use crate::leader::{GateLayer, WriteGate};
use crate::metrics::{ApiMetricsLayer, ApiSeries, RetryLabels};
use crate::retry::ThrottleRetry;
use crate::server_clock::{ClockLayer, ServerClock};

/// Requests waiting for the client's connection pool (kube's own buffer holds as many).
const REQUEST_BUFFER: usize = 1024;

/// A client for the controller from `config`: its responses feed `clock`; with a `gate`, its
/// writes fail at once while the gate is closed, retried writes included; every retry counts in
/// `retries`, and every attempt in `requests`.
pub fn controller_client(
    mut config: kube::Config,
    clock: Arc<ServerClock>,
    gate: Option<Arc<WriteGate>>,
    retries: Family<RetryLabels, Counter>,
    requests: ApiSeries,
) -> Result<kube::Client, kube::Error> {
    // Retried below, outside the gate, instead of inside kube's stack.
    config.default_retry = false;
    let retry = RetryLayer::new(ThrottleRetry::new(retries));
    // Retrying needs a service it can clone: a buffer in front of the stack.
    let buffer = BufferLayer::new(REQUEST_BUFFER);
    let builder = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&ClockLayer { clock })
        .with_layer(&ApiMetricsLayer { series: requests });
    Ok(match gate {
        Some(gate) => builder
            .with_layer(&GateLayer { gate })
            .with_layer(&buffer)
            .with_layer(&retry)
            .build(),
        None => builder.with_layer(&buffer).with_layer(&retry).build(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    use kube::api::PostParams;

    use super::*;
    use crate::metrics::RequestLabels;

    /// An HTTP server that throttles every request (429, `Retry-After: 1`) and counts them.
    async fn throttling_server() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1"), ("content-type", "application/json")],
                    r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":429}"#,
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, hits)
    }

    #[tokio::test]
    async fn a_throttled_write_is_retried_only_while_the_gate_is_open() {
        let (url, hits) = throttling_server().await;
        let config = kube::Config::new(url.parse().expect("url"));
        // The last renewal was just now; the renew deadline passes before the retry.
        let gate = WriteGate::closed(Duration::from_millis(300));
        gate.renewed(Instant::now());
        let clock = Arc::new(ServerClock::default());
        let client = controller_client(
            config,
            clock,
            Some(gate),
            Family::default(),
            ApiSeries::default(),
        )
        .expect("client");
        let config_maps: Api<ConfigMap> = Api::namespaced(client, "default");
        let result = config_maps
            .create(&PostParams::default(), &ConfigMap::default())
            .await;
        assert!(result.is_err());
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "a retry went out past the deadline"
        );
    }

    #[tokio::test]
    async fn a_throttled_read_is_retried() {
        let (url, hits) = throttling_server().await;
        let config = kube::Config::new(url.parse().expect("url"));
        let retries = Family::<RetryLabels, Counter>::default();
        let requests = ApiSeries::default();
        let client = controller_client(
            config,
            Arc::default(),
            None,
            retries.clone(),
            requests.clone(),
        )
        .expect("client");
        let config_maps: Api<ConfigMap> = Api::namespaced(client, "default");
        let reading = tokio::time::timeout(Duration::from_millis(2500), config_maps.get("x"));
        // Still retrying (every 1 to 2 s: Retry-After 1, jittered) when the time is up.
        assert!(reading.await.is_err());
        assert!(hits.load(Ordering::SeqCst) >= 2, "not retried");
        // Every retry counted; the last one may have been waiting when the time was up.
        let (counted, hits) = (
            retries.get_or_create(&RetryLabels { code: 429 }).get(),
            hits.load(Ordering::SeqCst) as u64,
        );
        assert!(
            (hits - 1..=hits).contains(&counted),
            "{counted} retries counted, {hits} sent"
        );
        // Every attempt counted as a request, with its code.
        let attempts = requests
            .requests
            .get_or_create(&RequestLabels {
                verb: "get".into(),
                resource: "configmaps".into(),
                code: "429".into(),
            })
            .get();
        assert_eq!(attempts, hits, "requests counted");
    }
}
