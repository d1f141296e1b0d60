//! Unit tests of the building blocks: hash stability (golden values), revision matching and
//! history, tolerations, reasons, pod names.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use everynode_core::eligibility::{add_or_update_toleration, effective_tolerations, tolerates};
use everynode_core::revision::{
    SAFE_ALPHABET, canonical_json, cleanup_history, fnv32a, normalize, safe_encode,
};
use everynode_core::{
    Deferred, DeleteReason, NodeExcluded, Owner, RevisionView, data_matches, generated_pod_name,
    hash_template, revision_data,
};
use serde_json::json;

#[test]
fn safe_encode_matches_upstream_alphabet() {
    assert_eq!(safe_encode("0123456789"), "456789bcdf");
    // FNV-1a 32 reference vectors.
    assert_eq!(fnv32a(b""), 0x811c_9dc5);
    assert_eq!(fnv32a(b"a"), 0xe40c_292c);
}

#[test]
fn golden_hashes() {
    let set = new_set("foo");
    let tpl = &set.spec.template;
    let golden = [
        (hash_template(tpl, None), "7b69db5f6c"),
        (hash_template(tpl, Some(0)), "745759c56c"),
        (hash_template(tpl, Some(1)), "588b8f8bf8"),
        (hash_template(&Default::default(), None), "5859f96865"),
    ];
    for (got, want) in golden {
        assert_eq!(
            got, want,
            "hash changed: revisions and pod labels of existing sets would all change"
        );
    }
}

#[test]
fn hash_ignores_key_order_and_empty_members() {
    let set = new_set("foo");
    let mut tpl = set.spec.template.clone();
    let h = hash_template(&tpl, None);
    tpl.metadata.as_mut().unwrap().annotations = Some(Default::default());
    tpl.spec.as_mut().unwrap().tolerations = Some(Vec::new());
    assert_eq!(hash_template(&tpl, None), h);
    assert_eq!(
        canonical_json(&json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": null}})),
        r#"{"a":{"c":null,"d":[1,{"y":1,"z":0}]},"b":1}"#
    );
}

#[test]
fn revision_data_matches_go_encoding() {
    let set = new_set("foo");
    let tpl = &set.spec.template;
    let data = revision_data(tpl);
    assert_eq!(data["spec"]["template"]["$patch"], "replace");
    // What the Go controller writes: creationTimestamp null, resources {} and other key order.
    let go = json!({"spec": {"template": {
        "$patch": "replace",
        "metadata": {"creationTimestamp": null, "labels": {"type": "production", "name": "simple-daemon"}},
        "spec": {
            "dnsPolicy": "Default",
            "containers": [{"resources": {}, "name": "c", "image": "foo/bar",
                "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"}]
        }
    }}});
    assert!(data_matches(tpl, &go));
    let mut other = go.clone();
    other["spec"]["template"]["spec"]["containers"][0]["image"] = json!("foo/bar2");
    assert!(!data_matches(tpl, &other));
    assert_eq!(normalize(&json!({"a": {"b": {}}, "c": []})), json!({}));
}

fn rev(name: &str, hash: &str, revision: i64, data: serde_json::Value) -> RevisionView {
    let mut labels = ds_label();
    labels.insert("controller-revision-hash".into(), hash.into());
    RevisionView {
        name: name.into(),
        labels,
        owner: Some(Owner::ThisSet),
        revision,
        data,
        deleting: false,
    }
}

#[test]
fn takeover_keeps_pods_of_matching_upstream_revision() {
    let mut c = Cluster::new(new_set("foo"));
    c.add_nodes(0, 2, Default::default());
    let data = revision_data(&c.set.spec.template);
    c.revisions.push(rev("foo-5d8b7c9f4", "5d8b7c9f4", 3, data));
    for n in ["node-0", "node-1"] {
        let mut p = c.new_pod("foo-", n, ds_label(), true);
        Arc::make_mut(&mut p.labels).insert("controller-revision-hash".into(), "5d8b7c9f4".into());
        p.ready = true;
        c.pods.push(p.into());
    }
    c.set.spec.update_strategy = Some(rolling(
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1),
    ));
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(p.history.hash, "5d8b7c9f4");
    assert!(p.history.create.is_none());
    assert_eq!(p.status.unwrap().updated_number_scheduled, Some(2));
}

