//! Finding a set by name among both kinds — everynode's `DaemonSet` and the built-in apps/v1
//! one — with suggestions when the name is unknown.

use anyhow::{Context, bail};
use everynode_core::SetView;
use everynode_runtime::target::SetResource;
use k8s_openapi::api::apps::v1 as apps;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

/// Which API a set belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SetKind {
    /// `everynode.dev/v1alpha1` DaemonSet.
    #[value(name = "everynode", alias = "evds")]
    Everynode,
    /// Built-in `apps/v1` DaemonSet.
    #[value(name = "apps/v1", alias = "ds")]
    AppsV1,
}

impl SetKind {
    /// The kind's `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Everynode => "everynode.dev/v1alpha1",
            Self::AppsV1 => "apps/v1",
        }
    }

    /// The kind of a manifest's `apiVersion` (everynode's unless it is `apps/v1`).
    pub fn of_api_version(api_version: &str) -> Self {
        if api_version == Self::AppsV1.api_version() {
            Self::AppsV1
        } else {
            Self::Everynode
        }
    }

    /// `kind.group` as kubectl prints it.
    pub fn resource(self) -> &'static str {
        match self {
            Self::Everynode => "daemonset.everynode.dev",
            Self::AppsV1 => "daemonset.apps",
        }
    }
}

/// A set found in the cluster.
#[derive(Clone, Debug)]
pub struct FoundSet {
    /// Its API.
    pub kind: SetKind,
    /// The planner's view (spec, status, generation, uid).
    pub view: SetView,
    /// `metadata.resourceVersion` as read: the precondition of writes based on what was read.
    pub resource_version: Option<String>,
}

impl FoundSet {
    fn of<K: SetResource>(kind: SetKind, set: &K) -> anyhow::Result<Self> {
        Ok(Self {
            kind,
            view: set.view()?,
            resource_version: set.resource_version(),
        })
    }

    /// `daemonset.everynode.dev/name`.
    pub fn display(&self) -> String {
        format!("{}/{}", self.kind.resource(), self.view.name)
    }
}

async fn get<K: SetResource>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<K>> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(found) => Ok(found),
        // The everynode CRD is not installed: there are no everynode sets.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(err) => {
            Err(err).with_context(|| format!("reading {} {namespace}/{name}", K::kind(&())))
        }
    }
}

async fn names<K: SetResource>(client: &Client, namespace: &str) -> Vec<String> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.list_metadata(&ListParams::default())
        .await
        .map(|list| list.items.iter().map(ResourceExt::name_any).collect())
        .unwrap_or_default()
}

/// Finds set `name` in `namespace`: of `kind` when given, else an everynode set first and a
/// built-in one second. An unknown name is an error that suggests similar names.
pub async fn find(
    client: &Client,
    namespace: &str,
    name: &str,
    kind: Option<SetKind>,
) -> anyhow::Result<FoundSet> {
    if kind != Some(SetKind::AppsV1)
        && let Some(set) = get::<everynode_api::DaemonSet>(client, namespace, name).await?
    {
        return FoundSet::of(SetKind::Everynode, &set);
    }
    if kind != Some(SetKind::Everynode)
        && let Some(set) = get::<apps::DaemonSet>(client, namespace, name).await?
    {
        return FoundSet::of(SetKind::AppsV1, &set);
    }
    let mut known = names::<everynode_api::DaemonSet>(client, namespace).await;
    known.extend(names::<apps::DaemonSet>(client, namespace).await);
    known.sort();
    known.dedup();
    bail!("{}", not_found_message(name, namespace, &known))
}

/// Every set of `namespace` (all namespaces when `None`), both kinds, sorted by namespace and
/// name.
pub async fn list(client: &Client, namespace: Option<&str>) -> anyhow::Result<Vec<FoundSet>> {
    let mut found = Vec::new();
    for set in list_kind::<everynode_api::DaemonSet>(client, namespace).await? {
        found.push(FoundSet::of(SetKind::Everynode, &set)?);
    }
    for set in list_kind::<apps::DaemonSet>(client, namespace).await? {
        found.push(FoundSet::of(SetKind::AppsV1, &set)?);
    }
    found.sort_by(|a, b| (&a.view.namespace, &a.view.name).cmp(&(&b.view.namespace, &b.view.name)));
    Ok(found)
}

async fn list_kind<K: SetResource>(
    client: &Client,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<K>> {
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Vec::new()),
        Err(err) => Err(err).with_context(|| format!("listing {}s", K::kind(&()))),
    }
}

