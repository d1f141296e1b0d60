//! Acceptance tests of the local control plane (issue 3), each against the real cluster:
//! nodes and pod lifecycle, garbage collection, EndpointSlices, pod GC after node deletion,
//! scheduler host-port conflicts, the built-in DaemonSet controller switch with two clusters at
//! once, and the test kit's own node and pod-status helpers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use everynode_testkit::{
    LocalCluster, TestEnv, consistently, eventually, obs, pods, shared_cluster,
};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Node, Pod, PodTemplateSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

const POD_TIMEOUT: Duration = Duration::from_secs(60);

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

#[tokio::test]
async fn fifty_nodes_become_ready_and_a_pinned_pod_runs_and_goes() {
    let env = TestEnv::new("fifty-nodes").await;
    let nodes = env.add_nodes(50).await; // waits until all 50 are Ready
    assert_eq!(nodes.len(), 50);

    let listed = env
        .nodes_api()
        .list(&ListParams::default().labels(&env.group_label_selector()))
        .await
        .expect("API request failed");
    assert_eq!(listed.items.len(), 50);
    let mut zones: BTreeMap<String, usize> = BTreeMap::new();
    for n in &listed.items {
        let l = n.metadata.labels.clone().unwrap_or_default();
        assert_eq!(l.get("kubernetes.io/os").map(String::as_str), Some("linux"));
        assert_eq!(
            l.get("kubernetes.io/arch").map(String::as_str),
            Some("amd64")
        );
        assert_eq!(l.get("kubernetes.io/hostname"), n.metadata.name.as_ref());
        *zones
            .entry(
                l.get("topology.kubernetes.io/zone")
                    .cloned()
                    .unwrap_or_default(),
            )
            .or_default() += 1;
    }
    assert_eq!(
        zones,
        BTreeMap::from([
            ("zone-a".into(), 17),
            ("zone-b".into(), 17),
            ("zone-c".into(), 16)
        ])
    );

    let target = &nodes[17];
    env.create_pod(&pods::pod(
        "pinned",
        &labels(&[("app", "pinned")]),
        Some(target),
    ))
    .await;
    let pod = env.wait_pod_running("pinned", POD_TIMEOUT).await;
    assert_eq!(node_of(&pod).as_ref(), Some(target));
    let ip = pod.status.and_then(|s| s.pod_ip).unwrap_or_default();
    assert!(
        ip.starts_with("10.244."),
        "pod IP {ip} not from the KWOK pod CIDR 10.244.0.0/16"
    );

    env.api::<Pod>()
        .delete("pinned", &DeleteParams::default())
        .await
        .expect("API request failed");
    env.wait_pod_gone("pinned", Duration::from_secs(30)).await;
}

async fn gc_case(env: &TestEnv, node: &str, policy: &str, dp: DeleteParams) {
    let cms: Api<ConfigMap> = env.api();
    let owner_name = format!("owner-{policy}");
    let owner = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some(owner_name.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create owner ConfigMap");
    let oref = OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner_name.clone(),
        uid: owner.metadata.uid.clone().expect("owner has a uid"),
        block_owner_deletion: Some(true),
        controller: None,
    };
    let dep_cm = format!("dependent-cm-{policy}");
    cms.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some(dep_cm.clone()),
                owner_references: Some(vec![oref.clone()]),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .expect("create dependent ConfigMap");
    let dep_pod = format!("dependent-pod-{policy}");
    let mut pod = pods::pod(&dep_pod, &labels(&[("gc", policy)]), Some(node));
    pod.metadata.owner_references = Some(vec![oref]);
    env.create_pod(&pod).await;
    env.wait_pod_running(&dep_pod, POD_TIMEOUT).await;

    cms.delete(&owner_name, &dp)
        .await
        .expect("API request failed");
    let pods_api: Api<Pod> = env.api();
    eventually(
        &format!("{policy} deletion to remove owner and dependents"),
        Duration::from_secs(60),
        || {
            let (cms, pods_api) = (cms.clone(), pods_api.clone());
            let (owner_name, dep_cm, dep_pod) =
                (owner_name.clone(), dep_cm.clone(), dep_pod.clone());
            async move {
                let left: Vec<String> = [
                    cms.get_opt(&owner_name)
                        .await
                        .map_err(obs("get owner"))?
                        .map(|_| owner_name),
                    cms.get_opt(&dep_cm)
                        .await
                        .map_err(obs("get cm"))?
                        .map(|_| dep_cm),
                    pods_api
                        .get_opt(&dep_pod)
                        .await
                        .map_err(obs("get pod"))?
                        .map(|_| dep_pod),
                ]
                .into_iter()
                .flatten()
                .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("still present: {left:?}"))
                }
            }
        },
    )
    .await;
}

