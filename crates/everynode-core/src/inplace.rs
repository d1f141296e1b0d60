//! In-place updates (`rollingUpdateType: InPlaceIfPossible`): which template changes a running
//! pod can take without being recreated.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// `(container, image)` pairs to set on a running pod.
pub type ImageChanges = Vec<(String, String)>;

/// The container image changes that turn a pod of `old` into one of `new`, when nothing else
/// differs (template labels and annotations aside, which are patched too); `None` when the pod
/// must be recreated. An empty list means only labels or annotations changed.
pub fn in_place_changes(
    old: &PodTemplateSpec,
    new: &PodTemplateSpec,
) -> Option<Vec<(String, String)>> {
    let (old_spec, new_spec) = (old.spec.as_ref()?, new.spec.as_ref()?);
    if old_spec.containers.len() != new_spec.containers.len() {
        return None;
    }
    let mut changes = Vec::new();
    for (o, n) in old_spec.containers.iter().zip(&new_spec.containers) {
        if o.name != n.name {
            return None;
        }
        if o.image != n.image {
            changes.push((n.name.clone(), n.image.clone()?));
        }
    }
    // Everything but the images must be equal.
    let without_images = |spec: &k8s_openapi::api::core::v1::PodSpec| -> Option<Value> {
        let mut value = serde_json::to_value(spec).ok()?;
        for container in value.get_mut("containers")?.as_array_mut()? {
            container.as_object_mut()?.remove("image");
        }
        Some(value)
    };
    (without_images(old_spec)? == without_images(new_spec)?).then_some(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(images: &[&str], host_network: bool) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                host_network: Some(host_network),
                containers: images
                    .iter()
                    .enumerate()
                    .map(|(i, image)| Container {
                        name: format!("c{i}"),
                        image: Some((*image).to_owned()),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
        }
    }

    #[test]
    fn image_only_changes_are_in_place() {
        let changes = in_place_changes(
            &template(&["a:1", "b:1"], false),
            &template(&["a:2", "b:1"], false),
        );
        assert_eq!(changes, Some(vec![("c0".to_owned(), "a:2".to_owned())]));
    }

    #[test]
    fn any_other_change_recreates() {
        assert_eq!(
            in_place_changes(&template(&["a:1"], false), &template(&["a:2"], true)),
            None
        );
        assert_eq!(
            in_place_changes(
                &template(&["a:1"], false),
                &template(&["a:1", "b:1"], false)
            ),
            None
        );
    }
}
