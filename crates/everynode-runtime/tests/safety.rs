//! Rollout safety on the real local control plane: a new revision whose pods never become
//! ready (KWOK's never-ready simulation) trips the progress deadline, which (a) pauses the
//! rollout, or (b) rolls the template back to the stable revision without restarting a pod on
//! the nodes the bad revision never reached; and crash-looping pods trip `maxFailedNodes`.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use common::*;
use everynode_api::{DaemonSet, RolloutFailure};
use everynode_runtime::Target;
use everynode_testkit::{SIMULATE_LABEL, TestEnv, consistently, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

/// Waits until the set's update revision is its stable revision (available everywhere).
async fn wait_stable(env: &TestEnv) {
    wait_for_set(env, "the update revision to be the stable revision", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.stable_revision.is_some() && st.stable_revision == st.update_revision
        })
    })
    .await;
}

/// Waits until the rollout fails with `reason`; returns the set and its failure.
async fn wait_failed(env: &TestEnv, what: &str, reason: &str) -> (DaemonSet, RolloutFailure) {
    let set = wait_for_set(env, what, |s| {
        s.status
            .as_ref()
            .and_then(|st| st.failure.as_ref())
            .is_some_and(|f| f.reason == reason)
    })
    .await;
    let failure = set
        .status
        .as_ref()
        .and_then(|s| s.failure.clone())
        .unwrap_or_else(|| unreachable!());
    (set, failure)
}

/// Checks for `duration` that the rollout has not failed.
async fn stays_unfailed(env: &TestEnv, what: &str, duration: Duration) {
    consistently(what, duration, || async {
        let s = env
            .api::<DaemonSet>()
            .get("agent")
            .await
            .map_err(|e| e.to_string())?;
        match s.status.and_then(|st| st.failure) {
            None => Ok(()),
            Some(f) => Err(format!("failed: {f:?}")),
        }
    })
    .await;
}

/// `count` nodes on `agent:v1`, available; returns the node names.
async fn rolled_out(env: &TestEnv, count: usize, rolling_update: serde_json::Value) -> Vec<String> {
    let nodes = env.add_nodes(count).await;
    env.api::<DaemonSet>()
        .create(&PostParams::default(), &set_with(env, rolling_update))
        .await
        .unwrap_or_else(|e| panic!("create set: {e}"));
    wait_one_ready_pod_per_node(env, "agent", &nodes, "agent:v1").await;
    wait_stable(env).await;
    nodes
}

