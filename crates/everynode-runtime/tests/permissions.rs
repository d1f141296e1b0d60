//! The controller under the RBAC it ships with: the rules grant exactly the calls the code makes
//! (checked against the table of `everynode_runtime::permissions` and against the apiserver's
//! audit log); a write the apiserver refuses (403) is recorded in the status and an Event naming
//! the verb, resource and the role to grant it in, and stops no other step — a node that joins
//! still gets its pod.

use std::collections::BTreeSet;

mod common;

use common::*;
use everynode_api::DaemonSet;
use everynode_runtime::Target;
use everynode_runtime::permissions::{ApiCalls, CLUSTER_CALLS, LEADER_ELECTION_CALLS, allows};
use everynode_testkit::{TestEnv, eventually};
use kube::api::{DynamicObject, PostParams};
use serde_json::json;

fn shipped_cluster_role() -> DynamicObject {
    shipped("ClusterRole")
}

/// `(group, resource, verb)` triples of RBAC rules.
fn granted(role: &DynamicObject) -> BTreeSet<(String, String, String)> {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let mut out = BTreeSet::new();
    for rule in role.data["rules"].as_array().into_iter().flatten() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

/// `(group, resource, verb)` triples of a permissions table.
fn required(calls: &[ApiCalls]) -> BTreeSet<(String, String, String)> {
    calls
        .iter()
        .flat_map(|c| {
            c.groups.iter().flat_map(move |g| {
                c.verbs
                    .iter()
                    .map(move |v| ((*g).to_owned(), c.resource.to_owned(), (*v).to_owned()))
            })
        })
        .collect()
}

#[test]
fn the_shipped_rbac_grants_exactly_the_calls_the_controller_makes() {
    assert_eq!(granted(&shipped_cluster_role()), required(CLUSTER_CALLS));
    assert_eq!(granted(&shipped("Role")), required(LEADER_ELECTION_CALLS));
}

/// One request of the audit log.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct AuditedCall {
    group: String,
    resource: String,
    verb: String,
    code: u16,
}

