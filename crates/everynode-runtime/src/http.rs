//! The controller's HTTP endpoints: `/metrics` (Prometheus text), `/livez` (the process is
//! serving; never depends on the apiserver) and `/readyz` (every cache has synced and no watch
//! is failing).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Readiness shared between the controller (which sets it) and the HTTP server: every cache
/// has synced, and no watch is failing now.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    failing: Mutex<BTreeSet<&'static str>>,
}

impl Readiness {
    /// Marks the caches synced (or lost).
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Marks the watch of `kind` failing (`false`) or healthy again (`true`).
    pub fn watch_healthy(&self, kind: &'static str, healthy: bool) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if healthy {
            failing.remove(kind);
        } else {
            failing.insert(kind);
        }
    }

    /// Whether the caches are synced and every watch is healthy.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.failing_watches().is_empty()
    }

    /// The kinds whose watch is failing now.
    pub fn failing_watches(&self) -> Vec<&'static str> {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing.iter().copied().collect()
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The router serving the three endpoints.
pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(serve_readyz))
        .with_state(AppState { metrics, readiness })
}

/// Serves the endpoints on a bound listener until `shutdown` resolves. Bind first (with
/// [`tokio::net::TcpListener::bind`]) so a port in use fails at start-up, not silently later.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /livez and /readyz");
    }
    axum::serve(listener, router(metrics, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn serve_metrics(State(state): State<AppState>) -> impl IntoResponse {
    match state.metrics.render() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "encoding metrics failed\n".to_owned(),
        ),
    }
}

async fn serve_readyz(State(state): State<AppState>) -> impl IntoResponse {
    let failing = state.readiness.failing_watches();
    if state.readiness.is_ready() {
        (StatusCode::OK, "ok\n".to_owned())
    } else if !failing.is_empty() {
        let kinds = failing.join(", ");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("watch failing: {kinds}\n"),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "caches not synced\n".to_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_answer_on_a_real_socket() {
        let metrics = Arc::new(Metrics::default());
        let readiness = Arc::new(Readiness::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = router(metrics.clone(), readiness.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        assert!(get("/livez").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        readiness.set(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        readiness.watch_healthy("pods", false);
        let failing = get("/readyz").await;
        assert!(failing.starts_with("HTTP/1.1 503") && failing.contains("watch failing: pods"));
        readiness.watch_healthy("pods", true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        metrics.pods_created.inc();
        let body = get("/metrics").await;
        assert!(body.contains("everynode_pods_created_total 1"), "{body}");
        server.abort();
    }
}
