//! A controller frozen (SIGSTOP) while the cluster changes under it — a daemon pod deleted, a
//! node joining — and etcd compacted and the apiserver restarted meanwhile, so every watch it
//! resumes is expired (410 Gone) and must list again. Woken, it converges without waiting for
//! its 5-minute resync, creates no duplicate pod and keeps running.

use std::time::{Duration, Instant};

use everynode_api::DaemonSet;
use everynode_testkit::deploy::{controller_account, token_kubeconfig};
use everynode_testkit::{Component, LocalCluster, TestEnv, eventually, pods};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};

mod common;

use common::{controller_command, live_agent_pods, plain_set, signal};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Live pods of the set per node name.
async fn live_pods(env: &TestEnv) -> Vec<(String, bool)> {
    live_agent_pods(env)
        .await
        .iter()
        .filter_map(|p| {
            let node = everynode_core::target_node_name(p).ok()?;
            Some((node, pods::is_ready(p)))
        })
        .collect()
}

#[tokio::test]
async fn a_frozen_controller_relists_expired_watches_and_converges() {
    let mut cluster = LocalCluster::start(0, false).await;
    let env = TestEnv::on(cluster.info().clone(), "watch-expiry").await;
    everynode_testkit::install_crd(&env.client()).await;
    let mut nodes = env.add_nodes(3).await;
    let account = controller_account(&env, "expiry", |_| {}).await;
    let log = cluster
        .info()
        .dir
        .logs_dir()
        .join("watch-expiry-controller.log");
    let mut controller = controller_command(&env, &token_kubeconfig(&env, &account).await)
        .env("EVERYNODE_LOG", "info,kube=warn")
        .stderr(std::fs::File::create(&log).expect("controller log"))
        .spawn()
        .expect("start everynode controller");

    let set: DaemonSet =
        serde_json::from_value(plain_set(&env, "everynode.dev/v1alpha1", "agent:v1"))
            .expect("the test set decodes");
    env.api::<DaemonSet>()
        .create(&PostParams::default(), &set)
        .await
        .expect("create set");
    let converged = |expected: Vec<String>| {
        let env = &env;
        async move {
            let live = live_pods(env).await;
            let mut placed: Vec<String> = live.iter().map(|(n, _)| n.clone()).collect();
            placed.sort();
            let mut want = expected;
            want.sort();
            if placed == want && live.iter().all(|(_, ready)| *ready) {
                Ok(())
            } else {
                Err(format!("pods on {placed:?}"))
            }
        }
    };
    eventually("a ready pod on each node", TIMEOUT, || {
        converged(nodes.clone())
    })
    .await;

    // Frozen: a pod deleted and a node joining, etcd compacted, the apiserver restarted.
    signal(&controller, "STOP");
    let victim = env
        .api::<Pod>()
        .list(&ListParams::default().labels("app=agent"))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .next()
        .expect("a pod");
    env.api::<Pod>()
        .delete(
            victim.metadata.name.as_deref().unwrap_or_default(),
            &DeleteParams::default(),
        )
        .await
        .expect("delete a daemon pod");
    nodes.extend(env.add_nodes(1).await);
    let revision = everynode_testkit::etcd::compact(cluster.info()).await;
    cluster.kill_component(Component::KubeApiserver).await;
    cluster.start_component(Component::KubeApiserver).await;

    signal(&controller, "CONT");
    let woken = Instant::now();
    eventually("a ready pod on each node again", TIMEOUT, || {
        converged(nodes.clone())
    })
    .await;
    let took = woken.elapsed();
    println!("etcd compacted at revision {revision}; converged {took:.1?} after waking");
    assert!(
        controller.try_wait().expect("controller status").is_none(),
        "the controller exited"
    );
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        output.contains("410") || output.contains("too old"),
        "no expired watch in the controller's log:\n{output}"
    );
    drop(controller);
    drop(env);
    cluster.down().await;
}