/// The requests of `user` in the cluster's audit log (code 0: not answered yet).
fn audited_calls(env: &TestEnv, user: &str) -> Vec<AuditedCall> {
    let path = env.cluster().dir.audit_log();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the local cluster audits the controller's ServiceAccounts; restart a \
             cluster started by an older version)",
            path.display()
        )
    });
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        // RequestReceived: every request, watches included (they complete only when closed);
        // ResponseComplete: the answer's code.
        .filter(|e| e["stage"] == "RequestReceived" || e["stage"] == "ResponseComplete")
        .filter(|e| e["user"]["username"] == user)
        .map(|e| {
            let object = &e["objectRef"];
            let mut resource = object["resource"].as_str().unwrap_or_default().to_owned();
            if let Some(sub) = object["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            AuditedCall {
                group: object["apiGroup"].as_str().unwrap_or_default().to_owned(),
                resource,
                verb: e["verb"].as_str().unwrap_or_default().to_owned(),
                code: e["responseStatus"]["code"]
                    .as_u64()
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

#[tokio::test]
async fn the_controller_calls_only_what_its_rbac_grants() {
    let env = TestEnv::new("rbac-audit").await;
    let account = controller_account(&env, "audit", |_| {}).await;
    let user = format!("system:serviceaccount:{SERVICE_ACCOUNT_NAMESPACE}:{account}");
    let controller =
        start_controller_as(token_client(&env, &account).await, &env, Target::Everynode).await;
    // Every kind of write: adoption of an orphan, creates, a rollout, a failure rolled back
    // (set update, status, revisions, Events), a template the apiserver refuses (dry run).
    let nodes = env.add_nodes(3).await;
    env.create_pod(&everynode_testkit::pods::pod(
        "orphan",
        &labels(&[("app", "agent")]),
        Some(&nodes[0]),
    ))
    .await;
    let sets = env.api::<DaemonSet>();
    sets.create(
        &PostParams::default(),
        &set_with(
            &env,
            json!({"maxUnavailable": 1, "progressDeadlineSeconds": 5, "failurePolicy": "Rollback"}),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("create set: {e}"));
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    wait_for_set(&env, "a stable revision", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.stable_revision.is_some())
    })
    .await;
    patch_set(&sets, bad_revision(), "bad revision").await;
    wait_for_set(&env, "the rollback", |s| {
        s.status.as_ref().is_some_and(|st| st.rollback.is_some())
    })
    .await;
    patch_set(
        &sets,
        json!({"spec": {"template": {"spec": {"containers": [{
            "name": "agent", "image": "agent:v3", "resources": {"limits": {"cpu": "1 core"}}
        }]}}}}),
        "a bad quantity",
    )
    .await;
    wait_for_set(&env, "TemplateValid=False", |s| {
        condition(s, "TemplateValid").is_some_and(|(status, _)| status == "False")
    })
    .await;
    drop(controller);

    let calls = audited_calls(&env, &user);
    assert!(
        calls.len() > 10,
        "too few audited calls of {user}: {calls:?}"
    );
    let refused: Vec<&AuditedCall> = calls.iter().filter(|c| c.code == 403).collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
    let outside: BTreeSet<&AuditedCall> = calls
        .iter()
        .filter(|c| !allows(CLUSTER_CALLS, &c.group, &c.resource, &c.verb))
        .collect();
    assert!(
        outside.is_empty(),
        "calls the permissions table lacks: {outside:?}"
    );
    let seen: BTreeSet<(String, String, String)> = calls
        .iter()
        .map(|c| (c.group.clone(), c.resource.clone(), c.verb.clone()))
        .collect();
    let unseen: Vec<_> = required(CLUSTER_CALLS).difference(&seen).cloned().collect();
    println!(
        "{} audited calls; granted but not made in this run: {unseen:?}",
        calls.len()
    );
}

fn reconcile_condition(set: &DaemonSet) -> Option<(String, String, String)> {
    set.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "ReconcileSucceeded")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_refused_rollback_is_recorded_and_a_joining_node_still_gets_its_pod() {
    let env = TestEnv::new("forbidden-rollback").await;
    let account = controller_account(&env, "no-set-updates", |rule| {
        if rule["resources"] == json!(["daemonsets"])
            && let Some(verbs) = rule["verbs"].as_array_mut()
        {
            verbs.retain(|v| v != "update");
        }
    })
    .await;
    let _controller =
        start_controller_as(token_client(&env, &account).await, &env, Target::Everynode).await;
    let nodes = env.add_nodes(3).await;
    let sets = env.api::<DaemonSet>();
    sets.create(
        &PostParams::default(),
        &set_with(
            &env,
            json!({"maxUnavailable": 1, "progressDeadlineSeconds": 5, "failurePolicy": "Rollback"}),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("create set: {e}"));
    wait_one_ready_pod_per_node(&env, "agent", &nodes, "agent:v1").await;
    wait_for_set(&env, "a stable revision", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.stable_revision.is_some())
    })
    .await;

    patch_set(&sets, bad_revision(), "bad revision").await;
    let refused = wait_for_set(&env, "ReconcileSucceeded=False (Forbidden)", |s| {
        reconcile_condition(s)
            .is_some_and(|(status, reason, _)| status == "False" && reason == "Forbidden")
    })
    .await;
    let (_, _, message) = reconcile_condition(&refused).unwrap_or_default();
    for words in [
        "rolling DaemonSet agent back",
        "cannot update resource \"daemonsets\" in API group \"everynode.dev\"",
        "everynode-controller",
    ] {
        assert!(message.contains(words), "{words:?} not in {message:?}");
    }
    eventually(
        "a ReconcileFailed Event naming the refused verb",
        TIMEOUT,
        || async {
            let found = events(&env, "ReconcileFailed").await;
            if found
                .iter()
                .any(|m| m.contains("cannot update resource \"daemonsets\""))
            {
                Ok(())
            } else {
                Err(format!("{found:?}"))
            }
        },
    )
    .await;

    // Nothing else is blocked: a joining node gets its pod and the status counts it.
    let joined = env.add_nodes(1).await;
    eventually("a pod on the joining node", TIMEOUT, || async {
        let pods = set_pods(&env, "agent").await;
        if pods
            .iter()
            .any(|p| pinned_node(p).as_deref() == Some(joined[0].as_str()))
        {
            Ok(())
        } else {
            Err(format!("{} pods, none on {}", pods.len(), joined[0]))
        }
    })
    .await;
    wait_for_set(&env, "4 desired nodes in the status", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.desired_number_scheduled == 4)
    })
    .await;
}
