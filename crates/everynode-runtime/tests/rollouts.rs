//! everynode's rollout controls on the real local control plane: a watcher records every pod
//! event while a rollout runs, and the test checks the order, the budget, the partition and
//! pause against the record.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::*;
use everynode_api::DaemonSet;
use everynode_runtime::Target;
use everynode_testkit::{TestEnv, consistently, eventually, pods};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::PostParams;
use kube::runtime::watcher;
use serde_json::json;

/// What the watcher saw: pods by name, and derived facts checked after every event.
#[derive(Default)]
struct Record {
    /// Pod name → (node, image, ready, terminating).
    pods: BTreeMap<String, (String, String, bool, bool)>,
    /// Nodes whose `agent:v1` pod started terminating (or vanished), in order.
    replaced: Vec<String>,
    /// When each of `replaced` was seen.
    replaced_at: Vec<std::time::Instant>,
    /// Most nodes seen at once without a ready, non-terminating pod (after `armed`).
    max_unavailable: usize,
    /// Nodes to check; set once the first revision is ready everywhere.
    armed: Vec<String>,
}

impl Record {
    fn observe(&mut self, pod: &Pod, gone: bool) {
        let name = pod.name_any();
        let node = pinned_node(pod).unwrap_or_default();
        let image = image_of(pod).unwrap_or_default();
        let terminating = gone || pod.metadata.deletion_timestamp.is_some();
        let was_live = self.pods.get(&name).is_some_and(|p| !p.3);
        if image == "agent:v1" && terminating && was_live && !self.replaced.contains(&node) {
            self.replaced.push(node.clone());
            self.replaced_at.push(std::time::Instant::now());
        }
        if gone {
            self.pods.remove(&name);
        } else {
            self.pods
                .insert(name, (node, image, pods::is_ready(pod), terminating));
        }
        let unavailable = self
            .armed
            .iter()
            .filter(|n| {
                !self
                    .pods
                    .values()
                    .any(|(node, _, ready, terminating)| node == *n && *ready && !*terminating)
            })
            .count();
        self.max_unavailable = self.max_unavailable.max(unavailable);
    }
}

/// Records every event of the test namespace's pods until dropped.
fn record_pods(env: &TestEnv) -> (Arc<Mutex<Record>>, tokio::task::JoinHandle<()>) {
    let record = Arc::new(Mutex::new(Record::default()));
    let sink = record.clone();
    let stream = watcher(env.api::<Pod>(), watcher::Config::default());
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            let mut r = lock(&sink);
            match event {
                watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                    r.observe(&pod, false);
                }
                watcher::Event::Delete(pod) => r.observe(&pod, true),
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
    });
    (record, task)
}

fn set(env: &TestEnv) -> DaemonSet {
    set_with(
        env,
        json!({
            "maxUnavailable": 1,
            "partition": 1,
            "order": {"type": "LabelValues", "label": "zone", "values": ["z-c", "z-a", "z-b"]}
        }),
    )
}

fn lock(record: &Mutex<Record>) -> std::sync::MutexGuard<'_, Record> {
    record
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits until the watcher has seen every pod, then arms the budget check on `nodes`.
async fn arm(record: &Mutex<Record>, nodes: &[String]) {
    eventually("the watcher to see every pod", TIMEOUT, || async {
        let r = lock(record);
        if r.pods.len() == nodes.len() {
            Ok(())
        } else {
            Err(format!("{} pods", r.pods.len()))
        }
    })
    .await;
    lock(record).armed = nodes.to_vec();
}

