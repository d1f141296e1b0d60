//! Readiness and health probes (HTTP(S) on 127.0.0.1 only) and the admin client.

use std::path::Path;
use std::time::Duration;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, Result};

/// A kube client for the admin kubeconfig at `path`.
pub async fn admin_client(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| Error::Format {
        path: kubeconfig.to_path_buf(),
        message: format!("cannot read kubeconfig: {e}"),
    })?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Format {
            path: kubeconfig.to_path_buf(),
            message: format!("invalid kubeconfig: {e}"),
        })?;
    Client::try_from(config).map_err(|e| Error::kube("create client", e))
}

/// GETs `url` + `path` without client credentials, accepting any server certificate (the
/// controller-manager and scheduler serve self-signed ones) and returns the body, or a short
/// description of the failure.
pub async fn probe(base_url: &str, path: &str) -> Result<String, String> {
    let uri = base_url
        .parse::<http::Uri>()
        .map_err(|e| format!("bad URL {base_url}: {e}"))?;
    let mut config = kube::Config::new(uri);
    config.accept_invalid_certs = true;
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(5));
    config.default_retry = false;
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    get_text(&client, path).await
}

/// GETs `path` with an existing client and returns the body, or a short failure description.
pub async fn get_text(client: &Client, path: &str) -> Result<String, String> {
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client.request_text(req).await.map_err(|e| e.to_string())
}
