//! Per-node overrides (`spec.nodeOverrides`, everynode only): which template and hash each node
//! gets, and that a change reaches only the nodes it affects, through the same budgets.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use everynode_api::labels::CONTROLLER_REVISION_HASH;
use everynode_api::{ContainerOverride, NodeOverride};
use everynode_core::{Deferred, Plan, PlanError, hash_template};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

const GPU: &str = "example.com/gpu";

/// An override of container `c` for the nodes labelled `example.com/gpu=true`.
fn gpu_override(change: impl FnOnce(&mut ContainerOverride)) -> NodeOverride {
    let mut container = ContainerOverride {
        name: "c".to_owned(),
        ..ContainerOverride::default()
    };
    change(&mut container);
    NodeOverride {
        name: "gpu".to_owned(),
        node_selector: LabelSelector {
            match_labels: Some(labels(&[(GPU, "true")])),
            match_expressions: None,
        },
        containers: vec![container],
    }
}

/// Just the override `gpu`, giving container `c` `image`.
fn gpu_image(image: &str) -> Vec<NodeOverride> {
    vec![gpu_override(|o| o.image = Some(image.to_owned()))]
}

fn memory(limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(limit.to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// Six nodes, `node-4` and `node-5` with GPUs; `maxUnavailable: 1`.
fn cluster() -> Cluster {
    let mut c = Cluster::with_strategy(new_set("agent"), rolling(IntOrString::Int(1)));
    c.add_nodes(0, 4, BTreeMap::new());
    c.add_nodes(4, 2, labels(&[(GPU, "true")]));
    c.config.explain = true;
    c
}

fn set_overrides(c: &mut Cluster, overrides: Vec<NodeOverride>) {
    c.set.spec.node_overrides = Some(overrides);
    c.set.generation = c.set.generation.map(|g| g + 1);
}

/// Runs plans until nothing is left to do, every pod made ready in between; returns the nodes
/// whose pods were deleted on the way.
fn roll_out(c: &mut Cluster) -> Vec<String> {
    let mut replaced = Vec::new();
    for _ in 0..20 {
        let p = c.plan();
        assert!(p.errors.is_empty(), "plan errors: {:?}", p.errors);
        replaced.extend(p.deletes.iter().map(|d| d.node.clone()));
        let idle = p.creates.is_empty() && p.deletes.is_empty() && p.updates.is_empty();
        c.apply(&p);
        c.mark_pods_ready();
        if idle {
            return replaced;
        }
    }
    panic!("the rollout did not finish in 20 plans");
}

fn hash_on(c: &Cluster, node: &str) -> String {
    let pod = c
        .pods
        .iter()
        .find(|p| p.target_node.as_deref() == Some(node))
        .unwrap();
    pod.labels[CONTROLLER_REVISION_HASH].clone()
}

fn override_of(p: &Plan, node: &str) -> Option<String> {
    p.nodes
        .iter()
        .find(|d| d.node == node)
        .and_then(|d| d.node_override.clone())
}

#[test]
fn nodes_an_override_matches_get_its_template_and_the_others_the_template_itself() {
    let mut c = cluster();
    set_overrides(
        &mut c,
        vec![gpu_override(|o| o.resources = Some(memory("2Gi")))],
    );
    let p = c.expect_sync(6, 0, 0);
    let base = hash_template(&c.set.spec.template, None);
    let gpu: Vec<&str> = p
        .creates
        .iter()
        .filter(|x| x.hash != base)
        .map(|x| x.node.as_str())
        .collect();
    assert_eq!(gpu, ["node-4", "node-5"]);
    let variant = &p.creates[4].hash;
    let template = &p.templates[variant];
    let resources = template.spec.as_ref().unwrap().containers[0]
        .resources
        .clone();
    assert_eq!(resources, Some(memory("2Gi")));
    assert!(
        !p.templates.contains_key(&base),
        "the others use the set's template"
    );
    assert_eq!(override_of(&p, "node-4").as_deref(), Some("gpu"));
    assert_eq!(override_of(&p, "node-0"), None);
    // The revision records the overrides: its hash is neither pod hash.
    let revision = p.history.create.as_ref().unwrap();
    assert!(revision.hash != base && revision.hash != *variant);
    c.mark_pods_ready();
    let p = c.expect_sync(0, 0, 0);
    let status = p.status.unwrap();
    assert_eq!(status.updated_number_scheduled, Some(6));
    assert_eq!(
        status.update_revision.as_deref(),
        Some(revision.name.as_str())
    );
}

#[test]
fn changing_an_override_rolls_out_to_its_nodes_only_one_at_a_time() {
    let mut c = cluster();
    set_overrides(&mut c, gpu_image("agent:gpu-1"));
    roll_out(&mut c);
    let plain = hash_on(&c, "node-0");
    set_overrides(&mut c, gpu_image("agent:gpu-2"));
    let p = c.plan();
    assert_eq!(
        p.deletes
            .iter()
            .map(|d| d.node.as_str())
            .collect::<Vec<_>>(),
        ["node-4"],
        "maxUnavailable 1, gpu nodes only"
    );
    assert_eq!(p.status.as_ref().unwrap().updated_number_scheduled, Some(4));
    assert_eq!(roll_out(&mut c), ["node-4", "node-5"]);
    assert_eq!(hash_on(&c, "node-0"), plain);
    assert_eq!(hash_on(&c, "node-4"), hash_on(&c, "node-5"));
    assert_ne!(hash_on(&c, "node-4"), plain);
}

#[test]
fn adding_an_override_replaces_only_the_pods_of_the_nodes_it_matches() {
    let mut c = cluster();
    roll_out(&mut c);
    let before = hash_on(&c, "node-0");
    set_overrides(
        &mut c,
        vec![gpu_override(|o| o.args = Some(vec!["--gpu".into()]))],
    );
    assert_eq!(roll_out(&mut c), ["node-4", "node-5"]);
    assert_eq!(hash_on(&c, "node-0"), before);
    // Removing it again takes those nodes back to the template.
    c.set.spec.node_overrides = None;
    assert_eq!(roll_out(&mut c), ["node-4", "node-5"]);
    assert_eq!(hash_on(&c, "node-5"), before);
}

#[test]
fn a_node_that_gains_the_override_label_gets_its_pod_replaced() {
    let mut c = cluster();
    set_overrides(&mut c, gpu_image("agent:gpu"));
    roll_out(&mut c);
    c.node_mut("node-1")
        .labels
        .insert(GPU.to_owned(), "true".to_owned());
    let p = c.plan();
    assert_eq!(override_of(&p, "node-1").as_deref(), Some("gpu"));
    assert_eq!(p.status.as_ref().unwrap().updated_number_scheduled, Some(5));
    assert_eq!(roll_out(&mut c), ["node-1"]);
    assert_eq!(hash_on(&c, "node-1"), hash_on(&c, "node-4"));
}

#[test]
fn the_first_matching_override_wins() {
    let mut c = cluster();
    c.node_mut("node-5")
        .labels
        .insert("example.com/big".to_owned(), "true".to_owned());
    let mut big = gpu_override(|o| o.image = Some("agent:big".into()));
    big.name = "big".to_owned();
    big.node_selector.match_labels = Some(labels(&[("example.com/big", "true")]));
    set_overrides(
        &mut c,
        vec![big, gpu_override(|o| o.image = Some("agent:gpu".into()))],
    );
    let p = c.expect_sync(6, 0, 0);
    assert_eq!(override_of(&p, "node-5").as_deref(), Some("big"));
    assert_eq!(override_of(&p, "node-4").as_deref(), Some("gpu"));
    let image = |node: &str| {
        let create = p.creates.iter().find(|x| x.node == node).unwrap();
        p.templates[&create.hash].spec.as_ref().unwrap().containers[0]
            .image
            .clone()
    };
    assert_eq!(image("node-5").as_deref(), Some("agent:big"));
    assert_eq!(image("node-4").as_deref(), Some("agent:gpu"));
}

#[test]
fn an_override_of_an_unknown_container_holds_the_rollout_and_names_it() {
    let mut c = cluster();
    roll_out(&mut c);
    let mut bad = gpu_override(|o| o.image = Some("agent:gpu".into()));
    bad.containers[0].name = "agnet".to_owned();
    set_overrides(&mut c, vec![bad]);
    c.set_image("agent:v2");
    let p = c.plan();
    assert!(p.deletes.is_empty() && p.creates.is_empty());
    let errors: Vec<String> = p.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "spec.nodeOverrides[gpu].containers[agnet]: Invalid value: the template has no \
          container or init container \"agnet\"; use one of: c"
        ]
    );
    assert!(matches!(p.errors[0], PlanError::Override(_)));
    assert!(deferred(&p, "node-0").contains(&Deferred::TemplateRejected));
}

