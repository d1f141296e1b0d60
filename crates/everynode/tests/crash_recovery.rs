//! The controller process is SIGKILLed in the middle of a rolling update and started again. A
//! watcher records every pod event throughout and checks the invariants at each one: no node ever
//! holds two live pods of one revision, and no more nodes than maxUnavailable are without a Ready
//! pod; the rollout then completes.

use std::collections::BTreeSet;
use std::time::Duration;

use everynode_testkit::ledger::WatchedLedger;
use everynode_testkit::{TestEnv, eventually, pods};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};

mod common;

use common::controller_command;

const TIMEOUT: Duration = Duration::from_secs(90);
const NODES: usize = 6;
const MAX_UNAVAILABLE: usize = 2;

fn start_controller(env: &TestEnv) -> tokio::process::Child {
    controller_command(env, &env.cluster().kubeconfig())
        .spawn()
        .expect("start everynode controller")
}

#[tokio::test]
async fn a_killed_controller_resumes_the_rollout_without_duplicates_or_budget_overrun() {
    let env = TestEnv::new("crash").await;
    let nodes: BTreeSet<String> = env.add_nodes(NODES).await.into_iter().collect();
    everynode_testkit::install_crd(&env.client()).await;

    let sets: Api<DynamicObject> = Api::namespaced_with(
        env.client(),
        env.namespace(),
        &ApiResource::erase::<everynode_api::DaemonSet>(&()),
    );
    let set = |image: &str| {
        serde_json::json!({
            "apiVersion": "everynode.dev/v1alpha1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": env.namespace()},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": MAX_UNAVAILABLE}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"nodeSelector": env.group_selector(), "containers": [{"name": "c", "image": image}]}
                }
            }
        })
    };
    eventually("the set to be created", TIMEOUT, || async {
        sets.patch(
            "agent",
            &PatchParams::apply("everynode-tests"),
            &Patch::Apply(&set("agent:v1")),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    })
    .await;

    // Record every pod event from now on.
    let pods_api: Api<Pod> = env.api();
    let ledger = WatchedLedger::start(pods_api.clone(), "app=agent");

    let mut controller = start_controller(&env);
    let ready_on = |image: &'static str| {
        let pods_api = pods_api.clone();
        let nodes = nodes.clone();
        async move {
            eventually(
                &format!("one Ready {image} pod on every node"),
                TIMEOUT,
                || async {
                    let list = pods_api
                        .list(&Default::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let ok: BTreeSet<String> = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none() && pods::is_ready(p))
                        .filter(|p| {
                            p.spec
                                .as_ref()
                                .and_then(|s| s.containers.first()?.image.clone())
                                .as_deref()
                                == Some(image)
                        })
                        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                        .collect();
                    if ok == nodes && list.items.len() == NODES {
                        Ok(())
                    } else {
                        Err(format!("{} of {NODES}", ok.len()))
                    }
                },
            )
            .await;
        }
    };
    ready_on("agent:v1").await;
    ledger.lock().check_budget(nodes.clone(), MAX_UNAVAILABLE);

    // Start the rollout and kill the controller as soon as it has begun replacing pods.
    sets.patch(
        "agent",
        &PatchParams::apply("everynode-tests"),
        &Patch::Apply(&set("agent:v2")),
    )
    .await
    .expect("update image");
    eventually("the rollout to begin", TIMEOUT, || async {
        let list = pods_api
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let started = list.items.iter().any(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.containers.first()?.image.clone())
                .as_deref()
                == Some("agent:v2")
        });
        if started {
            Ok(())
        } else {
            Err("no v2 pod yet".into())
        }
    })
    .await;
    controller.start_kill().expect("SIGKILL the controller");
    let _ = controller.wait().await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let _controller = start_controller(&env);
    ready_on("agent:v2").await;

    let ledger = ledger.lock();
    assert!(
        ledger.events() > NODES,
        "the watcher saw only {} events",
        ledger.events()
    );
    assert!(
        ledger.violations().is_empty(),
        "invariants broken: {:#?}",
        ledger.violations()
    );
}
