//! The controller against the real local control plane: each test gets its own namespace and
//! node group, and runs its own controller scoped to its namespace. Sets select the test's nodes
//! through `nodeSelector`, so tests run in parallel without seeing each other's nodes as theirs.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use common::*;
use everynode_api::{DaemonSet, DaemonSetSpec};
use everynode_runtime::Target;
use everynode_testkit::{TestEnv, consistently, eventually, pods};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// A set running `image` on the test's node group.
fn daemon_set(env: &TestEnv, name: &str, image: &str) -> DaemonSet {
    let app = labels(&[("app", name)]);
    let mut set = DaemonSet::new(
        name,
        DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(app.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(app),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    node_selector: Some(env.group_selector()),
                    containers: vec![Container {
                        name: "daemon".into(),
                        image: Some(image.into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
    );
    set.metadata.namespace = Some(env.namespace().to_owned());
    set
}

async fn wait_status(env: &TestEnv, name: &str, expected: [i32; 6]) -> DaemonSet {
    let sets = env.api::<DaemonSet>();
    let what = format!(
        "status of {name} to be desired/current/ready/updated/available/misscheduled = {expected:?}"
    );
    eventually(&what, TIMEOUT, || async {
        let set = sets.get(name).await.map_err(|e| e.to_string())?;
        let s = set.status.clone().unwrap_or_default();
        let got = [
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready,
            s.updated_number_scheduled.unwrap_or_default(),
            s.number_available.unwrap_or_default(),
            s.number_misscheduled,
        ];
        let observed = s.observed_generation >= set.metadata.generation;
        if got == expected && observed {
            Ok(set)
        } else {
            Err(format!("{got:?}, observed: {observed}"))
        }
    })
    .await
}

#[tokio::test]
async fn one_ready_pod_per_node_pinned_by_affinity_with_correct_status() {
    let env = TestEnv::new("ctl-launch").await;
    let nodes = env.add_nodes(3).await;
    let controller = start_controller(&env, Target::Everynode).await;
    wait_until_ready(&controller).await;
    let set = env
        .api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &daemon_set(&env, "agent", "agent:v1"),
        )
        .await
        .expect("create set");

    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    for pod in set_pods(&env, "agent").await {
        // created unbound, pinned by required node affinity, bound by the real scheduler
        assert_eq!(
            pinned_node(&pod),
            pod.spec.as_ref().and_then(|s| s.node_name.clone())
        );
        let owners = pod.owner_references();
        assert_eq!(owners.len(), 1, "{owners:?}");
        assert_eq!(owners[0].kind, "DaemonSet");
        assert_eq!(owners[0].uid, set.uid().unwrap_or_default());
        assert_eq!(owners[0].controller, Some(true));
        assert!(pod.labels().contains_key("controller-revision-hash"));
        assert!(pods::is_ready(&pod));
    }
    let set = wait_status(&env, "agent", [3, 3, 3, 3, 3, 0]).await;
    let status = set.status.unwrap_or_default();
    assert_eq!(status.number_unavailable.unwrap_or_default(), 0);
    assert_eq!(status.observed_generation, Some(1));

    // One Event for the reconcile's creates, naming the pods (sorted), not one per pod.
    let mut names: Vec<String> = set_pods(&env, "agent")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    names.sort_unstable();
    let expected = vec![format!("Created 3 pods: {}", names.join(", "))];
    eventually("one SuccessfulCreate event for 3 pods", TIMEOUT, || async {
        let notes = event_notes(&env, "agent", "SuccessfulCreate").await;
        if notes == expected {
            Ok(())
        } else {
            Err(format!("{notes:?}"))
        }
    })
    .await;

    let revisions = env
        .api::<ControllerRevision>()
        .list(&ListParams::default())
        .await
        .expect("list");
    assert_eq!(revisions.items.len(), 1, "one ControllerRevision");
    assert_eq!(revisions.items[0].revision, 1);
}

#[tokio::test]
async fn nodes_joining_and_leaving_gain_and_lose_their_pod() {
    let env = TestEnv::new("ctl-churn").await;
    let mut nodes = env.add_nodes(2).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    env.api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &daemon_set(&env, "agent", "agent:v1"),
        )
        .await
        .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;

    let joined = env.add_nodes(1).await;
    nodes.extend(joined);
    nodes.sort();
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    wait_status(&env, "agent", [3, 3, 3, 3, 3, 0]).await;

    let leaving = nodes.remove(0);
    env.remove_node(&leaving).await;
    eventually(
        "the departed node's pod to be gone",
        POD_GC_TIMEOUT,
        || async {
            let on_departed = set_pods(&env, "agent")
                .await
                .iter()
                .filter(|p| pinned_node(p).as_deref() == Some(leaving.as_str()))
                .count();
            if on_departed == 0 {
                Ok(())
            } else {
                Err(format!("{on_departed} pods left"))
            }
        },
    )
    .await;
    wait_status(&env, "agent", [2, 2, 2, 2, 2, 0]).await;
}

#[tokio::test]
async fn labelling_and_tainting_nodes_adds_and_removes_pods() {
    let env = TestEnv::new("ctl-placement").await;
    let nodes = env.add_nodes(3).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let mut set = daemon_set(&env, "storage", "glusterd:v1");
    if let Some(spec) = set.spec.template.spec.as_mut() {
        spec.node_selector
            .get_or_insert_default()
            .insert("storage".into(), "yes".into());
    }
    env.api::<DaemonSet>()
        .create(&PostParams::default(), &set)
        .await
        .expect("create set");
    env.label_node(&nodes[0], "storage", Some("yes")).await;
    env.label_node(&nodes[1], "storage", Some("yes")).await;
    wait_one_ready_pod_per_node(&env, "storage", &nodes[..2], "glusterd:v1").await;
    wait_status(&env, "storage", [2, 2, 2, 2, 2, 0]).await;

    // unlabelling removes the pod; labelling another node adds one
    env.label_node(&nodes[0], "storage", None).await;
    env.label_node(&nodes[2], "storage", Some("yes")).await;
    wait_one_ready_pod_per_node(&env, "storage", &nodes[1..], "glusterd:v1").await;

    // an untolerated NoExecute taint: the controller itself removes the pod
    env.taint_node(&nodes[2], "dedicated", Some("db"), "NoExecute")
        .await;
    wait_one_ready_pod_per_node(&env, "storage", &nodes[1..2], "glusterd:v1").await;
    wait_status(&env, "storage", [1, 1, 1, 1, 1, 0]).await;

    // NoSchedule: a pod already running stays; a node that gains the label gets no pod until
    // the taint is removed.
    env.taint_node(&nodes[1], "dedicated", Some("db"), "NoSchedule")
        .await;
    env.taint_node(&nodes[0], "dedicated", Some("db"), "NoSchedule")
        .await;
    env.label_node(&nodes[0], "storage", Some("yes")).await;
    consistently(
        "the NoSchedule-tainted node to get no pod, the running one to stay",
        Duration::from_secs(4),
        || async {
            let placed: Vec<String> = set_pods(&env, "storage")
                .await
                .iter()
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .collect();
            if placed == [nodes[1].clone()] {
                Ok(())
            } else {
                Err(format!("pods on {placed:?}"))
            }
        },
    )
    .await;
    env.untaint_node(&nodes[0], "dedicated").await;
    wait_one_ready_pod_per_node(&env, "storage", &nodes[..2], "glusterd:v1").await;
    // As upstream counts it: the NoSchedule-tainted node should not run the pod (desired 1) but
    // keeps it (misscheduled 1).
    wait_status(&env, "storage", [1, 1, 1, 1, 1, 1]).await;
}

#[tokio::test]
async fn rolling_update_replaces_every_pod_and_deleting_the_set_removes_everything() {
    let env = TestEnv::new("ctl-rollout").await;
    let nodes = env.add_nodes(3).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    sets.create(
        &PostParams::default(),
        &daemon_set(&env, "agent", "agent:v1"),
    )
    .await
    .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;

    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "daemon", "image": "agent:v2"}
    ]}}}});
    sets.patch("agent", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("update image");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v2").await;
    let set = wait_status(&env, "agent", [3, 3, 3, 3, 3, 0]).await;
    assert_eq!(set.status.and_then(|s| s.observed_generation), Some(2));
    let revisions = env
        .api::<ControllerRevision>()
        .list(&ListParams::default())
        .await
        .expect("list");
    let mut numbers: Vec<i64> = revisions.items.iter().map(|r| r.revision).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![1, 2]);

    sets.delete("agent", &DeleteParams::foreground())
        .await
        .expect("delete set");
    eventually(
        "pods and revisions of the deleted set to be gone",
        TIMEOUT,
        || async {
            let pods = set_pods(&env, "agent").await.len();
            let revs = env
                .api::<ControllerRevision>()
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            let set_gone = sets
                .get_opt("agent")
                .await
                .map_err(|e| e.to_string())?
                .is_none();
            if pods == 0 && revs == 0 && set_gone {
                Ok(())
            } else {
                Err(format!(
                    "{pods} pods, {revs} revisions, set gone: {set_gone}"
                ))
            }
        },
    )
    .await;
}

