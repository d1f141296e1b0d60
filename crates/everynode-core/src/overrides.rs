//! `spec.nodeOverrides`: which template each node gets (its *variant*), and the variants'
//! hashes.
//!
//! A node gets the template with the container changes of the first override, in list order,
//! whose node selector matches its labels; a node no override matches gets the template as it
//! is. A variant's pods carry the hash of the variant's template (the revision hash function,
//! with the set's collision count), so changing one override changes the hash of its nodes only,
//! and the rollout reaches those nodes alone. The revision records the template and the
//! overrides together ([`crate::revision`]).

use std::collections::BTreeMap;

use everynode_api::{ContainerOverride, NodeOverride};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};

use crate::revision::hash_template;
use crate::selector::Selector;

/// An override that cannot be applied. Each names the override and the field to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// Two overrides of one name.
    #[error(
        "spec.nodeOverrides[{index}].name: Duplicate value: {name:?} names an earlier override \
         too; give each override its own name"
    )]
    DuplicateOverride {
        /// Position in the list.
        index: usize,
        /// The name.
        name: String,
    },
    /// One override changes a container twice.
    #[error(
        "spec.nodeOverrides[{name}].containers: Duplicate value: container {container:?} is \
         listed twice; merge its changes into one entry"
    )]
    DuplicateContainer {
        /// The override.
        name: String,
        /// The container.
        container: String,
    },
    /// An override changes a container the template does not have.
    #[error(
        "spec.nodeOverrides[{name}].containers[{container}]: Invalid value: the template has no \
         container or init container {container:?}; use one of: {known}"
    )]
    UnknownContainer {
        /// The override.
        name: String,
        /// The container.
        container: String,
        /// The template's container names, comma-separated.
        known: String,
    },
    /// An override's node selector is invalid.
    #[error("spec.nodeOverrides[{name}].nodeSelector: Invalid value: {message}")]
    Selector {
        /// The override.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// One override, ready to match nodes.
#[derive(Clone, Debug)]
pub struct Variant {
    /// The override's name.
    pub name: String,
    selector: Selector,
    /// The hash its pods carry.
    pub hash: String,
    /// The template its nodes get.
    pub template: PodTemplateSpec,
}

/// The variants of a set: the overrides in list order, and the hash of the template itself
/// (the nodes no override matches). Empty without overrides: every node then gets the
/// revision's own hash.
#[derive(Clone, Debug, Default)]
pub struct NodeVariants {
    /// The hash of the template without overrides (unused when there are none).
    pub base_hash: String,
    variants: Vec<Variant>,
}

impl NodeVariants {
    /// The variants of `template` under `overrides`, hashed with `collision_count`.
    ///
    /// # Errors
    /// The first override that cannot be applied.
    pub fn new(
        template: &PodTemplateSpec,
        overrides: &[NodeOverride],
        collision_count: Option<i32>,
    ) -> Result<Self, OverrideError> {
        if overrides.is_empty() {
            return Ok(Self::default());
        }
        check_names(overrides)?;
        let mut variants = Vec::with_capacity(overrides.len());
        for o in overrides {
            let selector =
                Selector::compile(&o.node_selector).map_err(|e| OverrideError::Selector {
                    name: o.name.clone(),
                    message: e.to_string(),
                })?;
            let template = apply_override(template, o)?;
            variants.push(Variant {
                name: o.name.clone(),
                selector,
                hash: hash_template(&template, collision_count),
                template,
            });
        }
        Ok(Self {
            base_hash: hash_template(template, collision_count),
            variants,
        })
    }

    /// No overrides.
    pub fn is_empty(&self) -> bool {
        self.variants.is_empty()
    }

    /// The override a node with `labels` gets: the first whose selector matches.
    pub fn of_node(&self, labels: &BTreeMap<String, String>) -> Option<usize> {
        self.variants
            .iter()
            .position(|v| v.selector.matches(labels))
    }

    /// Override `index`.
    pub fn get(&self, index: usize) -> Option<&Variant> {
        self.variants.get(index)
    }

    /// The overrides in list order.
    pub fn iter(&self) -> impl Iterator<Item = &Variant> {
        self.variants.iter()
    }

    /// The hash of the pods of override `variant` (`None`: the template itself), or `revision`
    /// (the revision's hash) without overrides.
    pub fn hash<'a>(&'a self, variant: Option<usize>, revision: &'a str) -> &'a str {
        if self.is_empty() {
            return revision;
        }
        variant
            .and_then(|i| self.variants.get(i))
            .map_or(self.base_hash.as_str(), |v| v.hash.as_str())
    }

    /// Whether `hash` is the hash of one of the variants (the template's included).
    pub fn has_hash(&self, hash: &str) -> bool {
        !self.is_empty() && (self.base_hash == hash || self.variants.iter().any(|v| v.hash == hash))
    }

    /// The template of the variant whose pods carry `hash`, if one does.
    pub fn template_of_hash<'a>(
        &'a self,
        hash: &str,
        template: &'a PodTemplateSpec,
    ) -> Option<&'a PodTemplateSpec> {
        if self.is_empty() {
            return None;
        }
        if self.base_hash == hash {
            return Some(template);
        }
        self.variants
            .iter()
            .find(|v| v.hash == hash)
            .map(|v| &v.template)
    }
}