#[tokio::test]
async fn ordered_partitioned_rollout_keeps_budget_then_pause_holds_and_resume_completes() {
    let env = TestEnv::new("rollout-order").await;
    let nodes = env.add_nodes(5).await;
    // Zones: node 0 z-a, 1 z-b, 2 z-c, 3 z-a, 4 z-b → update order 2, 0, 3, 1, (4 kept).
    let zones = ["z-a", "z-b", "z-c", "z-a", "z-b"];
    for (node, zone) in nodes.iter().zip(zones) {
        env.label_node(node, "zone", Some(zone)).await;
    }
    let expected_order: Vec<String> = [2, 0, 3, 1].iter().map(|&i| nodes[i].clone()).collect();
    let kept = nodes[4].clone();

    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    sets.create(&PostParams::default(), &set(&env))
        .await
        .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let first = wait_for_set(&env, "the first revision to be stable", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.stable_revision.is_some() && st.stable_revision == st.update_revision
        })
    })
    .await;
    assert_eq!(
        condition(&first, "Progressing"),
        Some(("True".into(), "RolloutComplete".into()))
    );

    let (record, watch) = record_pods(&env);
    arm(&record, &nodes).await;

    patch_set(&sets, new_image("agent:v2"), "new image").await;
    let held = wait_for_set(&env, "the rollout to stop at the partition", |s| {
        condition(s, "Progressing").is_some_and(|(_, reason)| reason == "RolloutHeld")
    })
    .await;
    let status = held.status.clone().unwrap_or_default();
    let per: Vec<(i32, i32)> = status
        .pods_per_revision
        .unwrap_or_default()
        .iter()
        .map(|r| (r.pods, r.available))
        .collect();
    assert_eq!(per, [(4, 4), (1, 1)], "newest revision first");
    assert_eq!(
        status.stable_revision,
        first.status.and_then(|s| s.stable_revision)
    );
    {
        let r = lock(&record);
        assert_eq!(
            r.replaced, expected_order,
            "update order by zone, then name"
        );
        assert_eq!(
            r.max_unavailable, 1,
            "maxUnavailable 1 held at every pod event"
        );
    }
    let on_kept: Vec<String> = set_pods(&env, "agent")
        .await
        .iter()
        .filter(|p| pinned_node(p).as_deref() == Some(kept.as_str()))
        .filter_map(image_of)
        .collect();
    assert_eq!(
        on_kept,
        ["agent:v1"],
        "partition keeps the last node in order"
    );

    // Paused with the partition lifted: nothing moves.
    patch_set(
        &sets,
        json!({"spec": {"paused": true, "updateStrategy": {"rollingUpdate": {"partition": 0}}}}),
        "pause",
    )
    .await;
    wait_for_set(&env, "RolloutPaused=True", |s| {
        condition(s, "RolloutPaused") == Some(("True".into(), "Paused".into()))
    })
    .await;
    let before = lock(&record).replaced.len();
    consistently(
        "no pod replaced while paused",
        Duration::from_secs(3),
        || async {
            let r = lock(&record);
            if r.replaced.len() == before {
                Ok(())
            } else {
                Err(format!("replaced {:?}", r.replaced))
            }
        },
    )
    .await;

    // Resumed: the last node follows and the new revision becomes stable.
    patch_set(&sets, json!({"spec": {"paused": null}}), "resume").await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v2").await;
    let done = wait_for_set(&env, "the rollout to complete", |s| {
        condition(s, "Progressing") == Some(("True".into(), "RolloutComplete".into()))
    })
    .await;
    let status = done.status.unwrap_or_default();
    assert_eq!(status.stable_revision, status.update_revision);
    assert_eq!(
        condition(&sets.get("agent").await.expect("get"), "RolloutPaused"),
        Some(("False".into(), "Resumed".into()))
    );
    let r = lock(&record);
    let mut all = expected_order.clone();
    all.push(kept);
    assert_eq!(r.replaced, all);
    assert_eq!(r.max_unavailable, 1);
    drop(r);
    watch.abort();
}

