//! `--target apps/v1`: the same engine on the built-in DaemonSets, against the real local control
//! plane (whose kube-controller-manager runs without its DaemonSet controller), and a takeover of
//! sets the built-in controller made, on a private cluster that starts with it on.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use everynode_runtime::Target;
use everynode_testkit::{LocalCluster, TestEnv, consistently, eventually};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::json;

/// A built-in set running `image` on the test's node group, one node at a time.
fn built_in_set(env: &TestEnv, name: &str, image: &str) -> DaemonSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": env.namespace()},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": env.group_selector(),
                    "containers": [{"name": "daemon", "image": image}]
                }
            }
        }
    }))
    .expect("a valid apps/v1 DaemonSet")
}

/// A built-in set whose template exercises what Go's encoding keeps and Rust's types drop or
/// write differently: empty objects (`resources`, `securityContext`, `emptyDir`), a gRPC probe
/// without `service` (Go writes `null`), a projected volume, HTML characters in strings (Go
/// writes `\u003c`), numbers and booleans.
fn rich_built_in_set(env: &TestEnv, name: &str, image: &str) -> DaemonSet {
    let mut set = built_in_set(env, name, image);
    let spec = set.spec.as_mut().expect("spec");
    spec.template = serde_json::from_value(json!({
        "metadata": {"labels": {"app": name}, "annotations": {"note": "a <b> & 'c'"}},
        "spec": {
            "nodeSelector": env.group_selector(),
            "terminationGracePeriodSeconds": 5,
            "securityContext": {},
            "containers": [{
                "name": "daemon",
                "image": image,
                "args": ["--filter=a>b&&c<d", "--unicode=é\u{2028}"],
                "env": [{"name": "MODE", "value": "x&y"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {},
                "ports": [{"containerPort": 9100, "hostPort": 9100, "name": "metrics"}],
                "readinessProbe": {"grpc": {"port": 9100}, "periodSeconds": 7},
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}, {"name": "token", "mountPath": "/token", "readOnly": true}]
            }],
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "token", "projected": {"sources": [{"configMap": {"name": "settings", "optional": true}}]}}
            ]
        }
    }))
    .expect("a valid pod template");
    set
}

/// The revision's `data` as stored, and what everynode writes for the set's template now.
async fn revision_data_and_ours(
    env: &TestEnv,
    revision: &str,
    set: &str,
) -> (serde_json::Value, serde_json::Value) {
    let stored = env
        .api::<ControllerRevision>()
        .get(revision)
        .await
        .expect("get revision")
        .data
        .expect("revision data")
        .0;
    let set = env.api::<DaemonSet>().get(set).await.expect("get set");
    let template = &set.spec.expect("spec").template;
    let ours = everynode_core::revision::encode_revision_data(template);
    // The bytes everynode writes are the canonical Go encoding of what it means.
    let parsed: serde_json::Value = serde_json::from_str(&ours).expect("our data is JSON");
    assert_eq!(everynode_core::gojson::encode(&parsed), ours);
    (stored, parsed)
}

/// `kubectl args` on the test's cluster and namespace: exit status and stdout.
async fn kubectl(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env.cluster().kubectl())
        .args(["--namespace", env.namespace()])
        .args(args)
        .env("KUBECONFIG", env.cluster().kubeconfig())
        .output()
        .await
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.success(), format!("{stdout}{stderr}"))
}

/// The revision numbers `kubectl rollout history daemonset/agent` lists.
async fn history_numbers(env: &TestEnv) -> Vec<String> {
    let (ok, history) = kubectl(env, &["rollout", "history", "daemonset/agent"]).await;
    assert!(ok, "{history}");
    history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// desired/current/ready/updated/available/misscheduled, as apps/v1 stores them (zeros omitted).
fn counters(status: &DaemonSetStatus) -> [i32; 6] {
    [
        status.desired_number_scheduled,
        status.current_number_scheduled,
        status.number_ready,
        status.updated_number_scheduled.unwrap_or_default(),
        status.number_available.unwrap_or_default(),
        status.number_misscheduled,
    ]
}

async fn wait_built_in_status(env: &TestEnv, name: &str, expected: [i32; 6]) -> DaemonSet {
    let sets = env.api::<DaemonSet>();
    let what = format!("status of apps/v1 {name} to be {expected:?}, observed");
    eventually(&what, TIMEOUT, || async {
        let set = sets.get(name).await.map_err(|e| e.to_string())?;
        let status = set.status.clone().unwrap_or_default();
        let observed = status.observed_generation >= set.metadata.generation;
        if counters(&status) == expected && observed {
            Ok(set)
        } else {
            Err(format!("{:?}, observed: {observed}", counters(&status)))
        }
    })
    .await
}

async fn revisions_of(env: &TestEnv, name: &str) -> Vec<String> {
    let mut names: Vec<String> = env
        .api::<ControllerRevision>()
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await
        .expect("list revisions")
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    names
}

/// Pod name → UID of the set's live pods.
async fn pod_uids(env: &TestEnv, name: &str) -> BTreeMap<String, String> {
    set_pods(env, name)
        .await
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

async fn set_image(env: &TestEnv, name: &str, image: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "daemon", "image": image}]}}}});
    env.api::<DaemonSet>()
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patch image");
}