#[tokio::test]
async fn garbage_collector_deletes_dependents_in_background_and_foreground() {
    let env = TestEnv::new("gc").await;
    let nodes = env.add_nodes(1).await;
    gc_case(&env, &nodes[0], "background", DeleteParams::background()).await;
    gc_case(&env, &nodes[0], "foreground", DeleteParams::foreground()).await;
}

#[tokio::test]
async fn service_gets_endpoint_slices_listing_its_ready_pods() {
    let env = TestEnv::new("endpoints").await;
    let nodes = env.add_nodes(2).await;
    let app = labels(&[("app", "web")]);
    for i in 0..3 {
        let p = pods::with_port(
            pods::pod(&format!("web-{i}"), &app, Some(&nodes[i % 2])),
            8080,
            None,
        );
        env.create_pod(&p).await;
    }
    // A pod with other labels must not show up.
    env.create_pod(&pods::pod(
        "other",
        &labels(&[("app", "other")]),
        Some(&nodes[0]),
    ))
    .await;
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..3 {
        let p = env.wait_pod_running(&format!("web-{i}"), POD_TIMEOUT).await;
        expected.insert(p.status.and_then(|s| s.pod_ip).unwrap(), format!("web-{i}"));
    }
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(app.clone()),
            ports: Some(vec![ServicePort {
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    env.api::<Service>()
        .create(&PostParams::default(), &svc)
        .await
        .expect("API request failed");

    let slices: Api<EndpointSlice> = env.api();
    // Ready endpoints by IP -> (pod name, ready)
    let read = || {
        let slices = slices.clone();
        async move {
            let list = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                .await
                .map_err(obs("list EndpointSlices"))?;
            let mut seen: BTreeMap<String, (String, bool)> = BTreeMap::new();
            for s in list.items {
                for e in s.endpoints.unwrap_or_default() {
                    let name = e.target_ref.and_then(|r| r.name).unwrap_or_default();
                    let ready = e.conditions.and_then(|c| c.ready).unwrap_or(false);
                    for a in e.addresses {
                        seen.insert(a, (name.clone(), ready));
                    }
                }
            }
            Ok::<_, String>(seen)
        }
    };
    let all_ready: BTreeMap<String, (String, bool)> = expected
        .iter()
        .map(|(ip, n)| (ip.clone(), (n.clone(), true)))
        .collect();
    eventually(
        "EndpointSlices of service web to list the 3 ready pods",
        Duration::from_secs(30),
        || {
            let all_ready = all_ready.clone();
            async move {
                let seen = read().await?;
                if seen == all_ready {
                    Ok(())
                } else {
                    Err(format!("endpoints {seen:?}"))
                }
            }
        },
    )
    .await;

    // An unready pod stays listed but not ready (status helper through the status subresource).
    env.mark_pod_unready("web-1").await;
    eventually(
        "web-1 to be listed as not ready",
        Duration::from_secs(30),
        || async move {
            let seen = read().await?;
            let web1 = seen.values().find(|(n, _)| n == "web-1").cloned();
            if web1 == Some(("web-1".to_owned(), false)) && seen.len() == 3 {
                Ok(())
            } else {
                Err(format!("endpoints {seen:?}"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn deleting_a_node_lets_pod_gc_remove_its_pods() {
    let env = TestEnv::new("podgc").await;
    let nodes = env.add_nodes(2).await;
    env.create_pod(&pods::pod("doomed", &BTreeMap::new(), Some(&nodes[0])))
        .await;
    env.create_pod(&pods::pod("survivor", &BTreeMap::new(), Some(&nodes[1])))
        .await;
    env.wait_pod_running("doomed", POD_TIMEOUT).await;
    env.wait_pod_running("survivor", POD_TIMEOUT).await;

    env.remove_node(&nodes[0]).await;
    // pod-garbage-collector: 20 s sync loop + 40 s quarantine for pods on missing nodes.
    env.wait_pod_gone("doomed", Duration::from_secs(150)).await;
    let survivor = env
        .api::<Pod>()
        .get("survivor")
        .await
        .expect("API request failed");
    assert!(
        survivor.metadata.deletion_timestamp.is_none(),
        "pod on the remaining node was touched"
    );
    assert_eq!(env.node_names().await, vec![nodes[1].clone()]);
}

#[tokio::test]
async fn scheduler_refuses_a_second_pod_with_the_same_host_port_and_says_why() {
    let env = TestEnv::new("hostport").await;
    let nodes = env.add_nodes(1).await;
    let node = Some(nodes[0].as_str());
    env.create_pod(&pods::with_port(
        pods::pod("first", &BTreeMap::new(), node),
        80,
        Some(8080),
    ))
    .await;
    env.wait_pod_running("first", POD_TIMEOUT).await;
    env.create_pod(&pods::with_port(
        pods::pod("second", &BTreeMap::new(), node),
        80,
        Some(8080),
    ))
    .await;
    env.create_pod(&pods::with_port(
        pods::pod("other-port", &BTreeMap::new(), node),
        80,
        Some(8081),
    ))
    .await;
    env.wait_pod_running("other-port", POD_TIMEOUT).await;

    let api: Api<Pod> = env.api();
    let (reason, message) = eventually(
        "PodScheduled=False on pod second",
        Duration::from_secs(30),
        || {
            let api = api.clone();
            async move {
                let p = api.get("second").await.map_err(obs("get second"))?;
                match pods::condition(&p, "PodScheduled") {
                    Some((status, reason, message)) if status == "False" => Ok((reason, message)),
                    other => Err(format!("PodScheduled={other:?}, node={:?}", node_of(&p))),
                }
            }
        },
    )
    .await;
    assert_eq!(reason, "Unschedulable");
    assert!(
        message.contains("ports"),
        "message does not mention ports: {message}"
    );
    let second = api.get("second").await.expect("API request failed");
    assert_eq!(
        node_of(&second),
        None,
        "second pod was bound despite the port conflict"
    );
}

#[tokio::test]
async fn node_helpers_steer_the_scheduler() {
    let env = TestEnv::new("node-helpers").await;
    let nodes = env.add_nodes(1).await;
    let n = nodes[0].as_str();
    let api: Api<Pod> = env.api();
    let pending = |name: &'static str| {
        let api = api.clone();
        async move {
            let p = api.get(name).await.map_err(obs("get pod"))?;
            match pods::condition(&p, "PodScheduled") {
                Some((s, r, _)) if s == "False" && r == "Unschedulable" => Ok(()),
                other => Err(format!("PodScheduled={other:?}")),
            }
        }
    };

    env.cordon(n).await;
    env.create_pod(&pods::pod("after-cordon", &BTreeMap::new(), Some(n)))
        .await;
    eventually(
        "after-cordon to be unschedulable",
        Duration::from_secs(30),
        || pending("after-cordon"),
    )
    .await;
    env.uncordon(n).await;
    env.wait_pod_running("after-cordon", POD_TIMEOUT).await;

    env.taint_node(n, "example.com/dedicated", Some("x"), "NoSchedule")
        .await;
    env.create_pod(&pods::pod("after-taint", &BTreeMap::new(), Some(n)))
        .await;
    eventually(
        "after-taint to be unschedulable",
        Duration::from_secs(30),
        || pending("after-taint"),
    )
    .await;
    env.untaint_node(n, "example.com/dedicated").await;
    env.wait_pod_running("after-taint", POD_TIMEOUT).await;

    env.label_node(n, "example.com/disk", Some("ssd")).await;
    let node = env.nodes_api().get(n).await.expect("API request failed");
    assert_eq!(
        node.metadata
            .labels
            .unwrap()
            .get("example.com/disk")
            .map(String::as_str),
        Some("ssd")
    );
    env.label_node(n, "example.com/disk", None).await;
    let node = env.nodes_api().get(n).await.expect("API request failed");
    assert!(
        !node
            .metadata
            .labels
            .unwrap()
            .contains_key("example.com/disk")
    );
}

#[tokio::test]
async fn pod_status_helpers_write_through_the_status_subresource() {
    let env = TestEnv::new("pod-status").await;
    let nodes = env.add_nodes(1).await;
    for name in ["a", "b"] {
        env.create_pod(&pods::pod(name, &BTreeMap::new(), Some(&nodes[0])))
            .await;
        env.wait_pod_running(name, POD_TIMEOUT).await;
    }
    let p = env.mark_pod_unready("a").await;
    assert!(!pods::is_ready(&p));
    // KWOK only acts on Pending pods, so the state sticks.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!pods::is_ready(
        &env.api::<Pod>().get("a").await.expect("API request failed")
    ));
    let p = env.mark_pod_ready("a").await;
    assert!(pods::is_ready(&p));
    let p = env.mark_pod_failed("a").await;
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Failed"));
    let p = env.mark_pod_succeeded("b").await;
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded")
    );
    assert!(!pods::is_ready(&p));
}

fn daemonset(name: &str, node_selector: BTreeMap<String, String>) -> DaemonSet {
    let sel = labels(&[("ds", name)]);
    let mut template_pod = pods::pod(name, &sel, None);
    if let Some(spec) = template_pod.spec.as_mut() {
        spec.node_selector = Some(node_selector);
    }
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(sel.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(sel),
                    ..Default::default()
                }),
                spec: template_pod.spec,
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Creates 2 schedulable nodes and 1 NoSchedule-tainted node in the env's group and a DaemonSet
/// selecting the group; returns the names of the schedulable nodes.
async fn daemonset_fixture(env: &TestEnv) -> BTreeSet<String> {
    let schedulable: BTreeSet<String> = env.add_nodes(2).await.into_iter().collect();
    env.add_nodes_with(1, |n: &mut Node| {
        n.spec.get_or_insert_with(Default::default).taints =
            Some(vec![k8s_openapi::api::core::v1::Taint {
                key: "example.com/reserved".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]);
    })
    .await;
    env.api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &daemonset("agent", env.group_selector()),
        )
        .await
        .expect("API request failed");
    schedulable
}

async fn pods_by_node(env: &TestEnv) -> Result<BTreeMap<String, usize>, String> {
    let list = env
        .api::<Pod>()
        .list(&ListParams::default().labels("ds=agent"))
        .await
        .map_err(obs("list pods"))?;
    let mut by_node = BTreeMap::new();
    for p in list.items {
        *by_node
            .entry(node_of(&p).unwrap_or_else(|| "<unbound>".into()))
            .or_insert(0) += 1;
    }
    Ok(by_node)
}

async fn expect_daemonset_pods(env: &TestEnv, schedulable: &BTreeSet<String>) {
    let want: BTreeMap<String, usize> = schedulable.iter().map(|n| (n.clone(), 1)).collect();
    eventually(
        "one DaemonSet pod per schedulable node",
        Duration::from_secs(60),
        || {
            let want = want.clone();
            async move {
                let got = pods_by_node(env).await?;
                if got == want {
                    Ok(())
                } else {
                    Err(format!("pods per node {got:?}, want {want:?}"))
                }
            }
        },
    )
    .await;
    let api: Api<DaemonSet> = env.api();
    eventually(
        "DaemonSet status to report 2 desired / 2 ready",
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let st = api
                    .get("agent")
                    .await
                    .map_err(obs("get ds"))?
                    .status
                    .unwrap_or_default();
                if st.desired_number_scheduled == 2 && st.number_ready == 2 {
                    Ok(())
                } else {
                    Err(format!(
                        "desired={} ready={}",
                        st.desired_number_scheduled, st.number_ready
                    ))
                }
            }
        },
    )
    .await;
}

async fn expect_no_daemonset_pods(env: &TestEnv) {
    consistently(
        "no DaemonSet pods without the built-in controller",
        Duration::from_secs(8),
        || async {
            let got = pods_by_node(env).await?;
            if got.is_empty() {
                Ok(())
            } else {
                Err(format!("pods appeared: {got:?}"))
            }
        },
    )
    .await;
    let ds = env
        .api::<DaemonSet>()
        .get("agent")
        .await
        .expect("API request failed");
    assert!(
        ds.status.is_none_or(|s| s.observed_generation.is_none()),
        "some controller handled the DaemonSet"
    );
}

#[tokio::test]
async fn builtin_daemonset_controller_switch_on_two_clusters_and_clean_down() {
    let shared = shared_cluster().await;
    let shared_on = shared.state.settings.builtin_daemonset_controller;
    // A second cluster with the opposite setting, running at the same time on other ports.
    let other = LocalCluster::start(1, !shared_on).await;
    assert_ne!(other.info().state.ports, shared.state.ports);
    let other_dir = other.info().dir.root().to_path_buf();
    let other_etcd = other.info().state.etcd_data_dir.clone();

    {
        let env_shared = TestEnv::new("ds-shared").await;
        let env_other = TestEnv::on(other.info().clone(), "ds-other").await;
        // Both API servers answer at once.
        env_shared
            .client()
            .apiserver_version()
            .await
            .expect("API request failed");
        env_other
            .client()
            .apiserver_version()
            .await
            .expect("API request failed");

        let (on_env, off_env) = if shared_on {
            (&env_shared, &env_other)
        } else {
            (&env_other, &env_shared)
        };
        let on_nodes = daemonset_fixture(on_env).await;
        daemonset_fixture(off_env).await;
        expect_daemonset_pods(on_env, &on_nodes).await;
        expect_no_daemonset_pods(off_env).await;
    }

    let pids: Vec<u32> = other
        .info()
        .state
        .binaries
        .keys()
        .filter_map(|c| {
            let comp = everynode_cluster::Component::from_name(c)?;
            everynode_cluster::process::read_pid(&other.info().dir.pid_file(comp))
                .ok()
                .flatten()
        })
        .collect();
    assert_eq!(
        pids.len(),
        everynode_cluster::Component::ALL.len(),
        "expected a recorded PID per component"
    );
    let reports = other.down().await;
    for r in &reports {
        assert_eq!(r.outcome, "terminated", "{} ({:?})", r.component, r.pid);
    }
    for pid in pids {
        assert!(
            !everynode_cluster::process::is_alive(pid),
            "PID {pid} still alive after down"
        );
    }
    let leftovers =
        everynode_cluster::process::processes_mentioning(&other_dir.display().to_string());
    assert!(leftovers.is_empty(), "processes left behind: {leftovers:?}");
    assert!(!other_dir.exists(), "{} not removed", other_dir.display());
    assert!(!other_etcd.exists(), "{} not removed", other_etcd.display());
    // The shared cluster is unaffected.
    shared
        .client()
        .await
        .apiserver_version()
        .await
        .expect("API request failed");
}
