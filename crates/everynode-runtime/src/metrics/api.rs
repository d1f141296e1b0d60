//! API requests by verb, resource and code, and their latency: a tower layer in the
//! controller's client that sees every attempt (retried ones too).

use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The resource, `_subresource` appended (`daemonsets_status`); `discovery` otherwise.
    pub resource: String,
    /// The HTTP status, or `error` when no answer came.
    pub code: String,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// As [`RequestLabels::verb`].
    pub verb: String,
    /// As [`RequestLabels::resource`].
    pub resource: String,
}

/// The request series a client feeds.
#[derive(Clone, Debug)]
pub struct ApiSeries {
    /// Requests by verb, resource and code.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to the response's headers (for a watch: until it started), by verb and resource.
    pub latency: Family<LatencyLabels, Histogram>,
}

impl Default for ApiSeries {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
        }
    }
}

/// `(verb, resource)` of a Kubernetes API request.
pub fn classify(method: &http::Method, uri: &http::Uri) -> (String, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] | ["apis", _, _version, rest @ ..] => rest,
        _ => &[][..],
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named) = match rest {
        [] => ("discovery".to_owned(), false),
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, sub, ..] => (format!("{resource}_{sub}"), true),
    };
    let watching = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        http::Method::GET if watching => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => return (method.as_str().to_lowercase(), resource),
    };
    (verb.to_owned(), resource)
}

/// Counts and times every request that passes.
#[derive(Clone, Debug)]
pub struct ApiMetricsLayer {
    /// Where the counts go.
    pub series: ApiSeries,
}

impl<S> tower::Layer<S> for ApiMetricsLayer {
    type Service = ApiMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiMetricsService {
            inner,
            series: self.series.clone(),
        }
    }
}

/// See [`ApiMetricsLayer`].
#[derive(Clone, Debug)]
pub struct ApiMetricsService<S> {
    inner: S,
    series: ApiSeries,
}

impl<S, B, R> tower::Service<http::Request<B>> for ApiMetricsService<S>
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
        let (verb, resource) = classify(request.method(), request.uri());
        let started = Instant::now();
        let response = self.inner.call(request);
        let series = self.series.clone();
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            series
                .latency
                .get_or_create(&LatencyLabels {
                    verb: verb.clone(),
                    resource: resource.clone(),
                })
                .observe(started.elapsed().as_secs_f64());
            series
                .requests
                .get_or_create(&RequestLabels {
                    verb,
                    resource,
                    code,
                })
                .inc();
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: &str, uri: &str) -> (String, String) {
        let method = http::Method::from_bytes(method.as_bytes()).expect("method");
        let uri: http::Uri = uri.parse().expect("uri");
        classify(&method, &uri)
    }

    #[test]
    fn requests_are_named_as_rbac_names_them() {
        for (method, uri, verb, resource) in [
            ("GET", "/api/v1/pods?labelSelector=a", "list", "pods"),
            (
                "GET",
                "/api/v1/pods?watch=true&resourceVersion=1",
                "watch",
                "pods",
            ),
            (
                "POST",
                "/api/v1/namespaces/kube-system/pods",
                "create",
                "pods",
            ),
            ("DELETE", "/api/v1/namespaces/ns/pods/p-1", "delete", "pods"),
            ("PATCH", "/api/v1/namespaces/ns/pods/p-1", "patch", "pods"),
            (
                "PATCH",
                "/apis/everynode.dev/v1alpha1/namespaces/ns/daemonsets/ds/status",
                "patch",
                "daemonsets_status",
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/ns/daemonsets/ds",
                "get",
                "daemonsets",
            ),
            (
                "PUT",
                "/apis/apps/v1/namespaces/ns/daemonsets/ds",
                "update",
                "daemonsets",
            ),
            ("GET", "/api/v1/nodes", "list", "nodes"),
            ("GET", "/api/v1/namespaces/ns", "get", "namespaces"),
            ("GET", "/version", "list", "discovery"),
            ("GET", "/apis/apps/v1", "list", "discovery"),
            (
                "DELETE",
                "/api/v1/namespaces/ns/pods",
                "deletecollection",
                "pods",
            ),
        ] {
            assert_eq!(
                of(method, uri),
                (verb.to_owned(), resource.to_owned()),
                "{uri}"
            );
        }
    }
}