#[tokio::test]
async fn topology_waves_go_zone_by_zone_with_bake_time_and_pacing() {
    let env = TestEnv::new("rollout-waves").await;
    let nodes = env.add_nodes(6).await;
    let zones = ["z-a", "z-b", "z-c", "z-a", "z-b", "z-c"];
    for (node, zone) in nodes.iter().zip(zones) {
        env.label_node(node, "zone", Some(zone)).await;
    }
    let zone_of = |node: &str| {
        nodes
            .iter()
            .position(|n| n == node)
            .map_or("?", |i| zones[i])
    };
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    let spec = set_with(
        &env,
        json!({
            "maxUnavailable": 2,
            "topologyKey": "zone",
            "bakeSeconds": 4,
            "minSecondsBetweenBatches": 2
        }),
    );
    sets.create(&PostParams::default(), &spec)
        .await
        .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;

    let (record, watch) = record_pods(&env);
    arm(&record, &nodes).await;
    patch_set(&sets, new_image("agent:v2"), "new image").await;
    let waving = wait_for_set(&env, "status.wave to name the first zone", |s| {
        s.status
            .as_ref()
            .and_then(|st| st.wave.as_ref())
            .is_some_and(|w| w.domain == "z-a" && w.index == 1 && w.domains == 3)
    })
    .await;
    assert!(waving.status.is_some());
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v2").await;
    wait_for_set(&env, "the rollout to complete", |s| {
        condition(s, "Progressing") == Some(("True".into(), "RolloutComplete".into()))
            && s.status.as_ref().is_some_and(|st| st.wave.is_none())
    })
    .await;

    let r = lock(&record);
    let replaced_zones: Vec<&str> = r.replaced.iter().map(|n| zone_of(n)).collect();
    assert_eq!(
        replaced_zones,
        ["z-a", "z-a", "z-b", "z-b", "z-c", "z-c"],
        "one zone at a time, in order: {:?}",
        r.replaced
    );
    assert!(
        r.max_unavailable <= 2,
        "maxUnavailable 2 held at every pod event"
    );
    // Zone b starts only after zone a was available for the bake time (4 s), and so on. The
    // bake counts from the pods' Ready transition times, which have whole-second precision.
    for next_zone in [2, 4] {
        let gap = r.replaced_at[next_zone].duration_since(r.replaced_at[next_zone - 1]);
        assert!(
            gap >= Duration::from_secs(3),
            "next zone started {gap:?} after the previous one"
        );
    }
    // Batches never start closer than 2 s (two starts at the same moment are one batch).
    for pair in r.replaced_at.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap < Duration::from_millis(500) || gap >= Duration::from_millis(1900),
            "batches {gap:?} apart"
        );
    }
    drop(r);
    watch.abort();
}

#[tokio::test]
async fn in_place_update_keeps_the_pods_and_a_non_image_change_recreates_them() {
    let env = TestEnv::new("rollout-inplace").await;
    let nodes = env.add_nodes(3).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    let spec = set_with(
        &env,
        json!({"maxUnavailable": 1, "rollingUpdateType": "InPlaceIfPossible"}),
    );
    sets.create(&PostParams::default(), &spec)
        .await
        .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let uids = |pods: &[Pod]| {
        let mut uids: Vec<String> = pods.iter().filter_map(|p| p.uid()).collect();
        uids.sort();
        uids
    };
    let before = uids(&set_pods(&env, "agent").await);

    patch_set(&sets, new_image("agent:v2"), "new image").await;
    wait_for_set(&env, "the in-place rollout to complete", |s| {
        condition(s, "Progressing") == Some(("True".into(), "RolloutComplete".into()))
            && s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
    })
    .await;
    let pods = set_pods(&env, "agent").await;
    assert_eq!(
        uids(&pods),
        before,
        "the same pods (UIDs) after an image change"
    );
    for pod in &pods {
        assert_eq!(image_of(pod).as_deref(), Some("agent:v2"));
        let reported: Vec<String> = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.image)
            .collect();
        assert_eq!(
            reported,
            ["agent:v2"],
            "containers restarted on the new image"
        );
        assert!(
            pod.annotations()
                .contains_key(everynode_api::labels::IN_PLACE_UPDATE_ANNOTATION),
            "updated in place: {:?}",
            pod.annotations()
        );
    }

    // Anything but the image: recreated.
    patch_set(
        &sets,
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "agent", "image": "agent:v2", "env": [{"name": "MODE", "value": "fast"}]}
        ]}}}}),
        "new env",
    )
    .await;
    eventually("every pod to be replaced", TIMEOUT, || async {
        let pods = set_pods(&env, "agent").await;
        let now = uids(&pods);
        let ready = pods.iter().filter(|p| pods::is_ready(p)).count();
        if now.len() == nodes.len()
            && ready == nodes.len()
            && now.iter().all(|u| !before.contains(u))
        {
            Ok(())
        } else {
            Err(format!(
                "{} pods, {ready} ready, {} kept",
                now.len(),
                now.iter().filter(|u| before.contains(u)).count()
            ))
        }
    })
    .await;
}

