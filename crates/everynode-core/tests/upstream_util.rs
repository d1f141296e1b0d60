//! Scenarios of upstream `pkg/controller/daemon/util/daemonset_util_test.go` (§9.3).
//!
//! `§` numbers refer to `docs/upstream-semantics.md`.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use everynode_core::render::{pod_template, replace_node_name_affinity};
use everynode_core::status;
use everynode_core::target_node_name;
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
    PreferredSchedulingTerm,
};

#[test]
fn is_pod_updated() {
    let hash = "hash-1";
    let with = |h: Option<&str>, g: Option<&str>| {
        let mut l = ds_label();
        if let Some(h) = h {
            l.insert("controller-revision-hash".into(), h.into());
        }
        if let Some(g) = g {
            l.insert("pod-template-generation".into(), g.into());
        }
        l
    };
    let gen1 = Some(1);
    // (name, labels, hash, generation, want)
    let cases = [
        (
            "templateGeneration and hash both match",
            with(Some(hash), Some("1")),
            hash,
            gen1,
            true,
        ),
        (
            "templateGeneration matches, hash doesn't",
            with(Some("other"), Some("1")),
            hash,
            gen1,
            true,
        ),
        (
            "templateGeneration matches, no hash label, has hash",
            with(None, Some("1")),
            hash,
            gen1,
            true,
        ),
        (
            "templateGeneration matches, no hash label, no hash",
            with(None, Some("1")),
            "",
            gen1,
            true,
        ),
        (
            "templateGeneration matches, has hash label, no hash",
            with(Some(hash), Some("1")),
            "",
            gen1,
            true,
        ),
        (
            "templateGeneration doesn't match, hash does",
            with(Some(hash), Some("2")),
            hash,
            gen1,
            true,
        ),
        (
            "templateGeneration and hash don't match",
            with(Some("other"), Some("2")),
            hash,
            gen1,
            false,
        ),
        ("empty labels", Default::default(), hash, gen1, false),
        (
            "empty labels, no generation",
            Default::default(),
            hash,
            None,
            false,
        ),
    ];
    for (name, labels, h, g, want) in cases {
        assert_eq!(status::is_pod_updated(&labels, h, g), want, "{name}");
    }
}

#[test]
fn create_pod_template() {
    let set = new_set("foo");
    for (generation, hash) in [(Some(1), "hash"), (Some(1), ""), (None, "hash")] {
        let tpl = pod_template(&set.spec.template, hash, generation);
        let labels = tpl.metadata.unwrap().labels.unwrap();
        assert_eq!(
            labels.get("pod-template-generation").cloned(),
            generation.map(|g: i64| g.to_string())
        );
        assert_eq!(
            labels.get("controller-revision-hash").map(String::as_str),
            (!hash.is_empty()).then_some(hash)
        );
        // Default tolerations are added.
        let tols = tpl.spec.unwrap().tolerations.unwrap();
        assert_eq!(tols.len(), 6);
    }
}

fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: Some(values.iter().map(|v| (*v).into()).collect()),
    }
}

fn required(terms: Vec<NodeSelectorTerm>) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: terms,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pinned(node: &str) -> Vec<NodeSelectorTerm> {
    vec![NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![req("metadata.name", "In", &[node])]),
    }]
}

#[test]
fn replace_daemon_set_pod_node_name_node_affinity() {
    let expr = |k: &str, op: &str, v: &[&str]| NodeSelectorTerm {
        match_expressions: Some(vec![req(k, op, v)]),
        match_fields: None,
    };
    let field = |op: &str, v: &[&str]| NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![req("metadata.name", op, v)]),
    };
    let cases: Vec<(&str, Option<Affinity>)> = vec![
        ("nil affinity", None),
        (
            "required matchExpressions on hostname",
            Some(required(vec![expr(
                "kubernetes.io/hostname",
                "In",
                &["host_1"],
            )])),
        ),
        (
            "matchFields with two names",
            Some(required(vec![field("In", &["host_1", "host_2"])])),
        ),
        (
            "mixed terms",
            Some(required(vec![
                expr("kubernetes.io/hostname", "In", &["host_1"]),
                field("In", &["host_2"]),
            ])),
        ),
        (
            "NotIn field term",
            Some(required(vec![field("NotIn", &["host_2"])])),
        ),
        (
            "unknown field key",
            Some(required(vec![NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![req("metadata.foo", "In", &["bar"])]),
            }])),
        ),
    ];
    for (name, affinity) in cases {
        let got = replace_node_name_affinity(affinity, "host_1");
        assert_eq!(got, required(pinned("host_1")), "{name}");
    }
    // Preferred terms are preserved, a required term is added.
    let preferred = vec![PreferredSchedulingTerm {
        weight: 1,
        preference: NodeSelectorTerm::default(),
    }];
    let affinity = Affinity {
        node_affinity: Some(NodeAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(preferred.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let got = replace_node_name_affinity(Some(affinity), "host_1");
    let na = got.node_affinity.unwrap();
    assert_eq!(
        na.preferred_during_scheduling_ignored_during_execution,
        Some(preferred)
    );
    assert_eq!(
        na.required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms,
        pinned("host_1")
    );
}

#[test]
fn get_target_node_name() {
    let pod = |spec: PodSpec| Pod {
        spec: Some(spec),
        ..Default::default()
    };
    assert_eq!(
        target_node_name(&pod(PodSpec {
            node_name: Some("node-1".into()),
            ..Default::default()
        }))
        .unwrap(),
        "node-1"
    );
    let one = pod(PodSpec {
        affinity: Some(required(pinned("node-1"))),
        ..Default::default()
    });
    assert_eq!(target_node_name(&one).unwrap(), "node-1");
    let two = pod(PodSpec {
        affinity: Some(required(vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["node-1", "node-2"])]),
        }])),
        ..Default::default()
    });
    assert!(target_node_name(&two).is_err());
    assert!(target_node_name(&pod(PodSpec::default())).is_err());
}