/// Every error of `overrides` against `template` (the CLI reports them all at once).
pub fn validate(template: &PodTemplateSpec, overrides: &[NodeOverride]) -> Vec<OverrideError> {
    let mut errors = Vec::new();
    if let Err(e) = check_names(overrides) {
        errors.push(e);
    }
    for o in overrides {
        if let Err(e) = Selector::compile(&o.node_selector) {
            errors.push(OverrideError::Selector {
                name: o.name.clone(),
                message: e.to_string(),
            });
        }
        for c in &o.containers {
            if !container_names(template).any(|n| n == c.name) {
                errors.push(unknown_container(template, o, c));
            }
        }
    }
    errors
}

/// Override names unique in the list, container names unique in each override.
fn check_names(overrides: &[NodeOverride]) -> Result<(), OverrideError> {
    for (index, o) in overrides.iter().enumerate() {
        if overrides[..index]
            .iter()
            .any(|earlier| earlier.name == o.name)
        {
            return Err(OverrideError::DuplicateOverride {
                index,
                name: o.name.clone(),
            });
        }
        for (i, c) in o.containers.iter().enumerate() {
            if o.containers[..i]
                .iter()
                .any(|earlier| earlier.name == c.name)
            {
                return Err(OverrideError::DuplicateContainer {
                    name: o.name.clone(),
                    container: c.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// `template` with the container changes of `o`.
///
/// # Errors
/// A container `o` changes that the template does not have.
pub fn apply_override(
    template: &PodTemplateSpec,
    o: &NodeOverride,
) -> Result<PodTemplateSpec, OverrideError> {
    let mut out = template.clone();
    for change in &o.containers {
        let Some(container) = find_container(&mut out, &change.name) else {
            return Err(unknown_container(template, o, change));
        };
        change_container(container, change);
    }
    Ok(out)
}

fn unknown_container(
    template: &PodTemplateSpec,
    o: &NodeOverride,
    c: &ContainerOverride,
) -> OverrideError {
    let known: Vec<&str> = container_names(template).collect();
    OverrideError::UnknownContainer {
        name: o.name.clone(),
        container: c.name.clone(),
        known: known.join(", "),
    }
}

/// The names of the template's containers, then its init containers.
fn container_names(template: &PodTemplateSpec) -> impl Iterator<Item = &str> {
    template
        .spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .map(|c| c.name.as_str())
}

/// The container (or init container) `name` of `template`.
fn find_container<'t>(template: &'t mut PodTemplateSpec, name: &str) -> Option<&'t mut Container> {
    let spec = template.spec.as_mut()?;
    spec.containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
        .find(|c| c.name == name)
}

/// Applies one container's changes: image, resources and args replace; each variable replaces
/// the one of its name or is added after the others.
fn change_container(container: &mut Container, change: &ContainerOverride) {
    if let Some(image) = &change.image {
        container.image = Some(image.clone());
    }
    if let Some(resources) = &change.resources {
        container.resources = Some(resources.clone());
    }
    if let Some(args) = &change.args {
        container.args = Some(args.clone());
    }
    for var in change.env.iter().flatten() {
        let env = container.env.get_or_insert_with(Vec::new);
        match env.iter_mut().find(|e| e.name == var.name) {
            Some(existing) => *existing = var.clone(),
            None => env.push(var.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.to_owned(),
            image: Some(image.to_owned()),
            env: Some(vec![env("LEVEL", "info")]),
            ..Container::default()
        }
    }

    fn env(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            ..EnvVar::default()
        }
    }

    fn template() -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![container("agent", "agent:1")],
                init_containers: Some(vec![container("setup", "setup:1")]),
                ..PodSpec::default()
            }),
        }
    }

    fn on(label: &str, name: &str, containers: Vec<ContainerOverride>) -> NodeOverride {
        NodeOverride {
            name: name.to_owned(),
            node_selector: LabelSelector {
                match_labels: Some([(label.to_owned(), "true".to_owned())].into()),
                match_expressions: None,
            },
            containers,
        }
    }

    fn change(name: &str) -> ContainerOverride {
        ContainerOverride {
            name: name.to_owned(),
            ..ContainerOverride::default()
        }
    }

    fn labels(pairs: &[&str]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|k| ((*k).to_owned(), "true".to_owned()))
            .collect()
    }

    #[test]
    fn the_first_matching_override_wins_and_others_keep_the_template_hash() {
        let gpu = on(
            "gpu",
            "gpu",
            vec![ContainerOverride {
                image: Some("agent:gpu".to_owned()),
                ..change("agent")
            }],
        );
        let big = on(
            "big",
            "big",
            vec![ContainerOverride {
                args: Some(vec!["--big".to_owned()]),
                ..change("agent")
            }],
        );
        let variants = NodeVariants::new(&template(), &[gpu, big], None).expect("valid");
        assert_eq!(variants.of_node(&labels(&["gpu", "big"])), Some(0));
        assert_eq!(variants.of_node(&labels(&["big"])), Some(1));
        assert_eq!(variants.of_node(&labels(&[])), None);
        assert_eq!(variants.base_hash, hash_template(&template(), None));
        assert_eq!(variants.hash(None, "revision"), variants.base_hash);
        let gpu = variants.get(0).expect("gpu");
        assert_ne!(gpu.hash, variants.base_hash);
        assert_eq!(variants.hash(Some(0), "revision"), gpu.hash);
        let image = gpu
            .template
            .spec
            .as_ref()
            .map(|s| s.containers[0].image.clone());
        assert_eq!(image, Some(Some("agent:gpu".to_owned())));
        assert!(variants.has_hash(&variants.base_hash) && variants.has_hash(&gpu.hash));
        assert!(!variants.has_hash("other"));
    }

    #[test]
    fn without_overrides_every_node_gets_the_revision_hash() {
        let variants = NodeVariants::new(&template(), &[], Some(2)).expect("valid");
        assert!(variants.is_empty());
        assert_eq!(variants.hash(None, "rev"), "rev");
        assert!(!variants.has_hash("rev"));
    }

    #[test]
    fn env_entries_replace_by_name_or_are_added_and_init_containers_can_change() {
        let o = on(
            "x",
            "x",
            vec![
                ContainerOverride {
                    env: Some(vec![env("LEVEL", "debug"), env("EXTRA", "1")]),
                    ..change("agent")
                },
                ContainerOverride {
                    image: Some("setup:2".to_owned()),
                    ..change("setup")
                },
            ],
        );
        let out = apply_override(&template(), &o).expect("valid");
        let spec = out.spec.expect("spec");
        assert_eq!(
            spec.containers[0].env,
            Some(vec![env("LEVEL", "debug"), env("EXTRA", "1")])
        );
        let init = spec.init_containers.expect("init");
        assert_eq!(init[0].image.as_deref(), Some("setup:2"));
    }

    #[test]
    fn unknown_and_duplicate_names_are_named_with_the_fix() {
        let bad = on("x", "gpu", vec![change("agnet")]);
        let err =
            NodeVariants::new(&template(), std::slice::from_ref(&bad), None).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "spec.nodeOverrides[gpu].containers[agnet]: Invalid value: the template has no \
             container or init container \"agnet\"; use one of: agent, setup"
        );
        let twice = on("x", "gpu", vec![change("agent"), change("agent")]);
        let dup = on("y", "gpu", vec![change("agent")]);
        let errors = validate(&template(), &[bad, twice, dup]);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].starts_with("spec.nodeOverrides[1].name: Duplicate value: \"gpu\""));
        assert!(messages[1].contains("containers[agnet]"));
    }
}
