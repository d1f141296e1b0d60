//! Every manifest in `examples/` applied to the local cluster and checked: one test per pattern.
//! The test only adds its node-group selector to each set (so parallel tests keep to their own
//! nodes) and its namespace.

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use common::*;
use everynode_runtime::Target;
use everynode_testkit::dns::{DnsError, lookup_a};
use everynode_testkit::{TestEnv, eventually, pods};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, Service, Taint};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::Value;

/// The objects of `examples/<file>`.
fn example(file: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

/// Applies an example's objects in the test's namespace, each set confined to the test's nodes.
/// Returns the names of the sets and their first container's image.
async fn apply_example(env: &TestEnv, file: &str) -> Vec<(String, String)> {
    let mut sets = Vec::new();
    for mut object in example(file) {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let resource = match kind.as_str() {
            "DaemonSet" => ApiResource::erase::<everynode_api::DaemonSet>(&()),
            "Service" => ApiResource::erase::<Service>(&()),
            "Deployment" => ApiResource::erase::<Deployment>(&()),
            other => panic!("{file}: no test support for kind {other}"),
        };
        if kind == "DaemonSet" {
            let selector = &mut object["spec"]["template"]["spec"]["nodeSelector"];
            if selector.is_null() {
                *selector = Value::Object(Default::default());
            }
            for (key, value) in env.group_selector() {
                selector[key] = Value::from(value);
            }
            sets.push((
                object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                object["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let api: Api<DynamicObject> =
            Api::namespaced_with(env.client(), env.namespace(), &resource);
        eventually(
            &format!("{file}: {kind} {name} applied"),
            TIMEOUT,
            || async {
                api.patch(
                    &name,
                    &PatchParams::apply("examples-test"),
                    &Patch::Apply(&object),
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            },
        )
        .await;
    }
    sets
}

async fn wait_service_lists(env: &TestEnv, service: &str, nodes: &[String]) {
    eventually(
        &format!("service {service} to list a Ready pod on each of {nodes:?}"),
        TIMEOUT,
        || async {
            let listed = service_ready_nodes(env, service).await?;
            if listed == nodes {
                Ok(())
            } else {
                Err(format!("{listed:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn log_collector_pushes_to_an_aggregator_behind_a_service() {
    let env = TestEnv::new("ex-logs").await;
    let nodes = env.add_nodes(2).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = apply_example(&env, "log-collector.yaml").await;
    let (set, image) = &sets[0];
    wait_one_ready_pod_per_node(&env, set, &nodes, image).await;
    eventually(
        "the aggregator Service to have a Ready endpoint",
        TIMEOUT,
        || async {
            let listed = service_ready_nodes(&env, "log-aggregator").await?;
            if listed.len() == 1 {
                Ok(())
            } else {
                Err(format!("{listed:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn node_exporter_is_reached_on_the_node_ip_and_host_port() {
    let env = TestEnv::new("ex-exporter").await;
    let nodes = env.add_nodes(2).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = apply_example(&env, "node-exporter.yaml").await;
    let (set, image) = &sets[0];
    wait_one_ready_pod_per_node(&env, set, &nodes, image).await;
    for pod in set_pods(&env, set).await {
        let spec = pod.spec.clone().unwrap_or_default();
        assert_eq!(spec.host_network, Some(true));
        let port = spec.containers[0].ports.clone().unwrap_or_default()[0].host_port;
        assert_eq!(port, Some(9100));
        let node = env
            .nodes_api()
            .get(&spec.node_name.clone().unwrap_or_default())
            .await
            .expect("node");
        let node_ip = node
            .status
            .and_then(|s| s.addresses)
            .unwrap_or_default()
            .into_iter()
            .find(|a| a.type_ == "InternalIP")
            .map(|a| a.address);
        let pod_ip = pod.status.and_then(|s| s.pod_ip);
        assert!(
            pod_ip.is_some() && pod_ip == node_ip,
            "pod IP {pod_ip:?}, node IP {node_ip:?}"
        );
    }
}

#[tokio::test]
async fn a_headless_service_resolves_to_every_daemon_pod_in_dns() {
    let env = TestEnv::new("ex-dns").await;
    let nodes = env.add_nodes(2).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = apply_example(&env, "headless-dns.yaml").await;
    let (set, image) = &sets[0];
    wait_one_ready_pod_per_node(&env, set, &nodes, image).await;
    let service = env
        .api::<Service>()
        .get("node-cache")
        .await
        .expect("service");
    assert_eq!(
        service.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("None")
    );
    wait_service_lists(&env, "node-cache", &nodes).await;

    // The cluster's CoreDNS answers for the Service name with every pod's IP, and for each pod's
    // own name under the Service (`<ip-with-dashes>.<service>.<namespace>.svc.cluster.local`).
    let mut pod_ips: Vec<Ipv4Addr> = set_pods(&env, set)
        .await
        .into_iter()
        .filter_map(|p| p.status.and_then(|s| s.pod_ip))
        .map(|ip| ip.parse().expect("pod IP"))
        .collect();
    pod_ips.sort_unstable();
    assert_eq!(pod_ips.len(), nodes.len(), "one pod IP per node");
    let dns = env.cluster().dns_server();
    let service_name = format!("node-cache.{}.svc.cluster.local", env.namespace());
    eventually(
        &format!("{service_name} to resolve to the pods' IPs {pod_ips:?}"),
        TIMEOUT,
        || async {
            let got = lookup_a(dns, &service_name)
                .await
                .map_err(|e| e.to_string())?;
            if got == pod_ips {
                Ok(())
            } else {
                Err(format!("got {got:?}"))
            }
        },
    )
    .await;
    for ip in &pod_ips {
        let pod_name = format!("{}.{service_name}", ip.to_string().replace('.', "-"));
        let got = lookup_a(dns, &pod_name).await.expect("pod DNS name");
        assert_eq!(got, vec![*ip], "{pod_name}");
    }
    let unknown = format!("no-such-service.{}.svc.cluster.local", env.namespace());
    match lookup_a(dns, &unknown).await {
        Err(DnsError::Rcode { rcode: 3, .. }) => {}
        other => panic!("{unknown}: expected NXDOMAIN, got {other:?}"),
    }
}

#[tokio::test]
async fn a_node_local_service_is_accepted_and_lists_each_node_pod() {
    let env = TestEnv::new("ex-local").await;
    let nodes = env.add_nodes(2).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = apply_example(&env, "local-traffic.yaml").await;
    let (set, image) = &sets[0];
    wait_one_ready_pod_per_node(&env, set, &nodes, image).await;
    let service = env
        .api::<Service>()
        .get("node-local-proxy")
        .await
        .expect("service");
    assert_eq!(
        service
            .spec
            .and_then(|s| s.internal_traffic_policy)
            .as_deref(),
        Some("Local")
    );
    wait_service_lists(&env, "node-local-proxy", &nodes).await;
}

#[tokio::test]
async fn the_storage_daemon_runs_only_on_labelled_storage_nodes() {
    let env = TestEnv::new("ex-storage").await;
    let nodes = env.add_nodes(3).await;
    env.label_node(&nodes[1], "storage.example.com/node", Some("true"))
        .await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = apply_example(&env, "storage.yaml").await;
    let (set, image) = &sets[0];
    wait_one_ready_pod_per_node(&env, set, &nodes[1..2], image).await;
    env.label_node(&nodes[2], "storage.example.com/node", Some("true"))
        .await;
    wait_one_ready_pod_per_node(&env, set, &nodes[1..], image).await;
}

#[tokio::test]
async fn a_set_tolerating_the_control_plane_taint_covers_control_plane_nodes() {
    let env = TestEnv::new("ex-cp").await;
    let mut nodes = env.add_nodes(1).await;
    let control_plane = env
        .add_nodes_with(1, |node: &mut Node| {
            node.spec.get_or_insert_default().taints = Some(vec![Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                effect: "NoSchedule".into(),
                ..Taint::default()
            }]);
        })
        .await;
    nodes.extend(control_plane.iter().cloned());
    nodes.sort();
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = apply_example(&env, "control-plane-too.yaml").await;
    let (set, image) = &sets[0];
    wait_one_ready_pod_per_node(&env, set, &nodes, image).await;
    let on_control_plane: Vec<Pod> = set_pods(&env, set)
        .await
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()) == Some(&control_plane[0]))
        .collect();
    assert_eq!(on_control_plane.len(), 1);
    assert!(pods::is_ready(&on_control_plane[0]));
}

#[tokio::test]
async fn the_canary_rollout_updates_a_quarter_of_the_nodes_and_holds_the_rest() {
    let env = TestEnv::new("ex-canary").await;
    let nodes = env.add_nodes(4).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = apply_example(&env, "canary-rollout.yaml").await;
    let (set, image) = &sets[0];
    wait_one_ready_pod_per_node(&env, set, &nodes, image).await;
    // What `everynode set image` writes: a JSON patch of the first container's image.
    let new_image = "cr.fluentbit.io/fluent/fluent-bit:4.0.4";
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": new_image}
    ]))
    .expect("a JSON patch");
    env.api::<everynode_api::DaemonSet>()
        .patch(set, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .expect("patch the image");
    // partition 75% of 4 nodes holds 3 on the old image; the first node by name is updated.
    eventually("one node on the new image, three held", TIMEOUT, || async {
        let pods: Vec<Pod> = set_pods(&env, set)
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pods::is_ready(p))
            .collect();
        let updated: Vec<String> = pods
            .iter()
            .filter(|p| image_of(p).as_deref() == Some(new_image))
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        let held = pods
            .iter()
            .filter(|p| image_of(p).as_deref() == Some(image.as_str()))
            .count();
        (updated == nodes[..1] && held == 3)
            .then_some(())
            .ok_or(format!("updated {updated:?}, held {held}"))
    })
    .await;
}

#[tokio::test]
async fn the_gated_agent_takes_the_startup_taint_off_once_its_pod_is_available() {
    let env = TestEnv::new("ex-gate").await;
    let nodes = env
        .add_nodes_with(2, |node: &mut Node| {
            node.spec.get_or_insert_default().taints = Some(vec![Taint {
                key: "example.com/agent-not-ready".into(),
                effect: "NoSchedule".into(),
                ..Taint::default()
            }]);
        })
        .await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = apply_example(&env, "gated-agent.yaml").await;
    let (set, image) = &sets[0];
    wait_one_ready_pod_per_node(&env, set, &nodes, image).await;
    eventually("the startup taint off both nodes", TIMEOUT, || async {
        let mut tainted = Vec::new();
        for name in &nodes {
            let node = kube::Api::<Node>::all(env.client())
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
            if taints
                .iter()
                .any(|t| t.key == "example.com/agent-not-ready")
            {
                tainted.push(name.clone());
            }
        }
        tainted
            .is_empty()
            .then_some(())
            .ok_or(format!("still tainted: {tainted:?}"))
    })
    .await;
}

#[tokio::test]
async fn the_node_agent_gets_each_node_class_its_override() {
    let env = TestEnv::new("ex-overrides").await;
    let nodes = env.add_nodes(3).await;
    env.label_node(&nodes[1], "nvidia.com/gpu.present", Some("true"))
        .await;
    env.label_node(&nodes[2], "kubernetes.io/arch", Some("arm64"))
        .await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = apply_example(&env, "node-overrides.yaml").await;
    let (set, image) = &sets[0];
    let want = [
        (image.as_str(), "false", "256Mi"),
        (image.as_str(), "true", "1Gi"),
        (
            "registry.example.com/node-agent:1.4.0-arm64",
            "false",
            "256Mi",
        ),
    ];
    eventually("each node class runs its override", TIMEOUT, || async {
        let mut got = Vec::new();
        for node in &nodes {
            let pod = set_pods(&env, set).await.into_iter().find(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_ref()) == Some(node)
                    && pods::is_ready(p)
            });
            let Some(container) = pod.and_then(|p| p.spec).map(|s| s.containers[0].clone()) else {
                return Err(format!("no Ready pod on {node}"));
            };
            let env_value = container
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "COLLECT_GPU")
                .and_then(|e| e.value.clone())
                .unwrap_or_default();
            let memory = container
                .resources
                .and_then(|r| r.limits)
                .and_then(|l| l.get("memory").map(|q| q.0.clone()))
                .unwrap_or_default();
            got.push((container.image.unwrap_or_default(), env_value, memory));
        }
        let matches = got
            .iter()
            .zip(&want)
            .all(|(g, w)| g.0 == w.0 && g.1 == w.1 && g.2 == w.2);
        matches.then_some(()).ok_or(format!("{got:?}"))
    })
    .await;
}

#[tokio::test]
async fn the_agent_with_a_large_image_pulls_it_before_each_node_is_updated() {
    let env = TestEnv::new("ex-pre-pull").await;
    let nodes = env.add_nodes(3).await;
    let _controller = start_controller(&env, Target::Everynode).await;
    let sets = apply_example(&env, "pre-pull-agent.yaml").await;
    let (set, image) = &sets[0];
    wait_one_ready_pod_per_node(&env, set, &nodes, image).await;
    let new_image = "gcr.io/datadoghq/agent:7.61.0";
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "agent", "image": new_image}
    ]}}}});
    env.api::<everynode_api::DaemonSet>()
        .patch(set, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch the image");
    wait_one_ready_pod_per_node(&env, set, &nodes, new_image).await;
    for pod in set_pods(&env, set).await {
        let annotations = pod.metadata.annotations.unwrap_or_default();
        assert!(
            annotations.contains_key(everynode_api::labels::PRE_PULLED_ANNOTATION),
            "{:?} was not made on pulled images",
            pod.metadata.name
        );
    }
}