#[test]
fn history_create_renumber_dedup_cleanup() {
    let mut c = Cluster::new(new_set("foo"));
    c.add_nodes(0, 1, Default::default());
    let p = c.expect_sync(1, 0, 0);
    let first = p.history.create.clone().unwrap();
    assert_eq!(first.revision, 1);
    assert_eq!(first.name, format!("foo-{}", first.hash));
    // Template change → revision 2; roll back → revision 1 object renumbered to 3.
    c.set_image("foo/v2");
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(p.history.create.as_ref().unwrap().revision, 2);
    c.set_image("foo/bar");
    let p = c.expect_sync(0, 0, 0);
    assert!(p.history.create.is_none());
    assert_eq!(p.history.renumber, Some((first.name.clone(), 3)));

    // Duplicate: same data, other name/hash, higher revision → kept; pods relabelled.
    let data = revision_data(&c.set.spec.template);
    c.revisions.push(rev("foo-dup", "dup", 9, data));
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(p.history.hash, "dup");
    assert_eq!(p.history.delete[0].name, first.name);
    assert_eq!(p.history.relabel_pods.len(), 1);
    assert!(
        c.pods
            .iter()
            .all(|p| p.labels["controller-revision-hash"] == "dup")
    );
}

#[test]
fn history_cleanup_keeps_live_revisions() {
    let olds: Vec<RevisionView> = (1..=5)
        .map(|i| rev(&format!("r{i}"), &format!("h{i}"), i, json!({})))
        .collect();
    let refs: Vec<&RevisionView> = olds.iter().collect();
    let live: BTreeSet<&str> = ["h1"].into_iter().collect();
    let deleted: Vec<String> = cleanup_history(&refs, 2, &live)
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(deleted, vec!["r2", "r3", "r4"]);
    assert!(cleanup_history(&refs, 10, &live).is_empty());
}

#[test]
fn collision_bumps_count_and_stops() {
    let mut c = Cluster::new(new_set("foo"));
    c.add_nodes(0, 1, Default::default());
    let hash = hash_template(&c.set.spec.template, None);
    let mut foreign = rev(
        &format!("foo-{hash}"),
        &hash,
        1,
        json!({"spec": {"template": {"x": 1}}}),
    );
    foreign.owner = Some(Owner::Other);
    c.revisions.push(foreign);
    let p = c.expect_sync(0, 0, 0);
    assert_eq!(p.history.collision_count, Some(1));
    assert_eq!(p.status.as_ref().unwrap().collision_count, Some(1));
    // Next round uses the new hash and creates pods.
    let p = c.expect_sync(1, 0, 0);
    assert_eq!(p.history.hash, hash_template(&c.set.spec.template, Some(1)));
}

#[test]
fn tolerations_add_or_update_and_numeric_operators() {
    let mut set = new_set("foo");
    let mut limited = toleration("node.kubernetes.io/not-ready", "Exists", "", "NoExecute");
    limited.toleration_seconds = Some(300);
    set.spec.template.spec.as_mut().unwrap().tolerations = Some(vec![limited]);
    let tols = effective_tolerations(&set.spec.template);
    assert_eq!(tols.len(), 6);
    assert_eq!(
        tols[0].toleration_seconds, None,
        "default replaces the time-limited toleration"
    );
    let mut same = tols.clone();
    add_or_update_toleration(&mut same, &tols[1]);
    assert_eq!(same, tols);
    set.spec.template.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(effective_tolerations(&set.spec.template).len(), 7);

    let gt = toleration("sla", "Gt", "950", "NoSchedule");
    let lt = toleration("sla", "Lt", "950", "NoSchedule");
    assert!(tolerates(&gt, &taint("sla", "999", "NoSchedule")));
    assert!(!tolerates(&gt, &taint("sla", "900", "NoSchedule")));
    assert!(tolerates(&lt, &taint("sla", "900", "NoSchedule")));
    assert!(
        !tolerates(&lt, &taint("sla", "0999", "NoSchedule")),
        "leading zeros are not numbers"
    );
    assert!(tolerates(
        &toleration("", "Exists", "", ""),
        &taint("any", "v", "NoExecute")
    ));
    assert!(!tolerates(
        &toleration("k", "", "v", ""),
        &taint("k", "w", "NoSchedule")
    ));
}

