//! Two `everynode controller --leader-elect` processes against the local cluster, each with a
//! token of its own ServiceAccount bound to the shipped RBAC: only the leader writes; the standby
//! keeps warm caches (ready, `everynode_leader 0`); when the leader is SIGKILLed the standby takes
//! over within the lease duration plus a few seconds; a leader frozen (SIGSTOP) past its renew
//! deadline writes nothing after that deadline (from the apiserver's audit log) and exits
//! non-zero when it wakes; a leader cut off from the apiserver (a proxy that drops its
//! connections) steps down and exits at its renew deadline, before the standby takes over.

use std::time::{Duration, Instant};

use everynode_testkit::deploy::SERVICE_ACCOUNT_NAMESPACE;
use everynode_testkit::{TestEnv, eventually};
use k8s_openapi::jiff::Timestamp;

mod common;

use common::{Replica, holder, http_get, live_agent_pods, plain_set, signal, wait_ready_pods};

const LEASE_SECONDS: u64 = 5;
const TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until the replica is ready (caches synced) and reports `everynode_leader <value>`.
async fn wait_ready_with_leader_gauge(replica: &Replica, value: u8) {
    let what = format!(
        "{} to be ready with everynode_leader {value}",
        replica.identity
    );
    eventually(&what, TIMEOUT, || async {
        let (ready, _) = http_get(replica.http_port, "/readyz").await?;
        let (_, metrics) = http_get(replica.http_port, "/metrics").await?;
        let gauge = metrics
            .lines()
            .find(|l| l.starts_with("everynode_leader "))
            .unwrap_or("no everynode_leader line")
            .to_owned();
        if ready == 200 && gauge == format!("everynode_leader {value}") {
            Ok(())
        } else {
            Err(format!("/readyz {ready}, {gauge}"))
        }
    })
    .await;
}

/// Starts a replica as the test's ServiceAccount `identity` (made with the shipped RBAC).
async fn start_replica(env: &TestEnv, identity: &str) -> Replica {
    start_replica_via(env, identity, None).await
}

/// [`start_replica`] reaching the apiserver at `server` (a proxy) instead of directly.
async fn start_replica_via(env: &TestEnv, identity: &str, server: Option<&str>) -> Replica {
    common::start_replica(env, identity, LEASE_SECONDS, server).await
}

/// Waits until `identity` holds the Lease.
async fn wait_holder(env: &TestEnv, identity: &str) {
    eventually(
        &format!("{identity} to hold the Lease"),
        TIMEOUT,
        || async {
            match holder(env).await {
                Some(h) if h == identity => Ok(()),
                other => Err(format!("holder {other:?}")),
            }
        },
    )
    .await;
}

/// Server-side applies the test's set `agent` with `image` (default strategy).
async fn apply_set(env: &TestEnv, image: &str) {
    common::apply_set(env, &plain_set(env, "everynode.dev/v1alpha1", image)).await;
}

/// Writes (anything but get, list, watch) of `user` the apiserver received after `after`.
fn writes_after(env: &TestEnv, user: &str, after: Timestamp) -> Vec<String> {
    let text = std::fs::read_to_string(env.cluster().dir.audit_log()).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["stage"] == "RequestReceived" && e["user"]["username"] == user)
        .filter(|e| !matches!(e["verb"].as_str(), Some("get" | "list" | "watch")))
        .filter(|e| {
            e["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some_and(|t| t > after)
        })
        .map(|e| {
            format!(
                "{} {} at {}",
                e["verb"], e["requestURI"], e["requestReceivedTimestamp"]
            )
        })
        .collect()
}

#[tokio::test]
async fn a_leader_frozen_past_its_renew_deadline_writes_nothing_more_and_exits() {
    let env = TestEnv::new("leader-freeze").await;
    env.add_nodes(3).await;
    everynode_testkit::install_crd(&env.client()).await;
    let mut first = start_replica(&env, "freeze-a").await;
    wait_holder(&env, "freeze-a").await;
    let second = start_replica(&env, "freeze-b").await;
    apply_set(&env, "agent:v1").await;
    wait_ready_pods(&env, "agent:v1", 3).await;
    wait_ready_with_leader_gauge(&second, 0).await;

    // Freeze the leader, then give the cluster work: a rollout and a joining node.
    signal(&first.child, "STOP");
    let frozen_at = Timestamp::now();
    apply_set(&env, "agent:v2").await;
    env.add_nodes(1).await;
    wait_holder(&env, "freeze-b").await;
    let took_over = frozen_at.duration_until(Timestamp::now());
    eprintln!("replica b took over {took_over:#} after replica a froze");

    // Wake the old leader: it must step down without writing and exit non-zero.
    signal(&first.child, "CONT");
    let exit = tokio::time::timeout(Duration::from_secs(15), first.child.wait())
        .await
        .expect("the woken leader to exit within 15 s")
        .expect("wait for the replica");
    assert!(!exit.success(), "the woken leader exited with {exit}");

    wait_ready_pods(&env, "agent:v2", 4).await;
    let renew_deadline = Duration::from_secs(LEASE_SECONDS) * 2 / 3;
    let deadline = frozen_at + renew_deadline;
    let user = format!(
        "system:serviceaccount:{SERVICE_ACCOUNT_NAMESPACE}:{}-freeze-a",
        env.namespace()
    );
    let late = writes_after(&env, &user, deadline);
    assert!(
        late.is_empty(),
        "writes of the old leader after its renew deadline: {late:?}"
    );
    drop(second);
}