/// Writes a set's status through the status subresource.
async fn write_status(
    sets: &Api<DaemonSet>,
    name: &str,
    status: serde_json::Value,
) -> Result<(), kube::Error> {
    let body = serde_json::json!({ "status": status });
    sets.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn invalid_manifests_are_rejected_by_the_real_apiserver_naming_the_field() {
    let env = TestEnv::new("ctl-invalid").await;
    everynode_testkit::install_crd(&env.client()).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let mut files: Vec<_> = std::fs::read_dir(root.join("invalid"))
        .expect("testdata/invalid")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 20);
    let sets = env.api::<DaemonSet>();
    let load = |path: &std::path::Path| -> (String, serde_json::Value) {
        let text = std::fs::read_to_string(path).expect("read");
        let mut value: serde_json::Value = serde_yaml_ng::from_str(&text).expect("yaml");
        value["metadata"]["namespace"] = env.namespace().into();
        (text, value)
    };
    for path in files {
        let (text, mut value) = load(&path);
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .expect("expect header")
            .to_owned();
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let _ = sets.delete(&name, &DeleteParams::default()).await;
        let _ = sets.delete("node-exporter", &DeleteParams::default()).await;
        eventually("earlier object gone", TIMEOUT, || async {
            let a = sets.get_opt(&name).await.map_err(|e| e.to_string())?;
            let b = sets
                .get_opt("node-exporter")
                .await
                .map_err(|e| e.to_string())?;
            if a.is_none() && b.is_none() {
                Ok(())
            } else {
                Err("still there".into())
            }
        })
        .await;
        let status = value.as_object_mut().and_then(|o| o.remove("status"));
        let old = text
            .lines()
            .find_map(|l| l.strip_prefix("# old: "))
            .map(|old| load(&root.join(old)).1);
        let result = if let Some(mut old) = old {
            let old_status = old.as_object_mut().and_then(|o| o.remove("status"));
            let created: DaemonSet = serde_json::from_value(old).expect("old decodes");
            let created = sets
                .create(&PostParams::default(), &created)
                .await
                .expect("create old");
            if let Some(old_status) = old_status {
                write_status(&sets, &created.name_any(), old_status)
                    .await
                    .expect("old status");
            }
            match status {
                Some(status) => write_status(&sets, &created.name_any(), status).await,
                None => sets
                    .patch(
                        &created.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&value),
                    )
                    .await
                    .map(|_| ()),
            }
        } else if let Some(status) = status {
            let created: DaemonSet = serde_json::from_value(value).expect("decodes");
            let created = sets
                .create(&PostParams::default(), &created)
                .await
                .expect("create");
            write_status(&sets, &created.name_any(), status).await
        } else {
            let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
                env.client(),
                env.namespace(),
                &kube::api::ApiResource::erase::<DaemonSet>(&()),
            );
            let object: kube::api::DynamicObject = serde_json::from_value(value).expect("dynamic");
            raw.create(&PostParams::default(), &object)
                .await
                .map(|_| ())
        };
        let err = match result {
            Ok(()) => panic!("{} was accepted by the apiserver", path.display()),
            Err(err) => err.to_string(),
        };
        assert!(
            err.contains(&expect),
            "{}: expected {expect:?} in {err}",
            path.display()
        );
    }
}

