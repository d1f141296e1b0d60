//! Pods and nodes decoded straight into their slim form ([`SlimDecode`]): the JSON decoder
//! skips what [`slim_pod`](super::slim_pod) and [`slim_node`](super::slim_node) would drop —
//! pod specs, node status, the `fieldsV1` trees of managed fields — instead of building it and
//! dropping it. A watch decoding [`Slim<Pod>`] caches the same pod as one slimming a whole pod,
//! at about a quarter of the decoding work.

use std::collections::BTreeMap;
use std::fmt;

use everynode_api::labels::IN_PLACE_UPDATE_ANNOTATION;
use k8s_openapi::api::core::v1::{
    Affinity, ContainerStatus, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodCondition,
    PodSpec, PodStatus, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

/// A Kubernetes object decoded into its slim form: a watch of `Slim<Pod>` or `Slim<Node>` reads
/// the same objects as one of `Pod` or `Node`, and yields them slimmed.
#[derive(Clone, Debug, PartialEq)]
pub struct Slim<T>(pub T);

/// An object type with a slim decoder.
pub trait SlimDecode: Sized {
    /// Decodes the slim form of the object: what slimming the whole object gives.
    fn decode_slim<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
}

impl<'de, T: SlimDecode> Deserialize<'de> for Slim<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::decode_slim(deserializer).map(Slim)
    }
}

impl<T: k8s_openapi::Resource> k8s_openapi::Resource for Slim<T> {
    const API_VERSION: &'static str = T::API_VERSION;
    const GROUP: &'static str = T::GROUP;
    const KIND: &'static str = T::KIND;
    const VERSION: &'static str = T::VERSION;
    const URL_PATH_SEGMENT: &'static str = T::URL_PATH_SEGMENT;
    type Scope = T::Scope;
}

impl<T: k8s_openapi::Metadata<Ty = ObjectMeta>> k8s_openapi::Metadata for Slim<T> {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        self.0.metadata()
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        self.0.metadata_mut()
    }
}

impl SlimDecode for Pod {
    fn decode_slim<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pod = PodJson::deserialize(deserializer)?;
        Ok(Pod {
            metadata: pod.metadata.into_meta(),
            spec: pod.spec.map(PodSpecJson::into_spec),
            status: pod.status.map(PodStatusJson::into_status),
        })
    }
}

impl SlimDecode for Node {
    fn decode_slim<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let node = NodeJson::deserialize(deserializer)?;
        let mut metadata = node.metadata.into_meta();
        metadata.annotations = None;
        Ok(Node {
            metadata,
            spec: node.spec.map(|spec| NodeSpec {
                taints: spec.taints,
                unschedulable: spec.unschedulable,
                ..NodeSpec::default()
            }),
            status: node.status.map(|status| NodeStatus {
                conditions: status.conditions.map(super::slim_node_conditions),
                ..NodeStatus::default()
            }),
        })
    }
}

#[derive(Deserialize)]
struct PodJson {
    #[serde(default)]
    metadata: MetaJson,
    spec: Option<PodSpecJson>,
    status: Option<PodStatusJson>,
}

#[derive(Deserialize)]
struct NodeJson {
    #[serde(default)]
    metadata: MetaJson,
    spec: Option<NodeSpecJson>,
    status: Option<NodeStatusJson>,
}

/// `ObjectMeta` without `generateName`, `finalizers`, the `fieldsV1` of managed fields and every
/// annotation but the in-place update record.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaJson {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    self_link: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<InPlaceAnnotation>,
    owner_references: Option<Vec<OwnerReference>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    managed_fields: Option<Vec<ManagedFieldsJson>>,
}

impl MetaJson {
    fn into_meta(self) -> ObjectMeta {
        ObjectMeta {
            name: self.name,
            namespace: self.namespace,
            uid: self.uid,
            resource_version: self.resource_version,
            generation: self.generation,
            self_link: self.self_link,
            labels: self.labels,
            annotations: self.annotations.and_then(|kept| {
                kept.0
                    .map(|record| BTreeMap::from([(IN_PLACE_UPDATE_ANNOTATION.to_owned(), record)]))
            }),
            owner_references: self.owner_references,
            creation_timestamp: self.creation_timestamp,
            deletion_timestamp: self.deletion_timestamp,
            deletion_grace_period_seconds: self.deletion_grace_period_seconds,
            managed_fields: self.managed_fields.map(|all| {
                all.into_iter()
                    .map(|entry| ManagedFieldsEntry {
                        api_version: entry.api_version,
                        fields_type: entry.fields_type,
                        fields_v1: None,
                        manager: entry.manager,
                        operation: entry.operation,
                        subresource: entry.subresource,
                        time: entry.time,
                    })
                    .collect()
            }),
            ..ObjectMeta::default()
        }
    }
}

/// A managed-fields entry without its `fieldsV1` tree.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManagedFieldsJson {
    api_version: Option<String>,
    fields_type: Option<String>,
    manager: Option<String>,
    operation: Option<String>,
    subresource: Option<String>,
    time: Option<Time>,
}

/// The in-place update record of an annotations map; every other annotation skipped.
struct InPlaceAnnotation(Option<String>);

impl<'de> Deserialize<'de> for InPlaceAnnotation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(InPlaceAnnotationVisitor)
    }
}

struct InPlaceAnnotationVisitor;

impl<'de> Visitor<'de> for InPlaceAnnotationVisitor {
    type Value = InPlaceAnnotation;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a map of annotations")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut record = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == IN_PLACE_UPDATE_ANNOTATION {
                record = Some(map.next_value::<String>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(InPlaceAnnotation(record))
    }
}

/// `spec.nodeName` and `spec.affinity` (small in a daemon pod), slimmed as a whole spec is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecJson {
    node_name: Option<String>,
    affinity: Option<Affinity>,
}

impl PodSpecJson {
    fn into_spec(self) -> PodSpec {
        super::slim_spec(PodSpec {
            node_name: self.node_name,
            affinity: self.affinity,
            ..PodSpec::default()
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStatusJson {
    phase: Option<String>,
    conditions: Option<Vec<PodCondition>>,
    container_statuses: Option<Vec<ContainerStatusJson>>,
    init_container_statuses: Option<Vec<ContainerStatusJson>>,
}

impl PodStatusJson {
    fn into_status(self) -> PodStatus {
        let statuses = |all: Vec<ContainerStatusJson>| {
            all.into_iter()
                .map(ContainerStatusJson::into_status)
                .collect()
        };
        PodStatus {
            phase: self.phase,
            conditions: self.conditions.map(super::slim_pod_conditions),
            container_statuses: self.container_statuses.map(statuses),
            init_container_statuses: self.init_container_statuses.map(statuses),
            ..PodStatus::default()
        }
    }
}

#[derive(Deserialize)]
struct ContainerStatusJson {
    #[serde(default)]
    name: String,
    #[serde(default)]
    image: String,
    state: Option<ContainerStateJson>,
}

impl ContainerStatusJson {
    fn into_status(self) -> ContainerStatus {
        let waiting = self.state.and_then(|state| state.waiting).map(|w| w.reason);
        super::container_status(self.name, self.image, waiting)
    }
}

#[derive(Deserialize)]
struct ContainerStateJson {
    waiting: Option<ContainerWaitingJson>,
}

#[derive(Deserialize)]
struct ContainerWaitingJson {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct NodeSpecJson {
    taints: Option<Vec<Taint>>,
    unschedulable: Option<bool>,
}

#[derive(Deserialize)]
struct NodeStatusJson {
    conditions: Option<Vec<NodeCondition>>,
}