#[tokio::test]
async fn canary_nodes_both_budgets_stable_joining_nodes_and_freeze() {
    let env = TestEnv::new("rollout-canary").await;
    let nodes = env.add_nodes(4).await;
    for canary in [&nodes[1], &nodes[2]] {
        env.label_node(canary, "canary", Some("yes")).await;
    }
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    let spec = set_with(
        &env,
        json!({
            "maxUnavailable": 1,
            "maxSurge": 1,
            "selector": {"matchLabels": {"canary": "yes"}},
            "newNodePolicy": "Stable"
        }),
    );
    sets.create(&PostParams::default(), &spec)
        .await
        .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    wait_for_set(&env, "the first revision to be stable", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.stable_revision.is_some() && st.stable_revision == st.update_revision
        })
    })
    .await;

    let (record, watch) = record_pods(&env);
    arm(&record, &nodes).await;
    patch_set(&sets, new_image("agent:v2"), "new image").await;
    wait_for_set(&env, "the canaries to be done", |s| {
        condition(s, "Progressing").is_some_and(|(_, reason)| reason == "RolloutHeld")
    })
    .await;
    let image_on = |pods: &[Pod], node: &str| -> Vec<String> {
        pods.iter()
            .filter(|p| pinned_node(p).as_deref() == Some(node))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(image_of)
            .collect()
    };
    let pods = set_pods(&env, "agent").await;
    for (i, node) in nodes.iter().enumerate() {
        let expected = if i == 1 || i == 2 {
            "agent:v2"
        } else {
            "agent:v1"
        };
        assert_eq!(image_on(&pods, node), [expected], "{node}");
    }
    {
        let r = lock(&record);
        let mut replaced = r.replaced.clone();
        replaced.sort();
        assert_eq!(
            replaced,
            [nodes[1].clone(), nodes[2].clone()],
            "only canaries"
        );
        assert!(
            r.max_unavailable <= 1,
            "maxUnavailable 1 held at every pod event"
        );
    }

    // A node that joins while the rollout is held gets the stable revision.
    let joined = env.add_nodes(1).await;
    let mut all = nodes.clone();
    all.extend(joined.clone());
    eventually(
        "the joining node to run the stable revision",
        TIMEOUT,
        || async {
            let pods = set_pods(&env, "agent").await;
            let images = image_on(&pods, &joined[0]);
            let ready = pods.iter().any(|p| {
                pinned_node(p).as_deref() == Some(joined[0].as_str()) && pods::is_ready(p)
            });
            if images == ["agent:v1"] && ready {
                Ok(())
            } else {
                Err(format!("{images:?}, ready {ready}"))
            }
        },
    )
    .await;

    // Frozen: a second joining node gets nothing.
    patch_set(&sets, json!({"spec": {"frozen": true}}), "freeze").await;
    wait_for_set(&env, "RolloutFrozen=True", |s| {
        condition(s, "RolloutFrozen") == Some(("True".into(), "Frozen".into()))
    })
    .await;
    let late = env.add_nodes(1).await;
    consistently(
        "no pod on a node that joins a frozen set",
        Duration::from_secs(4),
        || async {
            let pods = set_pods(&env, "agent").await;
            let on_late = image_on(&pods, &late[0]);
            if on_late.is_empty() {
                Ok(())
            } else {
                Err(format!("{on_late:?}"))
            }
        },
    )
    .await;
    watch.abort();
}