#[test]
fn an_override_image_change_is_made_in_place_with_the_override_image() {
    let mut c = Cluster::with_strategy(
        new_set("agent"),
        rolling_with(|r| r.rolling_update_type = Some("InPlaceIfPossible".to_owned())),
    );
    c.add_nodes(0, 2, labels(&[(GPU, "true")]));
    set_overrides(&mut c, gpu_image("agent:gpu-1"));
    roll_out(&mut c);
    let uids: Vec<String> = c.pods.iter().map(|p| p.uid.clone()).collect();
    set_overrides(&mut c, gpu_image("agent:gpu-2"));
    let p = c.plan();
    assert_eq!(p.updates.len(), 1);
    assert_eq!(
        p.updates[0].images,
        [("c".to_owned(), "agent:gpu-2".to_owned())]
    );
    roll_out(&mut c);
    let after: Vec<String> = c.pods.iter().map(|p| p.uid.clone()).collect();
    assert_eq!(uids, after, "the same pods, updated in place");
}

#[test]
fn an_old_override_revision_stays_while_its_pods_run() {
    let mut c = cluster();
    c.set.spec.revision_history_limit = Some(0);
    set_overrides(&mut c, gpu_image("agent:gpu-1"));
    roll_out(&mut c);
    let first = c.revisions[0].name.clone();
    set_overrides(&mut c, gpu_image("agent:gpu-2"));
    let p = c.plan();
    assert!(p.history.delete.is_empty(), "gpu pods still run {first}");
    c.apply(&p);
    roll_out(&mut c);
    // Once the new revision is the stable one (the status of the last plan), the old one goes.
    let p = c.plan();
    let deleted: Vec<&str> = p.history.delete.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(deleted, [first.as_str()]);
}

