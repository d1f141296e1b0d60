//! The controller through control-plane crashes, on a cluster of its own: kube-apiserver
//! SIGKILLed and started again mid-rollout, then etcd. An outside observer samples the pods all
//! along: no node ever runs two live pods, no more nodes than `maxUnavailable` lack a ready pod,
//! the rollout converges without waiting for the 5-minute resync, and the controller keeps
//! running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::*;
use everynode_api::DaemonSet;
use everynode_runtime::Target;
use everynode_testkit::{Component, LocalCluster, TestEnv, pods};
use kube::api::PostParams;
use serde_json::json;

/// The worst the observer saw: live pods on one node, and nodes without a ready pod.
#[derive(Default)]
struct Observed {
    most_pods_on_a_node: AtomicUsize,
    most_nodes_unready: AtomicUsize,
    samples: AtomicUsize,
    stop: AtomicBool,
}

/// Samples the set's pods every 100 ms until stopped (failed reads, e.g. while the apiserver is
/// down, are skipped).
fn observe(env: &TestEnv, nodes: &[String]) -> (Arc<Observed>, tokio::task::JoinHandle<()>) {
    let observed = Arc::new(Observed::default());
    let (env_pods, nodes, seen) = (
        env.api::<k8s_openapi::api::core::v1::Pod>(),
        nodes.to_vec(),
        observed.clone(),
    );
    let task = tokio::spawn(async move {
        while !seen.stop.load(Ordering::SeqCst) {
            let list = env_pods
                .list(&kube::api::ListParams::default().labels("app=agent"))
                .await;
            if let Ok(list) = list {
                let live: Vec<_> = list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect();
                let per_node = |node: &String| {
                    live.iter()
                        .filter(|p| pinned_node(p).as_ref() == Some(node))
                        .count()
                };
                let most = nodes.iter().map(per_node).max().unwrap_or(0);
                let unready = nodes
                    .iter()
                    .filter(|node| {
                        !live
                            .iter()
                            .any(|p| pinned_node(p).as_ref() == Some(*node) && pods::is_ready(p))
                    })
                    .count();
                seen.most_pods_on_a_node.fetch_max(most, Ordering::SeqCst);
                seen.most_nodes_unready.fetch_max(unready, Ordering::SeqCst);
                seen.samples.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (observed, task)
}

/// Rolls the set to `image` with `component` SIGKILLed right after the rollout started and
/// started again 3 s later; returns the seconds from the restart to convergence.
async fn roll_through_a_crash(
    cluster: &mut LocalCluster,
    env: &TestEnv,
    nodes: &[String],
    image: &str,
    component: Component,
) -> f64 {
    patch_set(&env.api::<DaemonSet>(), new_image(image), "new image").await;
    everynode_testkit::eventually("the rollout to start", TIMEOUT, || async {
        let started = set_pods(env, "agent")
            .await
            .iter()
            .any(|p| image_of(p).as_deref() == Some(image));
        if started {
            Ok(())
        } else {
            Err("no new pod yet".to_owned())
        }
    })
    .await;
    cluster.kill_component(component).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start_component(component).await;
    let restarted = Instant::now();
    wait_one_ready_pod_per_node(env, "agent", nodes, image).await;
    restarted.elapsed().as_secs_f64()
}

#[tokio::test]
async fn rollouts_survive_apiserver_and_etcd_crashes_without_duplicates_or_budget_breach() {
    let mut cluster = LocalCluster::start(0, false).await;
    let env = TestEnv::on(cluster.info().clone(), "restarts").await;
    let controller = start_controller(&env, Target::Everynode).await;
    let nodes = env.add_nodes(6).await;
    env.api::<DaemonSet>()
        .create(
            &PostParams::default(),
            &set_with(&env, json!({"maxUnavailable": 1})),
        )
        .await
        .unwrap_or_else(|e| panic!("create set: {e}"));
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    let (observed, observer) = observe(&env, &nodes);

    let apiserver = roll_through_a_crash(
        &mut cluster,
        &env,
        &nodes,
        "agent:v2",
        Component::KubeApiserver,
    )
    .await;
    let etcd = roll_through_a_crash(&mut cluster, &env, &nodes, "agent:v3", Component::Etcd).await;
    observed.stop.store(true, Ordering::SeqCst);
    let _ = observer.await;

    let most_pods = observed.most_pods_on_a_node.load(Ordering::SeqCst);
    let most_unready = observed.most_nodes_unready.load(Ordering::SeqCst);
    let samples = observed.samples.load(Ordering::SeqCst);
    println!(
        "converged {apiserver:.1} s after the apiserver restart and {etcd:.1} s after the etcd \
         restart; {samples} samples: at most {most_pods} live pod(s) on a node, at most \
         {most_unready} node(s) without a ready pod"
    );
    assert!(samples > 50, "too few samples: {samples}");
    assert_eq!(most_pods, 1, "a node ran two live pods");
    assert!(
        most_unready <= 1,
        "{most_unready} nodes lacked a ready pod; maxUnavailable is 1"
    );
    assert!(controller.is_running(), "the controller task ended");
    drop(controller);
    drop(env);
    cluster.down().await;
}
