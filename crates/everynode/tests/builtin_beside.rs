//! `everynode controller --target apps/v1` started while kube-controller-manager's DaemonSet
//! controller still runs: once the built-in controller writes the set after everynode started
//! (here it creates the pod of a node that joins while everynode is frozen), everynode stands
//! aside — condition `BuiltInControllerOff=False`, a `BuiltInControllerRunning` Event, none of
//! the set's pods written, so a node joining meanwhile gets exactly one pod, the built-in
//! controller's — and once the built-in controller is off and quiet, everynode carries on.

use std::collections::BTreeMap;
use std::time::Duration;

use everynode_testkit::deploy::{controller_account, token_kubeconfig};
use everynode_testkit::{LocalCluster, TestEnv, consistently, eventually};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};

mod common;

use common::{controller_command, live_agent_pods, plain_set, signal, wait_ready_pods};

const TIMEOUT: Duration = Duration::from_secs(60);
const QUIET_SECONDS: u64 = 10;

fn built_in_set(env: &TestEnv) -> DaemonSet {
    serde_json::from_value(plain_set(env, "apps/v1", "agent:v1")).expect("the test set decodes")
}

/// `(status, reason)` of the set's `BuiltInControllerOff` condition.
async fn built_in_off(env: &TestEnv) -> Option<(String, String)> {
    let set = env.api::<DaemonSet>().get("agent").await.ok()?;
    set.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "BuiltInControllerOff")
        .map(|c| (c.status, c.reason.unwrap_or_default()))
}

/// Live pods by name: (node, UID, created by the built-in controller).
async fn live_pods(env: &TestEnv) -> BTreeMap<String, (String, String, bool)> {
    live_agent_pods(env)
        .await
        .into_iter()
        .map(|p| {
            let by_built_in = p.managed_fields().iter().any(|e| {
                e.manager.as_deref() == Some("kube-controller-manager") && e.subresource.is_none()
            });
            let node = everynode_core::target_node_name(&p).unwrap_or_default();
            (
                p.name_any(),
                (node, p.uid().unwrap_or_default(), by_built_in),
            )
        })
        .collect()
}

#[tokio::test]
async fn everynode_stands_aside_while_the_built_in_controller_runs_beside_it() {
    let mut cluster = LocalCluster::start(0, true).await;
    let env = TestEnv::on(cluster.info().clone(), "beside-built-in").await;
    env.add_nodes(2).await;
    env.api::<DaemonSet>()
        .create(&PostParams::default(), &built_in_set(&env))
        .await
        .expect("create apps/v1 set");
    wait_ready_pods(&env, "agent:v1", 2).await;

    let account = controller_account(&env, "beside", |_| {}).await;
    let controller = controller_command(&env, &token_kubeconfig(&env, &account).await)
        .args(["--target", "apps/v1"])
        .args(["--builtin-quiet-seconds", &QUIET_SECONDS.to_string()])
        .spawn()
        .expect("start everynode controller");
    // Its caches sync within a second on a cluster this small.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // While everynode is frozen a node joins: the built-in controller creates its pod.
    signal(&controller, "STOP");
    env.add_nodes(1).await;
    wait_ready_pods(&env, "agent:v1", 3).await;
    signal(&controller, "CONT");
    eventually("BuiltInControllerOff=False", TIMEOUT, || async {
        match built_in_off(&env).await {
            Some((status, reason)) if status == "False" && reason == "BuiltInControllerRunning" => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let events = env
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("BuiltInControllerRunning")),
        "no BuiltInControllerRunning Event"
    );

    // Standing aside: a joining node gets exactly one pod, the built-in controller's, and no
    // other pod changes.
    let before = live_pods(&env).await;
    let joined = env.add_nodes(1).await;
    wait_ready_pods(&env, "agent:v1", 4).await;
    consistently(
        "no churn beside the built-in controller",
        Duration::from_secs(4),
        || async {
            let now = live_pods(&env).await;
            let on_new: Vec<_> = now
                .values()
                .filter(|(node, _, _)| *node == joined[0])
                .collect();
            let kept = before.iter().all(|(name, pod)| now.get(name) == Some(pod));
            if now.len() == 4 && on_new.len() == 1 && on_new[0].2 && kept {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        },
    )
    .await;

    // The built-in controller off: after the quiet period everynode carries on.
    cluster.set_builtin_daemonset_controller(false).await;
    eventually("BuiltInControllerOff=True", TIMEOUT, || async {
        match built_in_off(&env).await {
            Some((status, _)) if status == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let last = env.add_nodes(1).await;
    wait_ready_pods(&env, "agent:v1", 5).await;
    let pods = live_pods(&env).await;
    let on_last: Vec<_> = pods
        .values()
        .filter(|(node, _, _)| *node == last[0])
        .collect();
    assert!(on_last.len() == 1 && !on_last[0].2, "{pods:?}");
    drop(controller);
    drop(env);
    cluster.down().await;
}