#[test]
fn an_abort_takes_override_nodes_back_to_the_stable_revisions_override() {
    let mut c = cluster();
    set_overrides(&mut c, gpu_image("agent:gpu-1"));
    roll_out(&mut c);
    let stable_gpu = hash_on(&c, "node-4");
    set_overrides(&mut c, gpu_image("agent:gpu-2"));
    let p = c.plan();
    c.apply(&p);
    c.mark_pods_ready();
    let p = c.plan();
    c.apply(&p);
    assert_ne!(
        hash_on(&c, "node-4"),
        stable_gpu,
        "node-4 runs the new override"
    );
    c.set.spec.abort = Some(everynode_api::RolloutAbort {
        revision: everynode_core::template_revision(&c.set),
    });
    let p = c.expect_sync(0, 1, 0);
    assert_eq!(
        p.deletes[0].node, "node-4",
        "only the node that was updated goes back"
    );
    let p = c.expect_sync(1, 0, 0);
    assert_eq!(p.creates[0].hash, stable_gpu);
    let image = p.templates[&stable_gpu].spec.as_ref().unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("agent:gpu-1"));
    c.mark_pods_ready();
    assert!(roll_out(&mut c).is_empty());
    assert_eq!(hash_on(&c, "node-5"), stable_gpu);
}

#[test]
fn a_rollback_puts_the_stable_revisions_overrides_back_too() {
    let mut c = cluster();
    c.set.spec.update_strategy = Some(rolling_with(|r| {
        r.progress_deadline_seconds = Some(30);
        r.failure_policy = Some("Rollback".into());
    }));
    let stable = gpu_image("agent:gpu-1");
    set_overrides(&mut c, stable.clone());
    roll_out(&mut c);
    let stable_gpu = hash_on(&c, "node-4");
    set_overrides(&mut c, gpu_image("agent:gpu-broken"));
    c.expect_sync(0, 1, 0);
    c.expect_sync(1, 0, 0);
    c.advance(std::time::Duration::from_secs(31));
    let p = c.expect_sync(0, 0, 1);
    let rollback = p.rollback.clone().unwrap();
    assert_eq!(rollback.node_overrides, Some(stable));
    // Applied as the runtime does: the broken pod on node-4 goes back to the stable override.
    assert_eq!(roll_out(&mut c), ["node-4"]);
    assert_eq!(hash_on(&c, "node-4"), stable_gpu);
}