/// Patches a set of either kind.
pub async fn patch(
    client: &Client,
    set: &FoundSet,
    patch: &Patch<serde_json::Value>,
) -> anyhow::Result<()> {
    let params = PatchParams::default();
    let (namespace, name) = (&set.view.namespace, &set.view.name);
    let result = match set.kind {
        SetKind::Everynode => {
            Api::<everynode_api::DaemonSet>::namespaced(client.clone(), namespace)
                .patch(name, &params, patch)
                .await
                .map(|_| ())
        }
        SetKind::AppsV1 => Api::<apps::DaemonSet>::namespaced(client.clone(), namespace)
            .patch(name, &params, patch)
            .await
            .map(|_| ()),
    };
    result.with_context(|| format!("patching {}", set.display()))
}

/// A merge patch of a set with the resourceVersion it was read at as the precondition: a
/// write based on what was read fails instead of overwriting a concurrent change.
pub async fn patch_as_read(
    client: &Client,
    set: &FoundSet,
    mut patch: serde_json::Value,
) -> anyhow::Result<()> {
    if let Some(version) = &set.resource_version {
        patch["metadata"] = serde_json::json!({ "resourceVersion": version });
    }
    self::patch(client, set, &Patch::Merge(patch)).await
}

/// Replaces a set's `spec.template`, and on the everynode kind its `spec.nodeOverrides` (`None`:
/// none) — read, modify, write under the read resourceVersion: a concurrent change makes it
/// fail instead of being overwritten.
pub async fn replace_template(
    client: &Client,
    set: &FoundSet,
    template: serde_json::Value,
    node_overrides: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    match set.kind {
        SetKind::Everynode => {
            replace_template_of::<everynode_api::DaemonSet>(client, set, template, node_overrides)
                .await
        }
        SetKind::AppsV1 => {
            replace_template_of::<apps::DaemonSet>(client, set, template, None).await
        }
    }
}

async fn replace_template_of<K: SetResource>(
    client: &Client,
    set: &FoundSet,
    template: serde_json::Value,
    node_overrides: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let (namespace, name) = (&set.view.namespace, &set.view.name);
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let current = api
        .get(name)
        .await
        .with_context(|| format!("reading {}", set.display()))?;
    let mut object = serde_json::to_value(&current)?;
    object["spec"]["template"] = template;
    if set.kind == SetKind::Everynode
        && let Some(spec) = object["spec"].as_object_mut()
    {
        match node_overrides {
            Some(overrides) => spec.insert("nodeOverrides".to_owned(), overrides),
            None => spec.remove("nodeOverrides"),
        };
    }
    let updated: K = serde_json::from_value(object)
        .with_context(|| format!("the template does not fit {}", set.display()))?;
    api.replace(name, &kube::api::PostParams::default(), &updated)
        .await
        .with_context(|| format!("updating the template of {}", set.display()))?;
    Ok(())
}

/// "not found" with the names most like `name`.
pub fn not_found_message(name: &str, namespace: &str, known: &[String]) -> String {
    let mut message = format!("DaemonSet \"{name}\" not found in namespace \"{namespace}\"");
    let similar = similar_names(name, known);
    if !similar.is_empty() {
        message.push_str(&format!("; did you mean {}?", similar.join(", ")));
    } else if known.is_empty() {
        message.push_str(" (it has no DaemonSets; pick one with -n NAMESPACE, or list all with `everynode status -A`)");
    } else {
        message.push_str(&format!("; its DaemonSets: {}", known.join(", ")));
    }
    message
}

/// Names within a small edit distance of `name`, or containing it, closest first.
pub fn similar_names(name: &str, known: &[String]) -> Vec<String> {
    let length = name.chars().count();
    let limit = if length <= 3 {
        1
    } else {
        (length / 3).clamp(2, 3)
    };
    let mut scored: Vec<(usize, &String)> = known
        .iter()
        .filter_map(|candidate| {
            let distance = edit_distance(name, candidate);
            let related =
                distance <= limit || candidate.contains(name) || name.contains(candidate.as_str());
            related.then_some((distance, candidate))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, n)| n.clone()).collect()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            let value = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
            current.push(value);
        }
        previous = current;
    }
    previous.last().copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn typos_and_fragments_suggest_the_closest_names() {
        let sets = known(&["fluent-bit", "node-exporter", "agent"]);
        assert_eq!(similar_names("agnet", &sets), ["agent"]);
        assert_eq!(similar_names("exporter", &sets), ["node-exporter"]);
        assert!(similar_names("ceph", &sets).is_empty());
    }

    #[test]
    fn the_message_names_the_set_the_namespace_and_what_to_do() {
        let sets = known(&["fluent-bit", "agent"]);
        assert_eq!(
            not_found_message("agnet", "ops", &sets),
            "DaemonSet \"agnet\" not found in namespace \"ops\"; did you mean agent?"
        );
        assert_eq!(
            not_found_message("ceph", "ops", &sets),
            "DaemonSet \"ceph\" not found in namespace \"ops\"; its DaemonSets: fluent-bit, agent"
        );
        assert!(not_found_message("ceph", "empty", &[]).contains("-n NAMESPACE"));
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("agent", "agent"), 0);
        assert_eq!(edit_distance("agnet", "agent"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
