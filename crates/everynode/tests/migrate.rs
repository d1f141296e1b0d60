//! `everynode migrate` on a cluster whose built-in DaemonSet controller runs: an apps/v1 set
//! on 10 nodes becomes an everynode set and back, every pod keeping its UID, with a rollout in
//! between; `--dry-run` changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use everynode_testkit::deploy::{controller_account, token_kubeconfig};
use everynode_testkit::{LocalCluster, TestEnv, eventually};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::PostParams;

mod common;

use common::{controller_command, everynode, live_agent_pods, plain_set, wait_ready_pods};

const TIMEOUT: Duration = Duration::from_secs(90);

/// `everynode ARGS -n NS` with the admin kubeconfig: (exit code, stdout + stderr).
async fn run(env: &TestEnv, args: &[&str]) -> (i32, String) {
    let mut all = args.to_vec();
    all.extend(["-n", env.namespace()]);
    let (code, out, err) = everynode(env, &all).await;
    (code, format!("{out}{err}"))
}

/// Live pods by name: (UID, UID of their controller).
async fn pods_and_controllers(env: &TestEnv) -> BTreeMap<String, (String, String)> {
    live_agent_pods(env)
        .await
        .into_iter()
        .map(|p| {
            let controller = p
                .owner_references()
                .iter()
                .find(|r| r.controller == Some(true))
                .map(|r| r.uid.clone())
                .unwrap_or_default();
            (p.name_any(), (p.uid().unwrap_or_default(), controller))
        })
        .collect()
}

#[tokio::test]
async fn migrate_keeps_every_pod_and_undo_gives_the_built_in_set_back() {
    let cluster = LocalCluster::start(0, true).await;
    let env = TestEnv::on(cluster.info().clone(), "migrate").await;
    env.add_nodes(10).await;
    everynode_testkit::install_crd(&env.client()).await;
    let built_in: DaemonSet =
        serde_json::from_value(plain_set(&env, "apps/v1", "agent:v1")).expect("the set decodes");
    env.api::<DaemonSet>()
        .create(&PostParams::default(), &built_in)
        .await
        .expect("create the apps/v1 set");
    wait_ready_pods(&env, "agent:v1", 10).await;
    let before = pods_and_controllers(&env).await;
    let account = controller_account(&env, "migrate", |_| {}).await;
    let _controller = controller_command(&env, &token_kubeconfig(&env, &account).await)
        .spawn()
        .expect("start everynode controller");

    let (code, planned) = run(&env, &["migrate", "daemonset/agent", "--dry-run"]).await;
    assert_eq!(code, 0, "{planned}");
    assert!(
        planned.contains("1. create daemonset.everynode.dev/agent"),
        "{planned}"
    );
    assert!(
        planned.contains("4. unfreeze daemonset.everynode.dev/agent"),
        "{planned}"
    );
    let sets = env.api::<everynode_api::DaemonSet>();
    assert!(
        sets.get_opt("agent").await.expect("read").is_none(),
        "--dry-run created the set"
    );

    let (code, migrated) = run(&env, &["migrate", "daemonset/agent", "--timeout", "90s"]).await;
    assert_eq!(code, 0, "{migrated}");
    assert!(
        migrated.contains("done: no pod was restarted (10 pod(s), the same UIDs)"),
        "{migrated}"
    );
    let everynode_uid = sets
        .get("agent")
        .await
        .expect("the everynode set")
        .uid()
        .unwrap_or_default();
    let after = pods_and_controllers(&env).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (name, (uid, controller)) in &after {
        assert_eq!(uid, &before[name].0, "{name} was replaced");
        assert_eq!(controller, &everynode_uid, "{name} is not adopted");
    }
    assert!(
        env.api::<DaemonSet>()
            .get_opt("agent")
            .await
            .expect("read")
            .is_none()
    );
    // Nothing looks out of date: the adopted revision is the current one.
    eventually(
        "the everynode set counts 10 updated, available pods",
        TIMEOUT,
        || async {
            let set = sets.get("agent").await.map_err(|e| e.to_string())?;
            let status = set.status.clone().unwrap_or_default();
            let settled = status.observed_generation == set.metadata.generation
                && status.updated_number_scheduled == Some(10)
                && status.number_available == Some(10)
                && set.spec.frozen.is_none();
            settled.then_some(()).ok_or(format!("{status:?}"))
        },
    )
    .await;
    assert_eq!(
        pods_and_controllers(&env).await,
        after,
        "a pod changed after the migration"
    );

    // A rollout afterwards, by the everynode controller.
    let (code, out) = run(&env, &["set", "image", "agent", "agent=agent:v2"]).await;
    assert_eq!(code, 0, "{out}");
    wait_ready_pods(&env, "agent:v2", 10).await;
    let rolled = pods_and_controllers(&env).await;

    // Undo: the built-in controller adopts the same pods again.
    let (code, undone) = run(&env, &["migrate", "ds/agent", "--undo"]).await;
    assert_eq!(code, 0, "{undone}");
    assert!(
        undone.contains("done: no pod was restarted (10 pod(s), the same UIDs)"),
        "{undone}"
    );
    let built_in_uid = env
        .api::<DaemonSet>()
        .get("agent")
        .await
        .expect("the apps/v1 set")
        .uid()
        .unwrap_or_default();
    for (name, (uid, controller)) in pods_and_controllers(&env).await {
        assert_eq!(uid, rolled[&name].0, "{name} was replaced");
        assert_eq!(controller, built_in_uid, "{name} is not adopted");
    }
    assert!(sets.get_opt("agent").await.expect("read").is_none());
    let record = env
        .api::<ConfigMap>()
        .get_opt("agent.everynode-migration")
        .await
        .expect("read");
    assert!(record.is_none(), "the undo record is left");
    let (code, again) = run(&env, &["migrate", "ds/agent", "--undo"]).await;
    assert_eq!(code, 0, "{again}");
}