mod properties {
    use super::*;
    use everynode_core::overrides::NodeVariants;
    use proptest::prelude::*;

    /// The overrides: `gpu` (image) and `arm` (args), each in version `v`.
    fn overrides(gpu: u8, arm: u8) -> Vec<NodeOverride> {
        let mut arm_override = gpu_override(|o| o.args = Some(vec![format!("--arm={arm}")]));
        arm_override.name = "arm".to_owned();
        arm_override.node_selector.match_labels = Some(labels(&[("arch", "arm64")]));
        vec![
            gpu_override(|o| o.image = Some(format!("agent:gpu-{gpu}"))),
            arm_override,
        ]
    }

    /// The hash each node's pod should carry under the set's spec.
    fn expected(c: &Cluster) -> BTreeMap<String, String> {
        let spec = &c.set.spec;
        let variants = NodeVariants::new(&spec.template, spec.overrides(), None).unwrap();
        c.nodes
            .iter()
            .map(|n| {
                let hash = variants.hash(variants.of_node(&n.labels), &variants.base_hash);
                (n.name.clone(), hash.to_owned())
            })
            .collect()
    }

    fn ready_nodes(c: &Cluster) -> usize {
        c.nodes
            .iter()
            .filter(|n| {
                c.pods.iter().any(|p| {
                    p.target_node.as_deref() == Some(n.name.as_str()) && p.ready && !p.deleting()
                })
            })
            .count()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// Any change of the overrides and the template converges to every node carrying its
        /// own override's hash, replaces only the pods whose hash changes, and never has more
        /// nodes without a Ready pod than `maxUnavailable`.
        #[test]
        fn a_change_reaches_exactly_the_nodes_whose_template_changes_within_the_budget(
            classes in prop::collection::vec((any::<bool>(), any::<bool>()), 1..10),
            max_unavailable in 1i32..3,
            (gpu, arm, image) in (0u8..2, 0u8..2, any::<bool>()),
        ) {
            let mut c = Cluster::with_strategy(
                new_set("agent"),
                rolling(IntOrString::Int(max_unavailable)),
            );
            for (i, (gpu_node, arm_node)) in classes.iter().enumerate() {
                let mut l = BTreeMap::new();
                if *gpu_node {
                    l.insert(GPU.to_owned(), "true".to_owned());
                }
                if *arm_node {
                    l.insert("arch".to_owned(), "arm64".to_owned());
                }
                c.add_nodes(i, 1, l);
            }
            set_overrides(&mut c, overrides(0, 0));
            roll_out(&mut c);
            let before = expected(&c);
            set_overrides(&mut c, overrides(gpu, arm));
            if image {
                c.set_image("agent:v2");
            }
            let after = expected(&c);
            let total = c.nodes.len();
            let mut replaced = Vec::new();
            for _ in 0..(4 * total + 10) {
                let p = c.plan();
                prop_assert!(p.errors.is_empty());
                replaced.extend(p.deletes.iter().map(|d| d.node.clone()));
                let idle = p.creates.is_empty() && p.deletes.is_empty();
                c.apply(&p);
                let unavailable = total - ready_nodes(&c);
                prop_assert!(unavailable <= usize::try_from(max_unavailable).unwrap());
                c.mark_pods_ready();
                if idle {
                    break;
                }
            }
            for (node, hash) in &after {
                prop_assert_eq!(&hash_on(&c, node), hash, "node {}", node);
            }
            replaced.sort();
            let changed: Vec<String> = after
                .iter()
                .filter(|(node, hash)| before[*node] != **hash)
                .map(|(node, _)| node.clone())
                .collect();
            prop_assert_eq!(replaced, changed);
        }
    }
}
