//! Helpers of the tests that run `everynode controller` as a process.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
use std::process::Stdio;

use everynode_testkit::{TestEnv, eventually, pods};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

/// `everynode controller` for the test's namespace with `kubeconfig`, logging warnings and up to
/// stderr; add arguments and environment, then spawn (killed when dropped).
pub fn controller_command(env: &TestEnv, kubeconfig: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_everynode"));
    command
        .args([
            "controller",
            "--namespace",
            env.namespace(),
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("EVERYNODE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// Sends `signal` (`STOP`, `CONT`, …) to a process.
pub fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("the process runs");
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Live, Ready pods of the set `agent` (label `app=agent`) on `image`.
pub async fn ready_pods_on(env: &TestEnv, image: &str) -> usize {
    env.api::<Pod>()
        .list(&ListParams::default().labels("app=agent"))
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && pods::is_ready(p))
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.containers.first()?.image.as_deref())
                        == Some(image)
                })
                .count()
        })
        .unwrap_or_default()
}

/// Waits until exactly `count` live, Ready pods of the set `agent` run `image`.
pub async fn wait_ready_pods(env: &TestEnv, image: &str, count: usize) {
    let what = format!("{count} ready {image} pods");
    eventually(&what, std::time::Duration::from_secs(60), || async {
        match ready_pods_on(env, image).await {
            n if n == count => Ok(()),
            n => Err(format!("{n}")),
        }
    })
    .await;
}
