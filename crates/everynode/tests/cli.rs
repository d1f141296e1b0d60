//! The CLI against the local cluster: `status` (text and JSON, unknown names), `explain`, `rollout status |
//! history | undo | restart | promote | abort | retry` and `set image` on an everynode set, and
//! `status`/`rollout status` on an apps/v1 set run by `--target apps/v1`.

use std::process::Stdio;
use std::time::Duration;

use everynode_testkit::{TestEnv, eventually};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

mod common;

use common::{controller_command, everynode};

const TIMEOUT: Duration = Duration::from_secs(60);

/// `everynode rollout status -n NS SET --timeout SECONDS`.
async fn rollout_status(env: &TestEnv, set: &str, timeout_seconds: u64) -> (i32, String, String) {
    let timeout = timeout_seconds.to_string();
    everynode(
        env,
        &[
            "rollout",
            "status",
            "-n",
            env.namespace(),
            set,
            "--timeout",
            &timeout,
        ],
    )
    .await
}

fn start_controller(env: &TestEnv, target: &str) -> tokio::process::Child {
    controller_command(env, &env.cluster().kubeconfig())
        .args(["--target", target])
        .spawn()
        .expect("start everynode controller")
}

fn manifest(env: &TestEnv, api_version: &str, name: &str, image: &str) -> Value {
    json!({
        "apiVersion": api_version, "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": env.namespace()},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": env.group_selector(), "containers": [{"name": "c", "image": image}]}
            }
        }
    })
}

fn sets_api(env: &TestEnv, api_version: &str) -> Api<DynamicObject> {
    let resource = if api_version == "apps/v1" {
        ApiResource::erase::<k8s_openapi::api::apps::v1::DaemonSet>(&())
    } else {
        ApiResource::erase::<everynode_api::DaemonSet>(&())
    };
    Api::namespaced_with(env.client(), env.namespace(), &resource)
}

async fn apply(env: &TestEnv, api_version: &str, set: &Value) {
    let api = sets_api(env, api_version);
    let name = set["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    eventually("the set to be applied", TIMEOUT, || async {
        api.patch(
            &name,
            &PatchParams::apply("cli-test").force(),
            &Patch::Apply(set),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    })
    .await;
}

/// `status -o json` once every test node shows `state` for the set.
async fn wait_nodes_in_state(env: &TestEnv, set: &str, nodes: &[String], state: &str) -> Value {
    let what = format!("status of {set} to show {nodes:?} {state}");
    eventually(&what, TIMEOUT, || async {
        let (code, out, err) =
            everynode(env, &["status", "-n", env.namespace(), set, "-o", "json"]).await;
        if code != 0 {
            return Err(format!("exit {code}: {err}"));
        }
        let status: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        let states: Vec<(String, String)> = status["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| {
                Some((
                    n["node"].as_str()?.to_owned(),
                    n["state"].as_str()?.to_owned(),
                ))
            })
            .filter(|(node, _)| nodes.contains(node))
            .collect();
        if states.len() == nodes.len() && states.iter().all(|(_, s)| s == state) {
            Ok(status)
        } else {
            Err(format!("{states:?}"))
        }
    })
    .await
}