#[test]
fn reasons_render() {
    let t = NodeExcluded::TaintNotTolerated {
        key: "dedicated".into(),
        value: "gpu".into(),
        effect: "NoSchedule".into(),
    };
    assert_eq!(
        t.to_string(),
        "node excluded: taint dedicated=gpu:NoSchedule not tolerated"
    );
    assert_eq!(t.code(), "TaintNotTolerated");
    assert_eq!(
        DeleteReason::ExcessPod.to_string(),
        "pod deleted: second pod on node"
    );
    assert_eq!(
        Deferred::Backoff {
            delay: std::time::Duration::from_secs(4)
        }
        .to_string(),
        "create deferred: backoff 4s"
    );
    assert_eq!(
        Deferred::Backoff {
            delay: std::time::Duration::from_secs(900)
        }
        .to_string(),
        "create deferred: backoff 15m0s"
    );
}

#[test]
fn pod_names_are_upstream_generated_names_drawn_from_the_plan_seed() {
    let a = generated_pod_name("foo", 7, "node-1", "abc", 0);
    assert_eq!(a, generated_pod_name("foo", 7, "node-1", "abc", 0));
    assert_ne!(a, generated_pod_name("foo", 8, "node-1", "abc", 0));
    assert_ne!(a, generated_pod_name("foo", 7, "node-2", "abc", 0));
    assert_ne!(a, generated_pod_name("foo", 7, "node-1", "abd", 0));
    assert_ne!(a, generated_pod_name("foo", 7, "node-1", "abc", 1));
    assert!(a.starts_with("foo-") && a.len() == "foo-".len() + 5, "{a}");
    assert!(
        a["foo-".len()..]
            .bytes()
            .all(|b| SAFE_ALPHABET.contains(&b))
    );
    // generateName keeps at most 58 bytes of `<set>-`, as the apiserver cuts it.
    let long = generated_pod_name(&"x".repeat(100), 7, "node-1", "abc", 0);
    assert_eq!(long.len(), 63);
    assert!(long.starts_with(&"x".repeat(58)));
}

#[test]
fn a_replacement_pod_never_takes_the_name_of_the_pod_it_replaces() {
    let mut c = Cluster::new(new_set("foo"));
    c.add_nodes(0, 1, Default::default());
    let first = c.plan();
    c.apply(&first);
    let original = first.creates[0].pod_name.clone();
    // The pod fails, is deleted and is gone from the cache: its replacement gets a new name.
    c.pods.clear();
    let replacement = c.plan();
    assert_eq!(replacement.creates.len(), 1);
    assert_ne!(replacement.creates[0].pod_name, original);
    // Within one plan, a name that is taken is never planned.
    let mut taken = Cluster::new(new_set("foo"));
    taken.add_nodes(0, 2, Default::default());
    let names = taken.plan().creates;
    let mut squatter = taken.new_pod("x-", "node-9", ds_label(), true);
    squatter.name = names[0].pod_name.clone();
    taken.pods.push(squatter.into());
    let again = taken.plan();
    assert!(
        again
            .creates
            .iter()
            .all(|c| c.pod_name != names[0].pod_name)
    );
}
