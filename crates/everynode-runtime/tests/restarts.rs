//! The controller through control-plane crashes, on a cluster of its own: kube-apiserver
//! SIGKILLed and started again mid-rollout, then etcd. An outside observer samples the pods all
//! along: no node ever runs two live pods, no more nodes than `maxUnavailable` lack a ready pod,
//! the rollout converges without waiting for the 5-minute resync, and the controller keeps
//! running. (A stand-in for the kubelet sync loop KWOK lacks marks a pod Ready that KWOK lost
//! across the etcd restart; see `sync_loop_stand_in`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::*;
use everynode_api::DaemonSet;
use everynode_runtime::Target;
use everynode_testkit::{Component, LocalCluster, TestEnv, pods};
use kube::ResourceExt as _;
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
/// started again 3 s later; returns the seconds from the restart to convergence and the pods the
/// kubelet stand-in had to mark Ready.
async fn roll_through_a_crash(
    cluster: &mut LocalCluster,
    env: &TestEnv,
    nodes: &[String],
    image: &str,
    component: Component,
) -> (f64, usize) {
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
    let converged = AtomicBool::new(false);
    let (marked, ()) = tokio::join!(sync_loop_stand_in(env, &converged), async {
        wait_one_ready_pod_per_node(env, "agent", nodes, image).await;
        converged.store(true, Ordering::SeqCst);
    });
    (restarted.elapsed().as_secs_f64(), marked)
}

/// Stands in for a kubelet's sync loop, which KWOK lacks, until `stop`: KWOK can lose a pod bound
/// just as etcd went down, which then stays not Ready for good. A pod of the set seen bound and
/// not Ready for 10 s is marked Ready through its status, as its kubelet would report it. The
/// controller sees that only through its own pod watch, so one that stopped watching still fails
/// the test. Returns how many pods it marked.
async fn sync_loop_stand_in(env: &TestEnv, stop: &AtomicBool) -> usize {
    let mut unready_since: std::collections::BTreeMap<String, Instant> = Default::default();
    let mut marked = 0;
    while !stop.load(Ordering::SeqCst) {
        let bound_unready: Vec<String> = set_pods(env, "agent")
            .await
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && !pods::is_ready(p))
            .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
            .map(|p| p.name_any())
            .collect();
        unready_since.retain(|name, _| bound_unready.contains(name));
        for name in bound_unready {
            let since = *unready_since
                .entry(name.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(10) {
                if env.try_mark_pod_ready(&name).await.is_ok() {
                    marked += 1;
                }
                unready_since.remove(&name);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    marked
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

    let (apiserver, marked_after_apiserver) = roll_through_a_crash(
        &mut cluster,
        &env,
        &nodes,
        "agent:v2",
        Component::KubeApiserver,
    )
    .await;
    let (etcd, marked_after_etcd) =
        roll_through_a_crash(&mut cluster, &env, &nodes, "agent:v3", Component::Etcd).await;
    observed.stop.store(true, Ordering::SeqCst);
    let _ = observer.await;

    let most_pods = observed.most_pods_on_a_node.load(Ordering::SeqCst);
    let most_unready = observed.most_nodes_unready.load(Ordering::SeqCst);
    let samples = observed.samples.load(Ordering::SeqCst);
    println!(
        "converged {apiserver:.1} s after the apiserver restart and {etcd:.1} s after the etcd \
         restart; {samples} samples: at most {most_pods} live pod(s) on a node, at most \
         {most_unready} node(s) without a ready pod; pods marked Ready for KWOK: \
         {marked_after_apiserver} and {marked_after_etcd}"
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