#[tokio::test]
async fn status_and_rollout_commands_on_an_everynode_set() {
    let env = TestEnv::new("cli").await;
    let nodes = env.add_nodes(2).await;
    everynode_testkit::install_crd(&env.client()).await;
    let _controller = start_controller(&env, "everynode.dev/v1alpha1");
    let v1 = "everynode.dev/v1alpha1";
    apply(&env, v1, &manifest(&env, v1, "agent", "agent:v1")).await;

    // Unknown names get suggestions and a non-zero exit.
    let (code, _, err) = everynode(&env, &["status", "-n", env.namespace(), "agnet"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("did you mean agent?"), "{err}");

    wait_nodes_in_state(&env, "agent", &nodes, "updated").await;
    // The set's stored status follows the pods a moment later.
    let status = eventually(
        "the set's status to count 2 ready pods",
        TIMEOUT,
        || async {
            let (_, out, err) = everynode(
                &env,
                &["status", "-n", env.namespace(), "agent", "-o", "json"],
            )
            .await;
            let status: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {err}"))?;
            if status["status"]["numberReady"] == 2 {
                Ok(status)
            } else {
                Err(status["status"].to_string())
            }
        },
    )
    .await;
    // Nodes of other tests are excluded by the node selector, each with its reason.
    let excluded = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["state"] == "excluded")
        .cloned()
        .unwrap_or_default();
    assert!(
        excluded["reason"]
            .as_str()
            .is_some_and(|r| r.contains("excluded")),
        "{excluded}"
    );
    let (code, text, _) = everynode(&env, &["status", "-n", env.namespace(), "agent"]).await;
    assert_eq!(code, 0);
    assert!(text.contains("desired 2  current 2  ready 2"), "{text}");
    assert!(text.contains("█ updated 2"), "{text}");
    let (code, explained, err) = everynode(
        &env,
        &[
            "explain",
            "-n",
            env.namespace(),
            "agent",
            "--node",
            &nodes[0],
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(explained.contains("Eligibility: eligible"), "{explained}");
    assert!(explained.contains("(current)"), "{explained}");
    assert!(
        explained.contains("ready: yes, available: yes"),
        "{explained}"
    );
    let (code, _, err) = everynode(
        &env,
        &[
            "explain",
            "-n",
            env.namespace(),
            "agent",
            "--node",
            "no-such-node",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("node \"no-such-node\" not found"), "{err}");
    let (_, table, _) = everynode(&env, &["status", "-n", env.namespace()]).await;
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.contains("agent"), "{table}");

    // A rolling update, followed to the end.
    apply(&env, v1, &manifest(&env, v1, "agent", "agent:v2")).await;
    let (code, out, err) = rollout_status(&env, "agent", 60).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.ends_with("daemon set \"agent\" successfully rolled out\n"),
        "{out}"
    );

    let (_, history, _) = everynode(
        &env,
        &["rollout", "history", "-n", env.namespace(), "agent"],
    )
    .await;
    let rows: Vec<&str> = history.lines().skip(2).collect();
    assert_eq!(rows.len(), 2, "{history}");
    assert!(
        rows[1].starts_with("2 ") && rows[1].ends_with("(current)"),
        "{history}"
    );
    let (_, shown, _) = everynode(
        &env,
        &[
            "rollout",
            "history",
            "-n",
            env.namespace(),
            "agent",
            "--revision",
            "1",
        ],
    )
    .await;
    assert!(shown.contains("image: agent:v1"), "{shown}");

    // Undo goes back to v1.
    let (code, out, err) =
        everynode(&env, &["rollout", "undo", "-n", env.namespace(), "agent"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rolled back to revision 1"), "{out}");
    let (code, _, err) = rollout_status(&env, "agent", 60).await;
    assert_eq!(code, 0, "{err}");
    let set = sets_api(&env, v1).get("agent").await.expect("get set");
    assert_eq!(
        set.data["spec"]["template"]["spec"]["containers"][0]["image"],
        "agent:v1"
    );

    // Restart stamps the template, which replaces every pod.
    let (code, _, err) = everynode(
        &env,
        &["rollout", "restart", "-n", env.namespace(), "agent"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let set = sets_api(&env, v1).get("agent").await.expect("get set");
    assert!(
        set.data["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{}",
        set.data
    );
    let (code, _, err) = rollout_status(&env, "agent", 60).await;
    assert_eq!(code, 0, "{err}");

    // Pause holds a new template; status says so; resume lets it finish.
    let (code, out, err) =
        everynode(&env, &["rollout", "pause", "-n", env.namespace(), "agent"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "daemonset.everynode.dev/agent paused"),
        "{err}"
    );
    let set = sets_api(&env, v1).get("agent").await.expect("get set");
    assert_eq!(set.data["spec"]["paused"], true);
    apply(&env, v1, &manifest(&env, v1, "agent", "agent:v4")).await;
    let (code, out, _) = rollout_status(&env, "agent", 3).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rollout paused"), "{out}");
    let (code, out, err) =
        everynode(&env, &["rollout", "resume", "-n", env.namespace(), "agent"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "daemonset.everynode.dev/agent resumed"),
        "{err}"
    );
    let set = sets_api(&env, v1).get("agent").await.expect("get set");
    assert!(set.data["spec"].get("paused").is_none(), "{}", set.data);
    let (code, _, err) = rollout_status(&env, "agent", 60).await;
    assert_eq!(code, 0, "{err}");
    for (verb, done, frozen) in [
        ("freeze", "frozen", Some(true)),
        ("unfreeze", "unfrozen", None),
    ] {
        let (code, out, err) =
            everynode(&env, &["rollout", verb, "-n", env.namespace(), "agent"]).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), format!("daemonset.everynode.dev/agent {done}"));
        let set = sets_api(&env, v1).get("agent").await.expect("get set");
        assert_eq!(
            set.data["spec"].get("frozen").and_then(Value::as_bool),
            frozen
        );
    }

    // A rollout that cannot finish times out with a non-zero exit.
    let mut stuck = manifest(&env, v1, "agent", "agent:v3");
    stuck["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    apply(&env, v1, &stuck).await;
    let (code, _, err) = rollout_status(&env, "agent", 3).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("timed out"), "{err}");
}

#[tokio::test]
async fn status_and_rollout_status_on_a_built_in_set() {
    let env = TestEnv::new("cli-apps").await;
    let nodes = env.add_nodes(2).await;
    let _controller = start_controller(&env, "apps/v1");
    apply(
        &env,
        "apps/v1",
        &manifest(&env, "apps/v1", "exporter", "exporter:v1"),
    )
    .await;
    wait_nodes_in_state(&env, "exporter", &nodes, "updated").await;
    let (code, out, err) = rollout_status(&env, "exporter", 60).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("successfully rolled out"), "{out}");
    let (_, text, _) = everynode(&env, &["status", "-n", env.namespace(), "exporter"]).await;
    assert!(text.starts_with("daemonset.apps/exporter in "), "{text}");
    // Pause is an everynode control; the built-in set has no such field.
    let (code, _, err) = everynode(
        &env,
        &["rollout", "pause", "-n", env.namespace(), "exporter"],
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("pause and freeze are everynode rollout controls"),
        "{err}"
    );
}

/// `rollout status` watches a rolling update node by node: a line each time the counts change
/// (a progress bar on a terminal), the updated count never going back, then success.
#[tokio::test]
async fn rollout_status_watches_the_update_node_by_node() {
    let env = TestEnv::new("cli-watch").await;
    env.add_nodes(3).await;
    everynode_testkit::install_crd(&env.client()).await;
    let _controller = start_controller(&env, "everynode.dev/v1alpha1");
    let v1 = "everynode.dev/v1alpha1";
    let slow = |image: &str| {
        let mut set = manifest(&env, v1, "agent", image);
        // Each node's new pod must stay ready 2 s before the next node's turn.
        set["spec"]["minReadySeconds"] = json!(2);
        set["spec"]["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}});
        set
    };
    apply(&env, v1, &slow("agent:v1")).await;
    let (code, out, err) = rollout_status(&env, "agent", 60).await;
    assert_eq!(code, 0, "{out}{err}");

    apply(&env, v1, &slow("agent:v2")).await;
    let (code, out, err) = rollout_status(&env, "agent", 90).await;
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.last().copied(),
        Some("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    let updated: Vec<u32> = lines
        .iter()
        .filter_map(|l| {
            l.split_once("rollout to finish: ")?
                .1
                .split_once(" out of 3 new pods")
        })
        .filter_map(|(n, _)| n.parse().ok())
        .collect();
    assert!(
        updated.windows(2).all(|w| w[0] <= w[1]),
        "the updated count went back: {out}"
    );
    for step in [1, 2] {
        assert!(
            updated.contains(&step),
            "no line for {step} of 3 updated: {out}"
        );
    }
}

/// With a symlink named `kubectl-everynode` on PATH, `kubectl everynode ...` runs the CLI (with
/// the kubectl built alongside the local cluster, so no kubectl needs to be installed).
#[tokio::test]
async fn runs_as_a_kubectl_plugin() {
    let env = TestEnv::new("cli-plugin").await;
    let nodes = env.add_nodes(1).await;
    everynode_testkit::install_crd(&env.client()).await;
    let _controller = start_controller(&env, "everynode.dev/v1alpha1");
    let v1 = "everynode.dev/v1alpha1";
    apply(&env, v1, &manifest(&env, v1, "agent", "agent:v1")).await;
    wait_nodes_in_state(&env, "agent", &nodes, "updated").await;

    let plugins = std::env::temp_dir().join(format!("everynode-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&plugins).expect("create plugin dir");
    let link = plugins.join("kubectl-everynode");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_everynode"), &link).expect("symlink");
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = env.cluster().kubectl();
    let run = |args: Vec<String>, kubeconfig: String| {
        let (kubectl, path) = (kubectl.clone(), path.clone());
        async move {
            let out = tokio::process::Command::new(&kubectl)
                .args(&args)
                .env("PATH", path)
                .env("KUBECONFIG", kubeconfig)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .output()
                .await
                .unwrap_or_else(|e| panic!("run {}: {e}", kubectl.display()));
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let kubeconfig = env.cluster().kubeconfig().display().to_string();
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let (code, listed, err) = run(args(&["plugin", "list"]), kubeconfig.clone()).await;
    assert_eq!(code, 0, "{err}");
    assert!(listed.contains(&link.display().to_string()), "{listed}");

    // KUBECONFIG from the environment, as kubectl passes it on. The pod is available already;
    // the counters come from the status the controller writes (paced: up to a second later).
    eventually(
        "kubectl everynode status to show the ready pod",
        TIMEOUT,
        || async {
            let (code, out, err) = run(
                args(&["everynode", "status", "-n", env.namespace(), "agent"]),
                kubeconfig.clone(),
            )
            .await;
            if code != 0 {
                return Err(format!("exit {code}: {err}"));
            }
            if out.contains("daemonset.everynode.dev/agent")
                && out.contains("desired 1  current 1  ready 1")
            {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;

    // kubectl-style flags after the plugin name are the plugin's own.
    let (code, out, err) = run(
        args(&[
            "everynode",
            "explain",
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            env.namespace(),
            "agent",
            "--node",
            &nodes[0],
        ]),
        "/nonexistent/kubeconfig".to_owned(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Eligibility: eligible"), "{out}");

    // Errors and exit codes come through kubectl unchanged.
    let (code, _, err) = run(
        args(&["everynode", "status", "-n", env.namespace(), "agnet"]),
        kubeconfig,
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("did you mean agent?"), "{err}");
    let _ = std::fs::remove_dir_all(&plugins);
}

/// `rollout status` exits non-zero with the reason when the rollout fails its progress
/// deadline (pods of the new revision never become ready).
#[tokio::test]
async fn rollout_status_fails_with_the_reason_when_the_deadline_passes() {
    let env = TestEnv::new("cli-deadline").await;
    let nodes = env.add_nodes(2).await;
    everynode_testkit::install_crd(&env.client()).await;
    let _controller = start_controller(&env, "everynode.dev/v1alpha1");
    let v1 = "everynode.dev/v1alpha1";
    let mut set = manifest(&env, v1, "agent", "agent:v1");
    set["spec"]["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "progressDeadlineSeconds": 3}});
    apply(&env, v1, &set).await;
    let (code, out, err) = rollout_status(&env, "agent", 60).await;
    assert_eq!(code, 0, "{out}{err}");
    set["spec"]["template"]["metadata"]["labels"][everynode_testkit::SIMULATE_LABEL] =
        json!(everynode_testkit::NEVER_READY);
    set["spec"]["template"]["spec"]["containers"][0]["image"] = json!("agent:v2");
    apply(&env, v1, &set).await;
    let (code, out, err) = rollout_status(&env, "agent", 60).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("rollout failed") && err.contains("ProgressDeadlineExceeded"),
        "{err}"
    );
    let (code, shown, err) = everynode(&env, &["status", "-n", env.namespace(), "agent"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("ProgressDeadlineExceeded"), "{shown}");
    // The node the failure holds on v1 says so in explain, as in status.blockedNodes.
    let mut held = Vec::new();
    for node in &nodes {
        let (code, explained, err) = everynode(
            &env,
            &["explain", "-n", env.namespace(), "agent", "--node", node],
        )
        .await;
        assert_eq!(code, 0, "{err}");
        if explained.contains("Blocked:     RolloutFailed") {
            assert!(
                explained.contains("Waiting:     update deferred: the rollout failed"),
                "{explained}"
            );
            held.push(node.clone());
        }
    }
    assert_eq!(held.len(), 1, "{held:?}");
}

/// `explain -n NS SET --node NODE`, which must succeed.
async fn explain(env: &TestEnv, set: &str, node: &str) -> String {
    let (code, out, err) = everynode(
        env,
        &["explain", "-n", env.namespace(), set, "--node", node],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    out
}

#[tokio::test]
async fn explain_and_the_controller_agree_on_a_set_with_an_orphan() {
    let env = TestEnv::new("cli-orphan").await;
    let nodes = env.add_nodes(3).await;
    everynode_testkit::install_crd(&env.client()).await;
    // An orphan the set's selector matches, on the second node; no controller runs yet.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(env.client(), env.namespace());
    let orphan: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "agent-orphan", "labels": {"app": "agent"}},
        "spec": {"nodeName": nodes[1], "containers": [{"name": "c", "image": "agent:v1"}]}
    }))
    .unwrap();
    pods.create(&Default::default(), &orphan).await.unwrap();
    let v1 = "everynode.dev/v1alpha1";
    let mut set = manifest(&env, v1, "agent", "agent:v1");
    // OnDelete: the adopted orphan keeps running, so what follows the adoption is observable.
    set["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    apply(&env, v1, &set).await;

    // explain plans what the controller will do: adopt the orphan, create on the other nodes.
    let on_orphan_node = explain(&env, "agent", &nodes[1]).await;
    assert!(
        on_orphan_node.contains("Pod:         agent-orphan"),
        "{on_orphan_node}"
    );
    assert!(
        on_orphan_node.contains("Next:        adopt agent-orphan"),
        "{on_orphan_node}"
    );
    assert!(!on_orphan_node.contains("create"), "{on_orphan_node}");
    for node in [&nodes[0], &nodes[2]] {
        let explained = explain(&env, "agent", node).await;
        assert!(
            explained.contains("Next:        create agent-"),
            "{explained}"
        );
    }

    // The controller does just that: every node runs one pod of the set, the orphan adopted.
    let _controller = start_controller(&env, v1);
    let sets = sets_api(&env, v1);
    let uid = sets.get("agent").await.unwrap().metadata.uid.unwrap();
    eventually(
        "the orphan adopted and a pod on every node",
        TIMEOUT,
        || async {
            let list = pods
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut placed: Vec<(String, String, bool)> = list
                .items
                .iter()
                .map(|p| {
                    let owned = p
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|r| r.controller == Some(true) && r.uid == uid);
                    let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
                    let node = node.or_else(|| everynode_core::target_node_name(p).ok());
                    (
                        node.unwrap_or_default(),
                        p.metadata.name.clone().unwrap_or_default(),
                        owned,
                    )
                })
                .collect();
            placed.sort();
            let on = |n: &String| placed.iter().filter(|(node, _, _)| node == n).count();
            let orphan_adopted = placed
                .iter()
                .any(|(node, name, owned)| node == &nodes[1] && name == "agent-orphan" && *owned);
            if placed.len() == 3 && nodes.iter().all(|n| on(n) == 1) && orphan_adopted {
                Ok(())
            } else {
                Err(format!("{placed:?}"))
            }
        },
    )
    .await;
    let after = explain(&env, "agent", &nodes[1]).await;
    assert!(!after.contains("Next:"), "{after}");
}

/// `everynode ARGS -n NS`, expecting exit `code`; returns stdout and stderr together.
async fn expect_exit(env: &TestEnv, code: i32, args: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-n", env.namespace()]);
    let (got, out, err) = everynode(env, &all).await;
    assert_eq!(got, code, "everynode {args:?}: {out}{err}");
    format!("{out}{err}")
}

#[tokio::test]
async fn set_image_then_promote_the_partition_step_by_step() {
    let env = TestEnv::new("cli-promote").await;
    let nodes = env.add_nodes(4).await;
    everynode_testkit::install_crd(&env.client()).await;
    let _controller = start_controller(&env, "everynode.dev/v1alpha1");
    let v1 = "everynode.dev/v1alpha1";
    let mut set = manifest(&env, v1, "agent", "agent:v1");
    set["spec"]["updateStrategy"] = json!({"rollingUpdate": {"partition": 3}});
    apply(&env, v1, &set).await;
    wait_nodes_in_state(&env, "agent", &nodes, "updated").await;

    // A container the template does not have is named with the ones it has; nothing changes.
    let refused = expect_exit(&env, 1, &["set", "image", "agent", "agnet=agent:v2"]).await;
    assert!(
        refused.contains("no container \"agnet\"; its containers: c"),
        "{refused}"
    );
    let updated = expect_exit(&env, 0, &["set", "image", "agent", "c=agent:v2"]).await;
    assert_eq!(
        updated,
        "daemonset.everynode.dev/agent image updated\n  c: agent:v1 -> agent:v2\n"
    );
    // partition 3 of 4: only the first node (by name) is updated.
    wait_nodes_in_state(&env, "agent", &nodes[..1], "updated").await;
    wait_nodes_in_state(&env, "agent", &nodes[1..], "old").await;

    let promoted = expect_exit(&env, 0, &["rollout", "promote", "agent", "--step", "2"]).await;
    assert!(
        promoted.contains("promoted: partition 3 -> 1"),
        "{promoted}"
    );
    wait_nodes_in_state(&env, "agent", &nodes[..3], "updated").await;
    wait_nodes_in_state(&env, "agent", &nodes[3..], "old").await;

    // The default step, a quarter of 4 nodes, releases the last one.
    let promoted = expect_exit(&env, 0, &["rollout", "promote", "agent"]).await;
    assert!(
        promoted.contains("promoted: partition 1 -> 0"),
        "{promoted}"
    );
    let done = expect_exit(&env, 0, &["rollout", "status", "agent", "--timeout", "1m"]).await;
    assert!(done.ends_with("successfully rolled out\n"), "{done}");
    let nothing = expect_exit(&env, 1, &["rollout", "promote", "agent"]).await;
    assert!(nothing.contains("nothing to promote"), "{nothing}");
    let bad = expect_exit(
        &env,
        2,
        &["rollout", "status", "agent", "--timeout", "5 minutes"],
    )
    .await;
    assert!(bad.contains("use e.g. 30s, 5m or 1h30m"), "{bad}");
}

/// Names of the set's pods whose first container runs `image`, sorted.
async fn pods_running(env: &TestEnv, image: &str) -> Vec<String> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(env.client(), env.namespace());
    let mut names: Vec<String> = pods
        .list(&Default::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.containers[0].image.as_deref())
                == Some(image)
        })
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

/// Waits until the 3 pods of `agent` run agent:v1 again while its template keeps agent:v2;
/// returns the set.
async fn wait_back_on_v1_template_kept(env: &TestEnv) -> DynamicObject {
    eventually("every pod back on agent:v1", TIMEOUT, || async {
        let (old, new) = (
            pods_running(env, "agent:v1").await,
            pods_running(env, "agent:v2").await,
        );
        (old.len() == 3 && new.is_empty())
            .then_some(())
            .ok_or(format!("{old:?} {new:?}"))
    })
    .await;
    let stored = sets_api(env, "everynode.dev/v1alpha1")
        .get("agent")
        .await
        .expect("get the set");
    assert_eq!(
        stored.data["spec"]["template"]["spec"]["containers"][0]["image"],
        "agent:v2"
    );
    stored
}

#[tokio::test]
async fn retry_and_abort_a_failed_rollout_without_touching_the_template() {
    let env = TestEnv::new("cli-abort").await;
    let nodes = env.add_nodes(3).await;
    everynode_testkit::install_crd(&env.client()).await;
    let _controller = start_controller(&env, "everynode.dev/v1alpha1");
    let v1 = "everynode.dev/v1alpha1";
    let mut set = manifest(&env, v1, "agent", "agent:v1");
    set["spec"]["updateStrategy"] =
        json!({"rollingUpdate": {"maxUnavailable": 1, "progressDeadlineSeconds": 3}});
    apply(&env, v1, &set).await;
    expect_exit(&env, 0, &["rollout", "status", "agent", "--timeout", "1m"]).await;
    set["spec"]["template"]["metadata"]["labels"][everynode_testkit::SIMULATE_LABEL] =
        json!(everynode_testkit::NEVER_READY);
    set["spec"]["template"]["spec"]["containers"][0]["image"] = json!("agent:v2");
    apply(&env, v1, &set).await;
    let failed = expect_exit(&env, 1, &["rollout", "status", "agent", "--timeout", "1m"]).await;
    assert!(failed.contains("ProgressDeadlineExceeded"), "{failed}");
    let broken = pods_running(&env, "agent:v2").await;
    assert_eq!(broken.len(), 1, "{broken:?}");

    // Retry: the failure is dropped and the pod that never became ready starts again.
    let retried = expect_exit(&env, 0, &["rollout", "retry", "agent"]).await;
    assert!(retried.contains("failure dropped"), "{retried}");
    assert!(
        retried.contains(&format!(
            "1 pod(s) that were not Ready deleted to start again: {}",
            broken[0]
        )),
        "{retried}"
    );
    eventually("a new pod of agent:v2", TIMEOUT, || async {
        let now = pods_running(&env, "agent:v2").await;
        (now.len() == 1 && now != broken)
            .then_some(())
            .ok_or(format!("{now:?}"))
    })
    .await;
    let failed = expect_exit(&env, 1, &["rollout", "status", "agent", "--timeout", "1m"]).await;
    assert!(failed.contains("ProgressDeadlineExceeded"), "{failed}");

    // Abort: every node goes back to agent:v1; the template keeps agent:v2.
    let aborted = expect_exit(&env, 0, &["rollout", "abort", "agent"]).await;
    assert!(
        aborted.contains("pods go back to the stable revision agent-"),
        "{aborted}"
    );
    wait_nodes_in_state(&env, "agent", &nodes, "updated").await;
    wait_back_on_v1_template_kept(&env).await;
    let shown = expect_exit(&env, 1, &["rollout", "status", "agent", "--timeout", "1m"]).await;
    assert!(shown.contains("aborted"), "{shown}");
    let again = expect_exit(&env, 1, &["rollout", "abort", "agent"]).await;
    assert!(again.contains("aborted already"), "{again}");

    // Retry after an abort takes up the rollout of the template again.
    let resumed = expect_exit(&env, 0, &["rollout", "retry", "agent"]).await;
    assert!(resumed.contains("abort removed"), "{resumed}");
    eventually("a pod of agent:v2 again", TIMEOUT, || async {
        let now = pods_running(&env, "agent:v2").await;
        (!now.is_empty()).then_some(()).ok_or(format!("{now:?}"))
    })
    .await;
}

#[tokio::test]
async fn failure_policy_abort_takes_the_pods_back_by_itself() {
    let env = TestEnv::new("cli-abort-policy").await;
    env.add_nodes(3).await;
    everynode_testkit::install_crd(&env.client()).await;
    let _controller = start_controller(&env, "everynode.dev/v1alpha1");
    let v1 = "everynode.dev/v1alpha1";
    let mut set = manifest(&env, v1, "agent", "agent:v1");
    set["spec"]["updateStrategy"] = json!({"rollingUpdate": {
        "maxUnavailable": 1, "progressDeadlineSeconds": 3, "failurePolicy": "Abort"}});
    apply(&env, v1, &set).await;
    expect_exit(&env, 0, &["rollout", "status", "agent", "--timeout", "1m"]).await;
    set["spec"]["template"]["metadata"]["labels"][everynode_testkit::SIMULATE_LABEL] =
        json!(everynode_testkit::NEVER_READY);
    set["spec"]["template"]["spec"]["containers"][0]["image"] = json!("agent:v2");
    apply(&env, v1, &set).await;
    // The watch ends at the failure, or at the abort that follows it at once.
    let failed = expect_exit(&env, 1, &["rollout", "status", "agent", "--timeout", "1m"]).await;
    assert!(
        failed.contains("failurePolicy Abort") || failed.contains("aborted, pods go back"),
        "{failed}"
    );
    let stored = wait_back_on_v1_template_kept(&env).await;
    assert_eq!(stored.data["status"]["failure"]["policy"], "Abort");
    let aborted = expect_exit(&env, 1, &["rollout", "status", "agent", "--timeout", "1m"]).await;
    assert!(
        aborted.contains("aborted, pods go back to the stable revision"),
        "{aborted}"
    );
}

#[tokio::test]
async fn explain_names_the_set_a_gated_node_waits_for() {
    let env = TestEnv::new("cli-gate").await;
    let key = format!("gate.everynode.dev/{}", env.namespace());
    let taint_key = key.clone();
    let nodes = env
        .add_nodes_with(1, move |node: &mut k8s_openapi::api::core::v1::Node| {
            node.spec.get_or_insert_default().taints =
                Some(vec![k8s_openapi::api::core::v1::Taint {
                    key: taint_key.clone(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                }]);
        })
        .await;
    everynode_testkit::install_crd(&env.client()).await;
    let _controller = start_controller(&env, "everynode.dev/v1alpha1");
    let v1 = "everynode.dev/v1alpha1";
    let mut set = manifest(&env, v1, "agent", "agent:v1");
    set["spec"]["nodeReadiness"] = json!({"taint": {"key": key, "effect": "NoSchedule"}});
    set["spec"]["template"]["metadata"]["labels"][everynode_testkit::SIMULATE_LABEL] =
        json!(everynode_testkit::NEVER_READY);
    apply(&env, v1, &set).await;
    let waiting = format!(
        "Gate:        taint {key} on the node; waiting for an available pod of {}/agent",
        env.namespace()
    );
    eventually(
        "explain to name the set the node waits for",
        TIMEOUT,
        || async {
            let shown = expect_exit(&env, 0, &["explain", "agent", "--node", &nodes[0]]).await;
            shown.contains(&waiting).then_some(()).ok_or(shown)
        },
    )
    .await;
    eventually("status to count the gated node", TIMEOUT, || async {
        let status = expect_exit(&env, 0, &["status", "agent"]).await;
        status
            .contains("Gated:      1 desired node(s)")
            .then_some(())
            .ok_or(status)
    })
    .await;
}

#[tokio::test]
async fn explain_and_status_name_the_override_each_node_gets() {
    let env = TestEnv::new("cli-override").await;
    let nodes = env.add_nodes(2).await;
    env.label_node(&nodes[1], "example.com/gpu", Some("true"))
        .await;
    everynode_testkit::install_crd(&env.client()).await;
    let _controller = start_controller(&env, "everynode.dev/v1alpha1");
    let v1 = "everynode.dev/v1alpha1";
    let mut set = manifest(&env, v1, "agent", "agent:v1");
    set["spec"]["nodeOverrides"] = json!([{
        "name": "gpu",
        "nodeSelector": {"matchLabels": {"example.com/gpu": "true"}},
        "containers": [{"name": "c", "image": "agent:v1-gpu"}]
    }]);
    apply(&env, v1, &set).await;
    eventually(
        "the GPU node's pod to run its override",
        TIMEOUT,
        || async {
            let shown = expect_exit(&env, 0, &["explain", "agent", "--node", &nodes[1]]).await;
            (shown.contains("Override:    gpu (the first of spec.nodeOverrides")
                && shown.contains("(current)")
                && shown.contains("ready: yes"))
            .then_some(())
            .ok_or(shown)
        },
    )
    .await;
    let table = expect_exit(&env, 0, &["explain", "agent"]).await;
    let row = |node: &str| {
        table
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_default()
            .split_whitespace()
            .nth(3)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        (row(&nodes[0]), row(&nodes[1])),
        ("-".into(), "gpu".into()),
        "{table}"
    );
    let status = expect_exit(&env, 0, &["status", "agent"]).await;
    assert!(
        status.contains("Overrides:  gpu on 1 node(s)\n"),
        "{status}"
    );
}