/// The single live pod of the set, once exactly one exists and it is Ready.
async fn single_ready_pod(env: &TestEnv, set: &str, what: &str) -> Pod {
    eventually(what, TIMEOUT, || async {
        let live: Vec<Pod> = set_pods(env, set)
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        match live.as_slice() {
            [pod] if pods::is_ready(pod) => Ok(pod.clone()),
            other => Err(format!("{} live pods", other.len())),
        }
    })
    .await
}

#[tokio::test]
async fn failed_and_succeeded_pods_are_replaced() {
    let env = TestEnv::new("ctl-terminal").await;
    env.add_nodes(1).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    env.api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &daemon_set(&env, "agent", "agent:v1"),
        )
        .await
        .expect("create set");
    let first = single_ready_pod(&env, "agent", "the first pod").await;

    env.mark_pod_failed(&first.name_any()).await;
    let second = eventually("a replacement for the failed pod", TIMEOUT, || async {
        let pod = single_ready_pod(&env, "agent", "a ready pod").await;
        if pod.uid() == first.uid() {
            Err("still the failed pod".to_owned())
        } else {
            Ok(pod)
        }
    })
    .await;

    env.mark_pod_succeeded(&second.name_any()).await;
    eventually("a replacement for the succeeded pod", TIMEOUT, || async {
        let pod = single_ready_pod(&env, "agent", "a ready pod").await;
        if pod.uid() == second.uid() {
            Err("still the succeeded pod".to_owned())
        } else {
            Ok(())
        }
    })
    .await;
    wait_status(&env, "agent", [1, 1, 1, 1, 1, 0]).await;
}