#[tokio::test]
async fn built_in_sets_launch_follow_nodes_roll_out_and_cascade() {
    let env = TestEnv::new("apps-v1").await;
    let mut nodes = env.add_nodes(3).await;
    let controller = start_controller(&env, Target::AppsV1).await;
    wait_until_ready(&controller).await;

    let set = env
        .api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &built_in_set(&env, "agent", "agent:v1"),
        )
        .await
        .expect("create apps/v1 set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let stored = wait_built_in_status(&env, "agent", [3, 3, 3, 3, 3, 0]).await;
    let status = stored.status.clone().unwrap_or_default();
    // apps/v1 semantics: zero counters are absent, collisionCount untouched.
    assert_eq!(status.number_unavailable, None, "{status:?}");
    assert_eq!(status.collision_count, None, "{status:?}");

    for pod in set_pods(&env, "agent").await {
        let owner = pod
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true))
            .cloned()
            .expect("a controller reference");
        assert_eq!(
            (owner.api_version.as_str(), owner.kind.as_str()),
            ("apps/v1", "DaemonSet")
        );
        assert_eq!(Some(owner.uid), set.uid());
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert_eq!(
            pinned_node(&pod),
            pod.spec.as_ref().and_then(|s| s.node_name.clone())
        );
    }

    // A node joins: everynode (the only DaemonSet controller here) gives it its pod.
    nodes.extend(env.add_nodes(1).await);
    nodes.sort();
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    wait_built_in_status(&env, "agent", [4, 4, 4, 4, 4, 0]).await;

    // A rolling update through the built-in API.
    set_image(&env, "agent", "agent:v2").await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v2").await;
    wait_built_in_status(&env, "agent", [4, 4, 4, 4, 4, 0]).await;
    assert_eq!(revisions_of(&env, "agent").await.len(), 2);

    // Foreground deletion: pods and revisions go, then the set.
    env.api::<DaemonSet>()
        .delete(
            "agent",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("delete set");
    eventually(
        "the set, its pods and revisions to be gone",
        TIMEOUT,
        || async {
            let pods = set_pods(&env, "agent").await.len();
            let revisions = revisions_of(&env, "agent").await.len();
            let set = env
                .api::<DaemonSet>()
                .get_opt("agent")
                .await
                .map_err(|e| e.to_string())?;
            if pods == 0 && revisions == 0 && set.is_none() {
                Ok(())
            } else {
                Err(format!(
                    "{pods} pods, {revisions} revisions, set present: {}",
                    set.is_some()
                ))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn sets_are_handed_from_the_built_in_controller_to_everynode_and_back_without_a_restart() {
    let mut cluster = LocalCluster::start(1, true).await;
    let env = TestEnv::on(cluster.info().clone(), "takeover").await;
    let mut nodes = env.add_nodes(3).await;

    // The built-in controller runs the set first.
    env.api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &rich_built_in_set(&env, "agent", "agent:v1"),
        )
        .await
        .expect("create apps/v1 set");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let before = wait_built_in_status(&env, "agent", [3, 3, 3, 3, 3, 0]).await;
    let pods_before = pod_uids(&env, "agent").await;
    let revisions_before = revisions_of(&env, "agent").await;
    assert_eq!(revisions_before.len(), 1, "{revisions_before:?}");
    // What everynode would write for this template is what Go wrote, field for field.
    let (stored, ours) = revision_data_and_ours(&env, &revisions_before[0], "agent").await;
    assert_eq!(
        stored, ours,
        "revision data differs from the built-in controller's"
    );

    // Hand over: the built-in controller off, everynode on.
    cluster.set_builtin_daemonset_controller(false).await;
    let controller = start_controller(&env, Target::AppsV1).await;
    wait_until_ready(&controller).await;

    // everynode recognises the built-in revision and pods as current: nothing restarts, no
    // revision is added, and the status stays exactly what the built-in controller wrote.
    stays_as_it_is(&env, &pods_before, &revisions_before, &before).await;

    // everynode now runs the set: a new node gets its pod, the old pods stay.
    nodes.extend(env.add_nodes(1).await);
    nodes.sort();
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    wait_built_in_status(&env, "agent", [4, 4, 4, 4, 4, 0]).await;
    let pods_now = pod_uids(&env, "agent").await;
    assert!(
        pods_before
            .iter()
            .all(|(name, uid)| pods_now.get(name) == Some(uid)),
        "the built-in controller's pods were kept: {pods_before:?} -> {pods_now:?}"
    );

    // And rolls it out, keeping the built-in revision as history.
    set_image(&env, "agent", "agent:v2").await;
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v2").await;
    let rolled = wait_built_in_status(&env, "agent", [4, 4, 4, 4, 4, 0]).await;
    let revisions = revisions_of(&env, "agent").await;
    assert_eq!(revisions.len(), 2, "{revisions:?}");
    assert!(revisions.contains(&revisions_before[0]), "{revisions:?}");
    let replaced = set_pods(&env, "agent").await;
    assert!(
        replaced
            .iter()
            .all(|p: &Pod| !pods_before.contains_key(&p.name_any())),
        "every old pod was replaced"
    );
    let everynodes = revisions
        .iter()
        .find(|r| **r != revisions_before[0])
        .expect("everynode's revision");
    let (stored, ours) = revision_data_and_ours(&env, everynodes, "agent").await;
    assert_eq!(stored, ours);

    // Hand back: the built-in controller finds everynode's revision current (its bytes are
    // Go's), so it restarts no pod and adds no revision.
    drop(controller);
    let pods_v2 = pod_uids(&env, "agent").await;
    cluster.set_builtin_daemonset_controller(true).await;
    stays_as_it_is(&env, &pods_v2, &revisions, &rolled).await;

    // kubectl reads everynode's revision as the built-in controller's own.
    assert_eq!(history_numbers(&env).await, ["1", "2"]);
    cluster.down().await;
}

/// For a few seconds: the set's pods (by UID), revisions and status do not change.
async fn stays_as_it_is(
    env: &TestEnv,
    pods_before: &BTreeMap<String, String>,
    revisions_before: &[String],
    before: &DaemonSet,
) {
    consistently(
        "the pods, revisions and status to stay as they are",
        Duration::from_secs(8),
        || async {
            let pods = pod_uids(env, "agent").await;
            let revisions = revisions_of(env, "agent").await;
            let set = env
                .api::<DaemonSet>()
                .get("agent")
                .await
                .map_err(|e| e.to_string())?;
            if pods != *pods_before {
                return Err(format!("pods changed: {pods_before:?} -> {pods:?}"));
            }
            if revisions != revisions_before {
                return Err(format!(
                    "revisions changed: {revisions_before:?} -> {revisions:?}"
                ));
            }
            if set.status != before.status {
                return Err(format!(
                    "status changed: {:?} -> {:?}",
                    before.status, set.status
                ));
            }
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn kubectl_rollout_status_history_and_undo_work_as_with_the_built_in_controller() {
    let env = TestEnv::new("kubectl-rollout").await;
    let nodes = env.add_nodes(2).await;
    let _controller = start_controller(&env, Target::AppsV1).await;
    env.api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &built_in_set(&env, "agent", "agent:v1"),
        )
        .await
        .expect("create apps/v1 set");
    let (ok, status) = kubectl(
        &env,
        &["rollout", "status", "daemonset/agent", "--timeout=60s"],
    )
    .await;
    assert!(ok, "{status}");
    assert!(
        status.contains("daemon set \"agent\" successfully rolled out"),
        "{status}"
    );

    set_image(&env, "agent", "agent:v2").await;
    let (ok, status) = kubectl(
        &env,
        &["rollout", "status", "daemonset/agent", "--timeout=60s"],
    )
    .await;
    assert!(ok, "{status}");
    assert!(status.contains("successfully rolled out"), "{status}");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v2").await;

    let (ok, history) = kubectl(&env, &["rollout", "history", "daemonset/agent"]).await;
    assert!(ok, "{history}");
    assert!(history.starts_with("daemonset.apps/agent"), "{history}");
    let (ok, revision_one) = kubectl(
        &env,
        &["rollout", "history", "daemonset/agent", "--revision=1"],
    )
    .await;
    assert!(ok && revision_one.contains("agent:v1"), "{revision_one}");

    // undo patches the set with revision 1's data: its bytes must be a patch kubectl applies.
    let (ok, undo) = kubectl(&env, &["rollout", "undo", "daemonset/agent"]).await;
    assert!(ok, "{undo}");
    assert!(undo.contains("daemonset.apps/agent rolled back"), "{undo}");
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    // As upstream: the rolled-back-to revision is renumbered to the newest.
    assert_eq!(history_numbers(&env).await, ["2", "3"]);
    let (ok, undo_again) = kubectl(
        &env,
        &["rollout", "undo", "daemonset/agent", "--to-revision=9"],
    )
    .await;
    assert!(!ok, "{undo_again}");
    assert!(
        undo_again.contains("unable to find specified revision"),
        "{undo_again}"
    );
}