#[tokio::test]
async fn standby_takes_over_when_the_leader_is_killed() {
    let env = TestEnv::new("leader").await;
    let nodes = env.add_nodes(2).await;
    everynode_testkit::install_crd(&env.client()).await;

    let mut replicas = vec![
        start_replica(&env, "replica-a").await,
        start_replica(&env, "replica-b").await,
    ];
    let leader = eventually("a leader to be elected", TIMEOUT, || async {
        holder(&env).await.ok_or_else(|| "no holder yet".to_owned())
    })
    .await;

    apply_set(&env, "agent:v1").await;
    eventually("the leader to create one pod per node", TIMEOUT, || async {
        let n = live_agent_pods(&env).await.len();
        if n == nodes.len() {
            Ok(())
        } else {
            Err(format!("{n} pods"))
        }
    })
    .await;

    // The standby has warm caches (ready) but does not reconcile; the leader does.
    for replica in &replicas {
        let leading = u8::from(replica.identity == leader);
        wait_ready_with_leader_gauge(replica, leading).await;
    }

    // SIGKILL the leader: no graceful release of the Lease.
    let index = replicas
        .iter()
        .position(|r| r.identity == leader)
        .expect("leader is ours");
    let mut killed = replicas.remove(index);
    killed.child.start_kill().expect("kill leader");
    let _ = killed.child.wait().await;
    let killed_at = Instant::now();

    let standby = replicas[0].identity.clone();
    wait_holder(&env, &standby).await;
    let takeover = killed_at.elapsed();
    eprintln!("standby took over {takeover:.1?} after the leader was killed");
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 10),
        "takeover took {takeover:?}, lease is {LEASE_SECONDS}s"
    );

    wait_ready_with_leader_gauge(&replicas[0], 1).await;

    // the new leader acts: a joining node gets its pod
    env.add_nodes(1).await;
    eventually(
        "the new leader to create the new node's pod",
        TIMEOUT,
        || async {
            let n = live_agent_pods(&env).await.len();
            if n == nodes.len() + 1 {
                Ok(())
            } else {
                Err(format!("{n} pods"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_leader_cut_off_from_the_apiserver_exits_at_its_renew_deadline() {
    let env = TestEnv::new("leader-cut").await;
    env.add_nodes(3).await;
    everynode_testkit::install_crd(&env.client()).await;
    let apiserver =
        std::net::SocketAddr::from(([127, 0, 0, 1], env.cluster().state.ports.apiserver));
    let proxy = everynode_testkit::proxy::FaultProxy::start(apiserver).await;
    let via = format!("https://{}", proxy.addr());
    let mut first = start_replica_via(&env, "cut-a", Some(&via)).await;
    wait_holder(&env, "cut-a").await;
    let second = start_replica(&env, "cut-b").await;
    apply_set(&env, "agent:v1").await;
    wait_ready_pods(&env, "agent:v1", 3).await;

    proxy.cut();
    let cut_at = Timestamp::now();
    let cut = Instant::now();
    let exit = tokio::time::timeout(Duration::from_secs(15), first.child.wait())
        .await
        .expect("the cut-off leader to exit within 15 s")
        .expect("wait for the replica");
    let exited_after = cut.elapsed();
    assert!(!exit.success(), "the cut-off leader exited with {exit}");
    let renew_deadline = Duration::from_secs(LEASE_SECONDS) * 2 / 3;
    assert!(
        exited_after <= renew_deadline + Duration::from_secs(3),
        "exited {exited_after:?} after the cut; the renew deadline is {renew_deadline:?}"
    );
    proxy.heal();

    // The standby leads and works: a rollout completes.
    apply_set(&env, "agent:v2").await;
    wait_ready_pods(&env, "agent:v2", 3).await;
    let user = format!(
        "system:serviceaccount:{SERVICE_ACCOUNT_NAMESPACE}:{}-cut-a",
        env.namespace()
    );
    let late = writes_after(&env, &user, cut_at + renew_deadline);
    assert!(
        late.is_empty(),
        "writes of the old leader after its renew deadline: {late:?}"
    );
    eprintln!("the cut-off leader exited {exited_after:.1?} after the cut");
    drop(second);
}
