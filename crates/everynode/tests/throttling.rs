//! The controller throttled by API Priority and Fairness, on a cluster of its own with 1,000
//! nodes: a FlowSchema sends every request of the controller's ServiceAccount to a priority level
//! with the smallest concurrency share (1 of about 250: a few seats), that rejects what does not
//! fit at once with 429. The set is created and rolled out: an outside watcher checks every pod
//! event (no duplicate, budget held), both converge, and the output gives the 429s (from the
//! audit log), the controller's retries (from its metrics) and the converge times.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use everynode_api::DaemonSet;
use everynode_testkit::audit::RequestCounts;
use everynode_testkit::deploy::{
    SERVICE_ACCOUNT_NAMESPACE, apply, controller_account, token_kubeconfig,
};
use everynode_testkit::ledger::WatchedLedger;
use everynode_testkit::{LocalCluster, TestEnv, eventually};
use kube::api::DynamicObject;
use serde_json::json;

mod common;

use common::{agent_set, apply_set, controller_command_on, free_port, http_get, ready_pods_on};

const NODES: usize = 1000;
/// 10 % of the nodes, as `maxUnavailable: 10%` says.
const MAX_UNAVAILABLE: usize = NODES / 10;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(600);
const PRIORITY_LEVEL: &str = "everynode-throttled";

/// A priority level with one concurrency share that neither lends nor borrows seats and rejects
/// at once, and a FlowSchema sending everything `account` asks to it.
async fn throttle(env: &TestEnv, account: &str) {
    let objects = [
        json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
            "metadata": {"name": PRIORITY_LEVEL},
            "spec": {"type": "Limited", "limited": {
                "nominalConcurrencyShares": 1, "lendablePercent": 0, "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"}
            }}
        }),
        json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
            "metadata": {"name": PRIORITY_LEVEL},
            "spec": {
                "priorityLevelConfiguration": {"name": PRIORITY_LEVEL},
                "matchingPrecedence": 500,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [{
                    "subjects": [{"kind": "ServiceAccount", "serviceAccount":
                        {"name": account, "namespace": SERVICE_ACCOUNT_NAMESPACE}}],
                    "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                       "clusterScope": true, "namespaces": ["*"]}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
                }]
            }
        }),
    ];
    for object in objects {
        let object: DynamicObject = serde_json::from_value(object).expect("an APF object");
        apply(&env.client(), &object, false)
            .await
            .unwrap_or_else(|e| panic!("apply {PRIORITY_LEVEL}: {e}"));
    }
}

/// The seats the apiserver gives the priority level (`apiserver_flowcontrol_nominal_limit_seats`).
async fn seats(env: &TestEnv) -> String {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("a request");
    let metrics = env
        .client()
        .request_text(request)
        .await
        .unwrap_or_else(|e| format!("no metrics: {e}"));
    let label = format!("priority_level=\"{PRIORITY_LEVEL}\"");
    metrics
        .lines()
        .find(|l| l.starts_with("apiserver_flowcontrol_nominal_limit_seats") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("?")
        .to_owned()
}

/// Waits until every node runs a Ready `image` pod and the set's status says so; returns the
/// seconds it took.
async fn converge(env: &TestEnv, image: &str) -> f64 {
    let start = Instant::now();
    let sets = env.api::<DaemonSet>();
    eventually(
        &format!("{NODES} Ready {image} pods"),
        CONVERGE_TIMEOUT,
        || async {
            let ready = ready_pods_on(env, image).await;
            let set = sets.get("agent").await.map_err(|e| e.to_string())?;
            let status = set.status.unwrap_or_default();
            let generation = set.metadata.generation;
            let updated = status.updated_number_scheduled.unwrap_or_default();
            if ready == NODES
                && status.observed_generation == generation
                && updated == NODES as i32
                && status.number_available.unwrap_or_default() == NODES as i32
            {
                Ok(())
            } else {
                Err(format!("{ready} ready, status: {updated} updated"))
            }
        },
    )
    .await;
    start.elapsed().as_secs_f64()
}

/// The controller's `everynode_api_retries_total` lines.
async fn retries(http_port: u16) -> String {
    let (_, metrics) = http_get(http_port, "/metrics").await.unwrap_or_default();
    metrics
        .lines()
        .filter(|l| l.starts_with("everynode_api_retries_total"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test]
async fn a_throttled_controller_creates_and_rolls_out_1000_nodes_without_duplicates() {
    let cluster = LocalCluster::start(0, false).await;
    let env = TestEnv::on(cluster.info().clone(), "throttled").await;
    everynode_testkit::install_crd(&env.client()).await;
    let nodes: BTreeSet<String> = env
        .create_nodes_with(NODES, |_| {})
        .await
        .into_iter()
        .collect();
    let account = controller_account(&env, "throttled", |_| {}).await;
    let user = format!("system:serviceaccount:{SERVICE_ACCOUNT_NAMESPACE}:{account}");
    throttle(&env, &account).await;
    let http_port = free_port();
    let controller =
        controller_command_on(&env, &token_kubeconfig(&env, &account).await, http_port)
            .spawn()
            .expect("start everynode controller");

    let ledger = WatchedLedger::start(env.api(), "app=agent");
    apply_set(&env, &agent_set(&env, "agent:v1")).await;
    let create_seconds = converge(&env, "agent:v1").await;

    ledger.lock().check_budget(nodes.clone(), MAX_UNAVAILABLE);
    apply_set(&env, &agent_set(&env, "agent:v2")).await;
    let rollout_seconds = converge(&env, "agent:v2").await;

    let audit = std::fs::read_to_string(env.cluster().dir.audit_log()).expect("the audit log");
    let requests = RequestCounts::from_text(&audit, &user);
    let throttled = requests.failed.get(&429).copied().unwrap_or_default();
    let (seats, retries) = (seats(&env).await, retries(http_port).await);
    let (events, violations) = {
        let seen = ledger.lock();
        (seen.events(), seen.violations().to_vec())
    };
    println!(
        "{NODES} nodes, priority level with {seats} seat(s): created in {create_seconds:.1} s, \
         rolled out in {rollout_seconds:.1} s; {} requests, {throttled} answered 429, {} writes; \
         controller: {retries}; watcher: {events} pod events, {} violations",
        requests.total(),
        requests.writes(),
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "invariants broken: {:#?}",
        &violations[..violations.len().min(20)]
    );
    assert!(
        throttled > 0,
        "nothing was throttled: the test proves nothing"
    );
    drop(controller);
    drop(env);
    cluster.down().await;
}