#[tokio::test]
async fn a_never_ready_revision_trips_the_deadline_and_pauses() {
    let env = TestEnv::new("safety-pause").await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let nodes = rolled_out(
        &env,
        3,
        json!({"maxUnavailable": 1, "progressDeadlineSeconds": 5}),
    )
    .await;
    let before = uids_by_node(&env).await;
    patch_set(&env.api::<DaemonSet>(), bad_revision(), "bad revision").await;
    let (failed, failure) = wait_failed(
        &env,
        "the rollout to fail on its deadline",
        "ProgressDeadlineExceeded",
    )
    .await;
    assert_eq!(
        condition(&failed, "Progressing"),
        Some(("False".into(), "ProgressDeadlineExceeded".into()))
    );
    assert_eq!(
        condition(&failed, "RolloutFailed"),
        Some(("True".into(), "ProgressDeadlineExceeded".into()))
    );
    assert_eq!(failure.policy, "Pause");
    eventually("a RolloutFailed Warning event", TIMEOUT, || async {
        let found = events(&env, "RolloutFailed").await;
        if found.iter().any(|m| m.contains("failurePolicy Pause")) {
            Ok(())
        } else {
            Err(format!("{found:?}"))
        }
    })
    .await;
    // Paused: one node got the bad revision, the other two keep their v1 pod.
    consistently(
        "the rollout to stay paused",
        Duration::from_secs(6),
        || async {
            let now = uids_by_node(&env).await;
            let changed: Vec<&String> = nodes
                .iter()
                .filter(|n| now.get(*n) != before.get(*n))
                .collect();
            if changed.len() == 1 && now.get(changed[0]).is_some_and(|(_, i)| i == "agent:v2") {
                Ok(())
            } else {
                Err(format!("changed {changed:?}: {now:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_never_ready_revision_is_rolled_back_without_touching_other_nodes() {
    let env = TestEnv::new("safety-rollback").await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let nodes = rolled_out(
        &env,
        3,
        json!({"maxUnavailable": 1, "progressDeadlineSeconds": 5, "failurePolicy": "Rollback"}),
    )
    .await;
    let before = uids_by_node(&env).await;
    let stable = wait_for_set(&env, "a stable revision", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.stable_revision.is_some())
    })
    .await
    .status
    .and_then(|s| s.stable_revision)
    .unwrap_or_default();
    patch_set(&env.api::<DaemonSet>(), bad_revision(), "bad revision").await;
    let rolled_back = wait_for_set(&env, "the rollback to the stable revision", |s| {
        s.status
            .as_ref()
            .and_then(|st| st.rollback.as_ref())
            .is_some_and(|r| r.rollback_of == stable)
    })
    .await;
    let labels = rolled_back
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert!(!labels.contains_key(SIMULATE_LABEL), "{labels:?}");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let done = wait_for_set(&env, "the rollback to complete", |s| {
        condition(s, "Progressing").is_some_and(|(_, r)| r == "RolloutComplete")
    })
    .await;
    assert_eq!(
        condition(&done, "RolloutFailed"),
        Some(("False".into(), "RolledBack".into()))
    );
    assert_eq!(
        done.status.as_ref().and_then(|s| s.update_revision.clone()),
        Some(stable)
    );
    // Exactly one node ran the bad revision; the other two kept their pod throughout.
    let after = uids_by_node(&env).await;
    let restarted: Vec<&String> = nodes
        .iter()
        .filter(|n| after.get(*n) != before.get(*n))
        .collect();
    assert_eq!(restarted.len(), 1, "before {before:?}, after {after:?}");
    assert!(!events(&env, "RolledBack").await.is_empty());
}

#[tokio::test]
async fn crash_looping_pods_on_three_nodes_trip_max_failed_nodes_of_two() {
    let env = TestEnv::new("safety-crash").await;
    let _controller = start_controller(&env, Target::Everynode).await;
    rolled_out(&env, 4, json!({"maxUnavailable": 4, "maxFailedNodes": 2})).await;
    patch_set(&env.api::<DaemonSet>(), bad_revision(), "bad revision").await;
    // KWOK plays the kubelet; a crash loop is what the kubelet would report for these pods.
    let crash = |env: &TestEnv, pod: Pod| {
        let api = env.api::<Pod>();
        async move {
            let name = pod.name_any();
            let patch = json!({"status": {"containerStatuses": [{
                "name": "agent", "image": "agent:v2", "imageID": "", "ready": false,
                "restartCount": 5, "started": false,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}
            }]}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(|_| ())
                .map_err(|e| format!("{name}: {e}"))
        }
    };
    let v2_pods = || async {
        set_pods(&env, "agent")
            .await
            .into_iter()
            .filter(|p| image_of(p).as_deref() == Some("agent:v2"))
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect::<Vec<_>>()
    };
    let pods = eventually("v2 pods running on every node", TIMEOUT, || async {
        let pods = v2_pods().await;
        if pods.len() == 4 {
            Ok(pods)
        } else {
            Err(format!("{} v2 pods running", pods.len()))
        }
    })
    .await;
    for pod in pods.iter().take(2) {
        eventually("crash-loop status", TIMEOUT, || crash(&env, pod.clone())).await;
    }
    stays_unfailed(
        &env,
        "two failed nodes are within maxFailedNodes",
        Duration::from_secs(3),
    )
    .await;
    eventually("crash-loop status", TIMEOUT, || {
        crash(&env, pods[2].clone())
    })
    .await;
    let (_, failure) = wait_failed(&env, "maxFailedNodes to trip", "FailedNodesExceeded").await;
    assert_eq!(failure.failed_nodes.len(), 3, "{failure:?}");
    assert!(
        failure
            .failed_nodes
            .iter()
            .all(|n| n.ends_with("container agent: CrashLoopBackOff")),
        "{failure:?}"
    );
}

#[tokio::test]
async fn status_lists_blocked_nodes_with_the_reason_for_each() {
    let env = TestEnv::new("safety-blocked").await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let nodes = env.add_nodes(5).await;
    for node in &nodes[1..] {
        env.label_node(node, "role", Some("agent")).await;
    }
    // nodes[0]: no role label (not selected: not listed). nodes[1]: tainted. nodes[2]: its
    // host port is taken. nodes[3]: its CPU is taken. nodes[4]: runs the daemon.
    env.taint_node(&nodes[1], "dedicated", Some("db"), "NoSchedule")
        .await;
    let port_taker = everynode_testkit::pods::with_port(
        everynode_testkit::pods::pod("port-taker", &BTreeMap::new(), Some(&nodes[2])),
        9100,
        Some(9100),
    );
    env.create_pod(&port_taker).await;
    let mut cpu_taker =
        everynode_testkit::pods::pod("cpu-taker", &BTreeMap::new(), Some(&nodes[3]));
    if let Some(c) = cpu_taker.spec.as_mut().map(|s| &mut s.containers[0]) {
        c.resources =
            Some(serde_json::from_value(json!({"requests": {"cpu": "30"}})).unwrap_or_default());
    }
    env.create_pod(&cpu_taker).await;
    env.wait_pod_running("port-taker", TIMEOUT).await;
    env.wait_pod_running("cpu-taker", TIMEOUT).await;

    let mut set = set_with(&env, json!({"maxUnavailable": 1}));
    if let Some(spec) = set.spec.template.spec.as_mut() {
        spec.node_selector
            .get_or_insert_with(BTreeMap::new)
            .insert("role".into(), "agent".into());
        spec.containers[0] = serde_json::from_value(json!({
            "name": "agent", "image": "agent:v1",
            "ports": [{"containerPort": 9100, "hostPort": 9100}],
            "resources": {"requests": {"cpu": "4"}}
        }))
        .unwrap_or_else(|e| panic!("container: {e}"));
    }
    env.api::<DaemonSet>()
        .create(&PostParams::default(), &set)
        .await
        .unwrap_or_else(|e| panic!("create set: {e}"));
    let blocked = wait_for_set(&env, "every blocked node in status.blockedNodes", |s| {
        let listed = s
            .status
            .as_ref()
            .and_then(|st| st.blocked_nodes.as_ref())
            .map(|l| l.iter().filter(|b| nodes.contains(&b.node)).count())
            .unwrap_or(0);
        listed == 3
    })
    .await;
    let by_node: BTreeMap<String, (String, String)> = blocked
        .status
        .and_then(|s| s.blocked_nodes)
        .unwrap_or_default()
        .into_iter()
        .map(|b| (b.node, (b.reason, b.message)))
        .collect();
    let reason = |n: usize| by_node[&nodes[n]].clone();
    assert!(!by_node.contains_key(&nodes[0]), "{by_node:?}");
    assert_eq!(reason(1).0, "TaintNotTolerated", "{by_node:?}");
    assert_eq!(reason(2).0, "Unschedulable", "{by_node:?}");
    assert!(reason(2).1.contains("free ports"), "{by_node:?}");
    assert_eq!(reason(3).0, "Unschedulable", "{by_node:?}");
    assert!(reason(3).1.contains("Insufficient cpu"), "{by_node:?}");
    assert!(!by_node.contains_key(&nodes[4]), "{by_node:?}");
}

/// 27 healthy nodes and 3 that never became ready (no kubelet: unmanaged by KWOK), a set that
/// tolerates every taint (as node agents do) and `maxUnavailable: 10%` (3), then a new image.
/// Returns the healthy and the down nodes.
async fn update_with_three_down_nodes(env: &TestEnv, policy: &str) -> (Vec<String>, Vec<String>) {
    let healthy = env.add_nodes(27).await;
    let mut down = Vec::new();
    for _ in 0..3 {
        down.push(env.add_unmanaged_node().await);
    }
    down.sort();
    let mut set = set_with(
        env,
        json!({"maxUnavailable": "10%", "unavailableNodePolicy": policy}),
    );
    if let Some(spec) = set.spec.template.spec.as_mut() {
        spec.tolerations = Some(vec![
            serde_json::from_value(json!({"operator": "Exists"}))
                .unwrap_or_else(|e| panic!("toleration: {e}")),
        ]);
    }
    env.api::<DaemonSet>()
        .create(&PostParams::default(), &set)
        .await
        .unwrap_or_else(|e| panic!("create set: {e}"));
    eventually("a ready v1 pod on every healthy node", TIMEOUT, || async {
        let ready = on_image(env, "agent:v1", &healthy).await;
        if ready == healthy.len() {
            Ok(())
        } else {
            Err(format!("{ready} of {}", healthy.len()))
        }
    })
    .await;
    env.api::<DaemonSet>()
        .patch(
            "agent",
            &PatchParams::default(),
            &Patch::Merge(new_image("agent:v2")),
        )
        .await
        .unwrap_or_else(|e| panic!("patch: {e}"));
    (healthy, down)
}

/// How many of `nodes` run a Ready pod with `image`.
async fn on_image(env: &TestEnv, image: &str, nodes: &[String]) -> usize {
    set_pods(env, "agent")
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| image_of(p).as_deref() == Some(image))
        .filter(|p| everynode_testkit::pods::is_ready(p))
        .filter(|p| pinned_node(p).is_some_and(|n| nodes.contains(&n)))
        .count()
}

#[tokio::test]
async fn three_down_nodes_out_of_thirty_block_a_rollout_under_count() {
    let env = TestEnv::new("safety-count").await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let (healthy, _down) = update_with_three_down_nodes(&env, "Count").await;
    // The down nodes use the whole budget: no healthy node is updated.
    consistently(
        "the rollout to stay blocked",
        Duration::from_secs(8),
        || async {
            match on_image(&env, "agent:v2", &healthy).await {
                0 => Ok(()),
                n => Err(format!("{n} healthy nodes updated")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn three_down_nodes_out_of_thirty_are_skipped_under_skip() {
    let env = TestEnv::new("safety-skip").await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let (healthy, down) = update_with_three_down_nodes(&env, "Skip").await;
    eventually(
        "every healthy node on v2",
        Duration::from_secs(120),
        || async {
            let updated = on_image(&env, "agent:v2", &healthy).await;
            if updated == healthy.len() {
                Ok(())
            } else {
                Err(format!("{updated} of {}", healthy.len()))
            }
        },
    )
    .await;
    let set = wait_for_set(&env, "the down nodes listed as skipped", |s| {
        s.status.as_ref().and_then(|st| st.skipped_nodes.as_ref()) == Some(&down)
    })
    .await;
    let totals = set
        .status
        .and_then(|s| s.blocked_totals)
        .unwrap_or_default();
    assert!(
        totals
            .iter()
            .any(|t| t.reason == "SkippedNodeDown" && t.count == 3),
        "{totals:?}"
    );
}

/// Plays the kubelet's node heartbeat (Ready=True every 5 s) for `nodes` until aborted.
fn heartbeat(env: &TestEnv, nodes: Vec<String>) -> tokio::task::JoinHandle<()> {
    let api = env.nodes_api();
    tokio::spawn(async move {
        loop {
            let now = everynode_testkit::pods::now();
            let patch = json!({"status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": now, "lastTransitionTime": now
            }]}});
            for node in &nodes {
                // A missed beat is retried 5 s later, as a kubelet would.
                let _ = api
                    .patch_status(node, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
}

/// Marks every pending pod of the set on `nodes` Ready (there is no kubelet on them).
async fn mark_ready_on(env: &TestEnv, nodes: &[String], image: &str) {
    eventually(
        &format!("a Ready {image} pod on {nodes:?}"),
        TIMEOUT,
        || async {
            let pods = set_pods(env, "agent").await;
            let mut ready = 0;
            for pod in &pods {
                let on = pinned_node(pod).is_some_and(|n| nodes.contains(&n));
                if !on
                    || pod.metadata.deletion_timestamp.is_some()
                    || image_of(pod).as_deref() != Some(image)
                    || pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_none()
                {
                    continue;
                }
                if !everynode_testkit::pods::is_ready(pod) {
                    env.mark_pod_ready(&pod.name_any()).await;
                }
                ready += 1;
            }
            if ready == nodes.len() {
                Ok(())
            } else {
                Err(format!("{ready} of {}", nodes.len()))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_node_that_turns_not_ready_right_after_its_update_trips_the_health_guard() {
    let env = TestEnv::new("safety-health").await;
    let _controller = start_controller(&env, Target::Everynode).await;
    // Two nodes without KWOK: the test is their kubelet (heartbeat, pod readiness).
    let nodes = vec![
        env.add_unmanaged_node().await,
        env.add_unmanaged_node().await,
    ];
    let beating = heartbeat(&env, nodes.clone());
    env.wait_nodes_ready(&nodes, TIMEOUT).await;
    let mut set = set_with(
        &env,
        json!({"maxUnavailable": 2, "nodeHealthWindowSeconds": 60, "maxFailedNodes": 0}),
    );
    if let Some(spec) = set.spec.template.spec.as_mut() {
        spec.termination_grace_period_seconds = Some(0);
    }
    env.api::<DaemonSet>()
        .create(&PostParams::default(), &set)
        .await
        .unwrap_or_else(|e| panic!("create set: {e}"));
    mark_ready_on(&env, &nodes, "agent:v1").await;
    wait_stable(&env).await;
    patch_set(&env.api::<DaemonSet>(), new_image("agent:v2"), "new image").await;
    mark_ready_on(&env, &nodes, "agent:v2").await;
    stays_unfailed(
        &env,
        "no failure while both nodes stay healthy",
        Duration::from_secs(3),
    )
    .await;
    // The first node stops beating and reports NotReady, seconds after its update.
    beating.abort();
    let still_beating = heartbeat(&env, vec![nodes[1].clone()]);
    env.set_node_conditions(&nodes[0], &[("Ready", "False")])
        .await;
    let (_, failure) = wait_failed(
        &env,
        "the node-health guard to fail the rollout",
        "FailedNodesExceeded",
    )
    .await;
    assert_eq!(
        failure.failed_nodes,
        [format!(
            "{}: node turned NotReady within 60s of the update",
            nodes[0]
        )]
    );
    still_beating.abort();
}