#[tokio::test]
async fn surge_rollout_completes_and_on_delete_waits_for_deletions() {
    let env = TestEnv::new("ctl-strategies").await;
    let nodes = env.add_nodes(3).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();

    let mut surge = daemon_set(&env, "surge", "agent:v1");
    surge.spec.update_strategy = Some(everynode_api::DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(everynode_api::RollingUpdateDaemonSet {
            max_unavailable: Some(
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0),
            ),
            max_surge: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)),
            ..Default::default()
        }),
    });
    let mut on_delete = daemon_set(&env, "ondelete", "agent:v1");
    on_delete.spec.update_strategy = Some(everynode_api::DaemonSetUpdateStrategy {
        type_: Some("OnDelete".into()),
        rolling_update: None,
    });
    sets.create(&PostParams::default(), &surge)
        .await
        .expect("create surge set");
    sets.create(&PostParams::default(), &on_delete)
        .await
        .expect("create OnDelete set");
    wait_one_ready_pod_per_node(&env, "surge", &nodes, "agent:v1").await;
    wait_one_ready_pod_per_node(&env, "ondelete", &nodes, "agent:v1").await;

    let v2 = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "daemon", "image": "agent:v2"}
    ]}}}});
    for name in ["surge", "ondelete"] {
        sets.patch(name, &PatchParams::default(), &Patch::Merge(&v2))
            .await
            .expect("update image");
    }
    wait_one_ready_pod_per_node(&env, "surge", &nodes, "agent:v2").await;
    wait_status(&env, "surge", [3, 3, 3, 3, 3, 0]).await;

    // OnDelete: nothing is replaced until a pod is deleted; the replacement runs the new template
    wait_status(&env, "ondelete", [3, 3, 3, 0, 3, 0]).await;
    let victim = set_pods(&env, "ondelete")
        .await
        .into_iter()
        .find(|p| pinned_node(p).as_deref() == Some(nodes[0].as_str()))
        .expect("a pod on the first node");
    env.api::<Pod>()
        .delete(&victim.name_any(), &DeleteParams::default())
        .await
        .expect("delete pod");
    eventually("the deleted pod to come back on v2", TIMEOUT, || async {
        let images: Vec<(Option<String>, Option<String>)> = set_pods(&env, "ondelete")
            .await
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pods::is_ready(p))
            .map(|p| (pinned_node(p), image_of(p)))
            .collect();
        let v2_on_first = images.iter().any(|(n, i)| {
            n.as_deref() == Some(nodes[0].as_str()) && i.as_deref() == Some("agent:v2")
        });
        let v1_elsewhere = images
            .iter()
            .filter(|(_, i)| i.as_deref() == Some("agent:v1"))
            .count()
            == 2;
        if v2_on_first && v1_elsewhere && images.len() == 3 {
            Ok(())
        } else {
            Err(format!("{images:?}"))
        }
    })
    .await;
    wait_status(&env, "ondelete", [3, 3, 3, 1, 3, 0]).await;
}

