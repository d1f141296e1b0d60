//! etcd of a test cluster, through its JSON gateway: compaction, which expires every watch that
//! resumes from an older resourceVersion (the apiserver answers 410 Gone).

use std::time::Duration;

use crate::shared::ClusterInfo;

/// Compacts etcd up to its current revision (physically) and returns that revision.
///
/// # Panics
/// When etcd does not answer as expected.
pub async fn compact(info: &ClusterInfo) -> i64 {
    let uri = format!("http://127.0.0.1:{}", info.state.ports.etcd_client);
    let mut config = kube::Config::new(uri.parse().expect("etcd URL"));
    config.read_timeout = Some(Duration::from_secs(30));
    let client = kube::Client::try_from(config).expect("etcd client");
    let post = |path: &'static str, body: serde_json::Value| {
        let client = client.clone();
        async move {
            let request = http::Request::post(path)
                .header("content-type", "application/json")
                .body(body.to_string().into_bytes())
                .expect("etcd request");
            let text = client
                .request_text(request)
                .await
                .unwrap_or_else(|e| panic!("etcd {path}: {e}"));
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("etcd {path}: {e}: {text}"))
        }
    };
    // Any range read reports the store's current revision in its header ("Lw==" is "/").
    let range = post("/v3/kv/range", serde_json::json!({"key": "Lw=="})).await;
    let revision: i64 = range["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {range}"));
    post(
        "/v3/kv/compaction",
        serde_json::json!({"revision": revision.to_string(), "physical": true}),
    )
    .await;
    revision
}
