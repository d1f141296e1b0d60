//! The controller process is SIGKILLed in the middle of a rolling update and started again. A
//! watcher records every pod event throughout and checks the invariants at each one: no node ever
//! holds two live pods of one revision, and no more nodes than maxUnavailable are without a Ready
//! pod; the rollout then completes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use everynode_testkit::{TestEnv, eventually, pods};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

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

#[derive(Clone, Debug)]
struct Seen {
    node: Option<String>,
    hash: String,
    ready: bool,
}

/// Live (not terminating) pods by name, and the invariant violations seen so far.
#[derive(Default)]
struct Recorder {
    live: BTreeMap<String, Seen>,
    events: usize,
    violations: Vec<String>,
    checking_budget: bool,
}

impl Recorder {
    fn observe(&mut self, pod: &Pod, deleted: bool, nodes: &BTreeSet<String>) {
        self.events += 1;
        let name = pod.name_any();
        if deleted || pod.metadata.deletion_timestamp.is_some() {
            self.live.remove(&name);
        } else {
            let seen = Seen {
                node: everynode_core::target_node_name(pod).ok(),
                hash: pod
                    .labels()
                    .get("controller-revision-hash")
                    .cloned()
                    .unwrap_or_default(),
                ready: pods::is_ready(pod),
            };
            self.live.insert(name, seen);
        }
        let mut per_node_revision: BTreeMap<(String, String), usize> = BTreeMap::new();
        for seen in self.live.values() {
            if let Some(node) = &seen.node {
                *per_node_revision
                    .entry((node.clone(), seen.hash.clone()))
                    .or_default() += 1;
            }
        }
        for ((node, hash), count) in per_node_revision {
            if count > 1 {
                self.violations.push(format!(
                    "event {}: {count} live pods of revision {hash} on {node}",
                    self.events
                ));
            }
        }
        if self.checking_budget {
            let available: BTreeSet<&String> = self
                .live
                .values()
                .filter(|s| s.ready)
                .filter_map(|s| s.node.as_ref())
                .collect();
            let unavailable = nodes.iter().filter(|n| !available.contains(n)).count();
            if unavailable > MAX_UNAVAILABLE {
                self.violations.push(format!(
                    "event {}: {unavailable} nodes without a Ready pod (maxUnavailable {MAX_UNAVAILABLE})",
                    self.events
                ));
            }
        }
    }
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
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let pods_api: Api<Pod> = env.api();
    let watch = {
        let recorder = recorder.clone();
        let nodes = nodes.clone();
        let stream = watcher(
            pods_api.clone(),
            watcher::Config::default().labels("app=agent"),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream.default_backoff());
            while let Some(event) = stream.next().await {
                let mut rec = recorder.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                        rec.observe(&pod, false, &nodes)
                    }
                    Ok(watcher::Event::Delete(pod)) => rec.observe(&pod, true, &nodes),
                    _ => {}
                }
            }
        })
    };

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
    recorder
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .checking_budget = true;

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

    watch.abort();
    let rec = recorder.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        rec.events > NODES,
        "the watcher saw only {} events",
        rec.events
    );
    assert!(
        rec.violations.is_empty(),
        "invariants broken: {:#?}",
        rec.violations
    );
}