#[tokio::test]
async fn cordoned_not_ready_and_unreachable_nodes_keep_their_pods() {
    let env = TestEnv::new("ctl-node-states").await;
    let nodes = env.add_nodes(3).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    env.api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &daemon_set(&env, "agent", "agent:v1"),
        )
        .await
        .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let before: Vec<String> = set_pods(&env, "agent")
        .await
        .iter()
        .filter_map(|p| p.uid())
        .collect();

    // daemon pods tolerate these automatically
    env.cordon(&nodes[0]).await;
    env.taint_node(&nodes[1], "node.kubernetes.io/not-ready", None, "NoExecute")
        .await;
    env.taint_node(
        &nodes[2],
        "node.kubernetes.io/unreachable",
        None,
        "NoExecute",
    )
    .await;
    wait_status(&env, "agent", [3, 3, 3, 3, 3, 0]).await;
    everynode_testkit::consistently("every pod to stay", Duration::from_secs(5), || async {
        let now: Vec<String> = set_pods(&env, "agent")
            .await
            .iter()
            .filter_map(|p| p.uid())
            .collect();
        if now == before {
            Ok(())
        } else {
            Err(format!("pods changed: {now:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn rolling_back_replaces_only_the_pods_that_differ() {
    let env = TestEnv::new("ctl-rollback").await;
    let nodes = env.add_nodes(3).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    let mut set = daemon_set(&env, "agent", "agent:v1");
    set.spec.update_strategy = Some(everynode_api::DaemonSetUpdateStrategy {
        type_: Some("OnDelete".into()),
        rolling_update: None,
    });
    sets.create(&PostParams::default(), &set)
        .await
        .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;

    // v2 reaches one node only (OnDelete, one pod deleted)
    let v2 = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "daemon", "image": "agent:v2"}
    ]}}}});
    sets.patch("agent", &PatchParams::default(), &Patch::Merge(&v2))
        .await
        .expect("v2");
    wait_status(&env, "agent", [3, 3, 3, 0, 3, 0]).await;
    let first = set_pods(&env, "agent")
        .await
        .into_iter()
        .find(|p| pinned_node(p).as_deref() == Some(nodes[0].as_str()))
        .expect("pod on the first node");
    env.api::<Pod>()
        .delete(&first.name_any(), &DeleteParams::default())
        .await
        .expect("delete");
    wait_status(&env, "agent", [3, 3, 3, 1, 3, 0]).await;
    let v1_pods: BTreeMap<String, String> = set_pods(&env, "agent")
        .await
        .iter()
        .filter(|p| image_of(p).as_deref() == Some("agent:v1"))
        .filter_map(|p| Some((p.name_any(), p.uid()?)))
        .collect();
    assert_eq!(v1_pods.len(), 2);

    // roll back to v1 with a rolling update: the two v1 pods are current again and stay
    let back = serde_json::json!({"spec": {
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
        "template": {"spec": {"containers": [{"name": "daemon", "image": "agent:v1"}]}}
    }});
    sets.patch("agent", &PatchParams::default(), &Patch::Merge(&back))
        .await
        .expect("rollback");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    wait_status(&env, "agent", [3, 3, 3, 3, 3, 0]).await;
    let after: BTreeMap<String, String> = set_pods(&env, "agent")
        .await
        .iter()
        .filter_map(|p| Some((p.name_any(), p.uid()?)))
        .collect();
    for (name, uid) in &v1_pods {
        assert_eq!(after.get(name), Some(uid), "v1 pod {name} was replaced");
    }
    // the v1 revision was reused and renumbered, not recreated
    let mut numbers: Vec<i64> = env
        .api::<ControllerRevision>()
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|r| r.revision)
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![2, 3]);
}

