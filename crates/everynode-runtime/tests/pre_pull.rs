//! Image pre-pull (`rollingUpdate.prePull`) on the local cluster, with the shipped RBAC. The
//! cluster's KWOK stages take 5 s to "pull" an image of the registry `slow.invalid`, unless the
//! pod says everynode pulled its images on the node ahead. Two sets roll out the same new image
//! on the same three nodes, one with `prePull`: a watch of every pod event measures, per node,
//! how long the node had no Ready pod of each set — from the old pod's deletion to the new pod's
//! readiness.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use everynode_api::DaemonSet;
use everynode_api::labels::{PRE_PULL_OF_LABEL, PRE_PULLED_ANNOTATION};
use everynode_runtime::Target;
use everynode_testkit::{TestEnv, eventually, pods};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

const OLD: &str = "slow.invalid/agent:v1";
const NEW: &str = "slow.invalid/agent:v2";

/// Per `(set, node)`: when the old pod was first seen terminating or gone, and when a new pod
/// was first seen Ready.
#[derive(Debug, Default)]
struct Windows {
    old_gone: BTreeMap<(String, String), Instant>,
    new_ready: BTreeMap<(String, String), Instant>,
}

impl Windows {
    fn observe(&mut self, pod: &Pod, deleted: bool) {
        let (Some(set), Some(node)) = (
            pod.labels().get("app").cloned(),
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        ) else {
            return;
        };
        let key = (set, node);
        let image = image_of(pod).unwrap_or_default();
        if image == OLD && (deleted || pod.metadata.deletion_timestamp.is_some()) {
            self.old_gone.entry(key).or_insert_with(Instant::now);
        } else if image == NEW && pods::is_ready(pod) && !deleted {
            self.new_ready.entry(key).or_insert_with(Instant::now);
        }
    }

    /// The window of every node of `set`, in seconds.
    fn of(&self, set: &str) -> Vec<f64> {
        self.old_gone
            .iter()
            .filter(|((s, _), _)| s == set)
            .filter_map(|(key, gone)| {
                let ready = self.new_ready.get(key)?;
                Some(ready.saturating_duration_since(*gone).as_secs_f64())
            })
            .collect()
    }
}

fn record(env: &TestEnv) -> (Arc<Mutex<Windows>>, tokio::task::JoinHandle<()>) {
    let windows = Arc::new(Mutex::new(Windows::default()));
    let sink = windows.clone();
    let stream = watcher(env.api::<Pod>(), watcher::Config::default());
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            let mut w = sink.lock().unwrap_or_else(|p| p.into_inner());
            match event {
                watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                    w.observe(&pod, false);
                }
                watcher::Event::Delete(pod) => w.observe(&pod, true),
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
    });
    (windows, task)
}

/// The most nodes the `pulled` set's status ever reported pulling, from a watch of the set.
fn watch_most_pulling(env: &TestEnv) -> Arc<Mutex<i32>> {
    let most = Arc::new(Mutex::new(0));
    let sink = most.clone();
    let config = watcher::Config::default().fields("metadata.name=pulled");
    let stream = watcher(env.api::<DaemonSet>(), config);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(set) | watcher::Event::InitApply(set)) = event {
                let pulling = set.status.and_then(|s| s.pre_pulling_nodes).unwrap_or(0);
                let mut most = sink.lock().unwrap_or_else(|p| p.into_inner());
                *most = (*most).max(pulling);
            }
        }
    });
    most
}

fn set(env: &TestEnv, name: &str, pre_pull: bool) -> DaemonSet {
    let mut rolling = json!({"maxUnavailable": 1});
    if pre_pull {
        rolling["prePull"] = json!({"nodesAhead": 1});
    }
    serde_json::from_value(json!({
        "apiVersion": "everynode.dev/v1alpha1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": env.namespace()},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"rollingUpdate": rolling},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": env.group_selector(),
                         "containers": [{"name": "agent", "image": OLD}]}
            }
        }
    }))
    .expect("the test set decodes")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::test]
async fn pulling_ahead_shortens_each_nodes_window_to_the_container_start() {
    let env = TestEnv::new("pre-pull").await;
    let nodes = env.add_nodes(3).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    for (name, pre_pull) in [("pulled", true), ("plain", false)] {
        sets.create(&PostParams::default(), &set(&env, name, pre_pull))
            .await
            .expect("create set");
    }
    for name in ["pulled", "plain"] {
        wait_one_ready_pod_per_node(&env, name, &nodes, OLD).await;
    }
    let (windows, watch) = record(&env);
    let most_pulling = watch_most_pulling(&env);
    for name in ["pulled", "plain"] {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": NEW}]}}}});
        sets.patch(name, &Default::default(), &kube::api::Patch::Merge(patch))
            .await
            .expect("new image");
    }
    for name in ["pulled", "plain"] {
        eventually(&format!("{name} rolled out"), TIMEOUT, || async {
            let set = sets.get(name).await.map_err(|e| e.to_string())?;
            let status = set.status.unwrap_or_default();
            // Of the new generation: until the controller sees it, the old rollout looks done.
            (status.observed_generation == set.metadata.generation
                && status.updated_number_scheduled == Some(3)
                && status.number_available == Some(3))
            .then_some(())
            .ok_or(format!("{status:?}"))
        })
        .await;
    }
    for name in ["pulled", "plain"] {
        wait_one_ready_pod_per_node(&env, name, &nodes, NEW).await;
    }
    watch.abort();
    let (pulled, plain) = {
        let w = windows.lock().unwrap_or_else(|p| p.into_inner());
        (w.of("pulled"), w.of("plain"))
    };
    eprintln!("unavailable window per node, s: with prePull {pulled:?}, without {plain:?}");
    assert_eq!((pulled.len(), plain.len()), (3, 3), "a window per node");
    assert!(
        median(pulled.clone()) + 2.0 < median(plain.clone()),
        "pulling ahead should shorten the window: {pulled:?} vs {plain:?}"
    );
    let most_pulling = *most_pulling.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        most_pulling >= 1,
        "status.prePullingNodes was never reported"
    );
    // Every new pod was made on pulled images, and no pre-pull pod is left.
    for pod in set_pods(&env, "pulled").await {
        assert!(
            pod.annotations().contains_key(PRE_PULLED_ANNOTATION),
            "{} lacks {PRE_PULLED_ANNOTATION}",
            pod.name_any()
        );
    }
    eventually("pre-pull pods gone", TIMEOUT, || async {
        let left = env
            .api::<Pod>()
            .list(&ListParams::default().labels(PRE_PULL_OF_LABEL))
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        (left == 0).then_some(()).ok_or(format!("{left} left"))
    })
    .await;
}