#[tokio::test]
async fn services_reach_the_daemon_pods() {
    use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
    let env = TestEnv::new("ctl-services").await;
    let nodes = env.add_nodes(3).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    env.api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &daemon_set(&env, "agent", "agent:v1"),
        )
        .await
        .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;

    let service = |name: &str, headless: bool, local: bool| Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(labels(&[("app", "agent")])),
            cluster_ip: headless.then(|| "None".to_owned()),
            internal_traffic_policy: local.then(|| "Local".to_owned()),
            ports: Some(vec![ServicePort {
                port: 9100,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let services = env.api::<Service>();
    for (name, headless, local) in [
        ("any", false, false),
        ("dns", true, false),
        ("local", false, true),
    ] {
        services
            .create(&PostParams::default(), &service(name, headless, local))
            .await
            .unwrap_or_else(|e| panic!("service {name}: {e}"));
    }
    for name in ["any", "dns", "local"] {
        eventually(
            &format!("service {name} to list every daemon pod"),
            TIMEOUT,
            || async {
                let ready_nodes = service_ready_nodes(&env, name).await?;
                if ready_nodes == nodes {
                    Ok(())
                } else {
                    Err(format!("{ready_nodes:?}"))
                }
            },
        )
        .await;
    }
}

#[tokio::test]
async fn status_follows_the_cluster_when_pod_creation_fails() {
    use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let env = TestEnv::new("ctl-quota").await;
    let nodes = env.add_nodes(5).await;
    // Like upstream's TestUpdateStatusDespitePodCreationFailure: admission refuses pods beyond 2.
    let quotas = env.api::<ResourceQuota>();
    let quota = ResourceQuota {
        metadata: ObjectMeta {
            name: Some("two-pods".into()),
            ..Default::default()
        },
        spec: Some(ResourceQuotaSpec {
            hard: Some([("pods".to_owned(), Quantity("2".into()))].into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("quota");
    eventually("the quota to be tracked", TIMEOUT, || async {
        let q = quotas.get("two-pods").await.map_err(|e| e.to_string())?;
        if q.status.and_then(|s| s.hard).is_some() {
            Ok(())
        } else {
            Err("no status yet".into())
        }
    })
    .await;

    let _controller = start_controller(&env, Target::Everynode).await;
    env.api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &daemon_set(&env, "agent", "agent:v1"),
        )
        .await
        .expect("create set");
    wait_status(&env, "agent", [5, 2, 2, 2, 2, 0]).await;
    assert_eq!(set_pods(&env, "agent").await.len(), 2);
    assert_eq!(nodes.len(), 5);
}

#[tokio::test]
async fn an_image_that_never_becomes_ready_stops_the_rollout_at_the_budget() {
    let env = TestEnv::new("ctl-never-ready").await;
    let nodes = env.add_nodes(4).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    sets.create(
        &PostParams::default(),
        &daemon_set(&env, "agent", "agent:v1"),
    )
    .await
    .expect("create set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;

    // v2 runs but never passes its readiness probe (KWOK's never-ready stage).
    let broken = json!({"spec": {"template": {
        "metadata": {"labels": {everynode_testkit::SIMULATE_LABEL: everynode_testkit::NEVER_READY}},
        "spec": {"containers": [{"name": "daemon", "image": "agent:v2"}]}
    }}});
    sets.patch("agent", &PatchParams::default(), &Patch::Merge(&broken))
        .await
        .expect("update to the broken image");

    // maxUnavailable 1: one node gets the broken pod, and there the rollout stops.
    let census = || async {
        let live: Vec<Pod> = set_pods(&env, "agent")
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let v2 = live
            .iter()
            .filter(|p| image_of(p).as_deref() == Some("agent:v2"))
            .count();
        let ready_nodes: std::collections::BTreeSet<String> = live
            .iter()
            .filter(|p| pods::is_ready(p))
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (v2, nodes.len() - ready_nodes.len())
    };
    eventually("one broken v2 pod", TIMEOUT, || async {
        match census().await {
            (1, 1) => Ok(()),
            other => Err(format!("(v2 pods, nodes without a Ready pod) = {other:?}")),
        }
    })
    .await;
    consistently(
        "the rollout to stay stopped at one unavailable node",
        Duration::from_secs(10),
        || async {
            match census().await {
                (v2, unavailable) if v2 <= 1 && unavailable <= 1 => Ok(()),
                other => Err(format!("(v2 pods, nodes without a Ready pod) = {other:?}")),
            }
        },
    )
    .await;
    wait_status(&env, "agent", [4, 4, 3, 1, 3, 0]).await;

    // Rolling back to v1 replaces the broken pod and completes.
    let fixed = json!({"spec": {"template": {
        "metadata": {"labels": {everynode_testkit::SIMULATE_LABEL: null}},
        "spec": {"containers": [{"name": "daemon", "image": "agent:v1"}]}
    }}});
    sets.patch("agent", &PatchParams::default(), &Patch::Merge(&fixed))
        .await
        .expect("roll back");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    wait_status(&env, "agent", [4, 4, 4, 4, 4, 0]).await;
}

/// Waits until the set's live pods are bound to exactly `nodes` (Ready or not).
async fn wait_pods_bound_to(env: &TestEnv, set: &str, nodes: &[String]) {
    let mut expected = nodes.to_vec();
    expected.sort();
    let what = format!("pods of {set} bound to {expected:?}");
    eventually(&what, TIMEOUT, || async {
        let mut bound: Vec<String> = set_pods(env, set)
            .await
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default()
            })
            .collect();
        bound.sort();
        if bound == expected {
            Ok(())
        } else {
            Err(format!("bound to {bound:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn new_not_ready_and_network_unavailable_nodes_get_the_pods_upstream_gives_them() {
    let env = TestEnv::new("ctl-new-nodes").await;
    let ready = env.add_nodes(1).await;
    // A node whose network plugin is not ready: condition NetworkUnavailable and its taint (the
    // node lifecycle controller keeps the taint only while the condition holds, so no KWOK
    // kubelet reports this node).
    let no_network = env.add_unmanaged_node().await;
    env.set_node_conditions(
        &no_network,
        &[("Ready", "True"), ("NetworkUnavailable", "True")],
    )
    .await;
    env.taint_node(
        &no_network,
        "node.kubernetes.io/network-unavailable",
        None,
        "NoSchedule",
    )
    .await;
    // A node whose kubelet has not reported yet, with the not-ready NoExecute taint (upstream's
    // TestNotReadyNodeDaemonDoesLaunchPod). (A node reporting Ready=False also gets
    // `not-ready:NoSchedule` from the node lifecycle controller, which daemon pods do not
    // tolerate — upstream neither.)
    let not_ready = env.add_unmanaged_node().await;
    env.taint_node(
        &not_ready,
        "node.kubernetes.io/not-ready",
        None,
        "NoExecute",
    )
    .await;
    let _controller = start_controller(&env, Target::Everynode).await;

    let sets = env.api::<DaemonSet>();
    sets.create(
        &PostParams::default(),
        &daemon_set(&env, "agent", "agent:v1"),
    )
    .await
    .expect("create agent");
    let mut host_network = daemon_set(&env, "net", "net:v1");
    if let Some(spec) = host_network.spec.template.spec.as_mut() {
        spec.host_network = Some(true);
    }
    sets.create(&PostParams::default(), &host_network)
        .await
        .expect("create net");

    // Both sets launch on the NotReady node (the pod is bound there and stays Pending); only
    // the hostNetwork set tolerates network-unavailable.
    let agent_nodes = [ready[0].clone(), not_ready.clone()];
    let net_nodes = [ready[0].clone(), not_ready.clone(), no_network.clone()];
    wait_pods_bound_to(&env, "agent", &agent_nodes).await;
    wait_pods_bound_to(&env, "net", &net_nodes).await;
    wait_status(&env, "agent", [2, 2, 1, 2, 1, 0]).await;
    wait_status(&env, "net", [3, 3, 1, 3, 1, 0]).await;
}

/// The set's condition of `type_`: (status, reason, message).
async fn set_condition(env: &TestEnv, set: &str, type_: &str) -> Option<(String, String, String)> {
    let set = env.api::<DaemonSet>().get(set).await.ok()?;
    set.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason, c.message))
}

/// Notes of the Events on `set` with `reason`.
async fn event_notes(env: &TestEnv, set: &str, reason: &str) -> Vec<String> {
    let events = env
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    events
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(set))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

#[tokio::test]
async fn two_sets_share_nodes_and_a_host_port_conflict_is_reported_on_the_set() {
    let env = TestEnv::new("ctl-host-port").await;
    let nodes = env.add_nodes(2).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = env.api::<DaemonSet>();
    let with_host_port = |name: &str| {
        let mut set = daemon_set(&env, name, "exporter:v1");
        if let Some(spec) = set.spec.template.spec.as_mut() {
            spec.containers[0].ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                container_port: 9100,
                host_port: Some(9100),
                ..Default::default()
            }]);
        }
        set
    };

    // Two sets on the same nodes: a log shipper and an exporter on hostPort 9100.
    sets.create(
        &PostParams::default(),
        &daemon_set(&env, "logs", "shipper:v1"),
    )
    .await
    .expect("create logs");
    sets.create(&PostParams::default(), &with_host_port("exporter-a"))
        .await
        .expect("create exporter-a");
    wait_one_ready_pod_per_node(&env, "logs", &nodes, "shipper:v1").await;
    wait_one_ready_pod_per_node(&env, "exporter-a", &nodes, "exporter:v1").await;

    // A second exporter wants the same host port: its pods are created and stay Pending, and
    // the set says why.
    sets.create(&PostParams::default(), &with_host_port("exporter-b"))
        .await
        .expect("create exporter-b");
    wait_status(&env, "exporter-b", [2, 2, 0, 2, 0, 0]).await;
    eventually(
        "exporter-b's status and events to name the port conflict",
        TIMEOUT,
        || async {
            let condition = set_condition(&env, "exporter-b", "PodsScheduled").await;
            let notes = event_notes(&env, "exporter-b", "FailedPlacement").await;
            match &condition {
                Some((status, reason, message))
                    if status == "False"
                        && reason == "Unschedulable"
                        && message.contains("free ports")
                        && notes.iter().any(|n| n.contains("free ports")) =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "condition {condition:?}, FailedPlacement events {notes:?}"
                )),
            }
        },
    )
    .await;
    wait_status(&env, "exporter-a", [2, 2, 2, 2, 2, 0]).await;

    // The first exporter goes: the port is free, the second one's pods run.
    sets.delete("exporter-a", &DeleteParams::default())
        .await
        .expect("delete exporter-a");
    wait_one_ready_pod_per_node(&env, "exporter-b", &nodes, "exporter:v1").await;
    wait_status(&env, "exporter-b", [2, 2, 2, 2, 2, 0]).await;
    eventually("the condition to clear", TIMEOUT, || async {
        match set_condition(&env, "exporter-b", "PodsScheduled").await {
            Some((status, ..)) if status == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}
