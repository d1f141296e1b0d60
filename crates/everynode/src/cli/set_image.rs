//! `everynode set image SET CONTAINER=IMAGE…` — kubectl's `set image` for both kinds of set
//! (kubectl's own does not handle custom resources).

use anyhow::bail;
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use kube::api::Patch;
use serde_json::{Value, json};

use super::sets::{self, FoundSet};

/// One `CONTAINER=IMAGE` argument; `*` is every container and init container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRequest {
    /// The container name, or `*`.
    pub container: String,
    /// The new image.
    pub image: String,
}

/// Parses `CONTAINER=IMAGE`. For clap's `value_parser`.
pub fn parse_request(text: &str) -> Result<ImageRequest, String> {
    match text.split_once('=') {
        Some((container, image)) if !container.is_empty() && !image.is_empty() => {
            Ok(ImageRequest {
                container: container.to_owned(),
                image: image.to_owned(),
            })
        }
        _ => Err(format!(
            "{text:?} is not CONTAINER=IMAGE (e.g. agent=registry.example/agent:v2, or *=IMAGE for every container)"
        )),
    }
}

/// An image that changes: where in the template, and from what to what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageChange {
    /// `containers` or `initContainers`.
    pub list: &'static str,
    /// Index in that list.
    pub index: usize,
    /// The container's name.
    pub container: String,
    /// The image before.
    pub from: Option<String>,
    /// The image after.
    pub to: String,
}

/// The image changes `requests` make to `template`. A container name the template does not
/// have is an error naming the ones it has.
pub fn image_changes(
    template: &PodTemplateSpec,
    requests: &[ImageRequest],
) -> Result<Vec<ImageChange>, String> {
    let spec = template.spec.clone().unwrap_or_default();
    let lists: [(&'static str, Vec<Container>); 2] = [
        ("initContainers", spec.init_containers.unwrap_or_default()),
        ("containers", spec.containers),
    ];
    let mut changes: Vec<ImageChange> = Vec::new();
    for request in requests {
        let mut found = false;
        for (list, containers) in &lists {
            for (index, container) in containers.iter().enumerate() {
                if request.container != "*" && request.container != container.name {
                    continue;
                }
                found = true;
                changes.retain(|c| !(c.list == *list && c.index == index));
                if container.image.as_deref() != Some(request.image.as_str()) {
                    changes.push(ImageChange {
                        list,
                        index,
                        container: container.name.clone(),
                        from: container.image.clone(),
                        to: request.image.clone(),
                    });
                }
            }
        }
        if !found {
            let names: Vec<&str> = lists
                .iter()
                .flat_map(|(_, containers)| containers.iter().map(|c| c.name.as_str()))
                .collect();
            return Err(format!(
                "the pod template has no container {:?}; its containers: {}",
                request.container,
                names.join(", ")
            ));
        }
    }
    // Init containers first, as the template lists them.
    changes.sort_by_key(|c| (c.list != "initContainers", c.index));
    Ok(changes)
}

/// A JSON patch for `changes`: each image replaced only if the container at that index still
/// has the name it had when read (a concurrent change to the list fails instead).
pub fn json_patch(changes: &[ImageChange]) -> Value {
    let ops: Vec<Value> = changes
        .iter()
        .flat_map(|c| {
            let at = format!("/spec/template/spec/{}/{}", c.list, c.index);
            [
                json!({"op": "test", "path": format!("{at}/name"), "value": c.container}),
                json!({"op": "replace", "path": format!("{at}/image"), "value": c.to}),
            ]
        })
        .collect();
    Value::Array(ops)
}

/// `set image`: patches the images; says what changed.
pub async fn set_image(
    client: &kube::Client,
    set: &FoundSet,
    requests: &[ImageRequest],
) -> anyhow::Result<String> {
    let changes = match image_changes(&set.view.spec.template, requests) {
        Ok(changes) => changes,
        Err(message) => bail!("{}: {message}", set.display()),
    };
    if changes.is_empty() {
        return Ok(format!(
            "{} image unchanged (the containers already run these images)",
            set.display()
        ));
    }
    let patch: json_patch::Patch = serde_json::from_value(json_patch(&changes))?;
    sets::patch(client, set, &Patch::Json(patch)).await?;
    let mut out = format!("{} image updated", set.display());
    for change in &changes {
        out.push_str(&format!(
            "\n  {}: {} -> {}",
            change.container,
            change.from.as_deref().unwrap_or("<none>"),
            change.to
        ));
    }
    for note in override_notes(set.view.spec.overrides(), &changes) {
        out.push_str(&format!("\n  note: {note}"));
    }
    Ok(out)
}

/// The node overrides that set their own image for a changed container: their nodes keep it.
fn override_notes(
    overrides: &[everynode_api::NodeOverride],
    changes: &[ImageChange],
) -> Vec<String> {
    overrides
        .iter()
        .flat_map(|o| {
            o.containers
                .iter()
                .filter(|c| c.image.is_some() && changes.iter().any(|ch| ch.container == c.name))
                .map(move |c| {
                    format!(
                        "node override {} sets the image of {} on its nodes ({}); change it in \
                         spec.nodeOverrides",
                        o.name,
                        c.name,
                        c.image.as_deref().unwrap_or_default()
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> PodTemplateSpec {
        serde_json::from_value(json!({
            "spec": {
                "initContainers": [{"name": "setup", "image": "busybox:1.36"}],
                "containers": [
                    {"name": "agent", "image": "agent:v1"},
                    {"name": "sidecar", "image": "proxy:v1"}
                ]
            }
        }))
        .unwrap()
    }

    fn request(text: &str) -> ImageRequest {
        parse_request(text).unwrap()
    }

    #[test]
    fn a_named_container_gets_the_image() {
        let changes = image_changes(&template(), &[request("sidecar=proxy:v2")]).unwrap();
        assert_eq!(
            changes,
            [ImageChange {
                list: "containers",
                index: 1,
                container: "sidecar".to_owned(),
                from: Some("proxy:v1".to_owned()),
                to: "proxy:v2".to_owned(),
            }]
        );
        assert_eq!(
            json_patch(&changes),
            json!([
                {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "sidecar"},
                {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "proxy:v2"}
            ])
        );
    }

    #[test]
    fn a_star_sets_every_container_and_a_later_name_wins() {
        let changes = image_changes(
            &template(),
            &[request("*=base:v3"), request("agent=agent:v2")],
        )
        .unwrap();
        let images: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.container.as_str(), c.to.as_str()))
            .collect();
        assert_eq!(
            images,
            [
                ("setup", "base:v3"),
                ("agent", "agent:v2"),
                ("sidecar", "base:v3")
            ]
        );
    }

    #[test]
    fn an_override_with_its_own_image_is_named() {
        let changes = image_changes(&template(), &[request("agent=agent:v2")]).unwrap();
        let gpu = everynode_api::NodeOverride {
            name: "gpu".into(),
            containers: vec![everynode_api::ContainerOverride {
                name: "agent".into(),
                image: Some("agent:gpu".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            override_notes(&[gpu], &changes),
            [
                "node override gpu sets the image of agent on its nodes (agent:gpu); change it in \
              spec.nodeOverrides"
            ]
        );
    }

    #[test]
    fn an_unchanged_image_is_no_change() {
        assert!(
            image_changes(&template(), &[request("agent=agent:v1")])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_unknown_container_names_the_known_ones() {
        let err = image_changes(&template(), &[request("agnet=agent:v2")]).unwrap_err();
        assert_eq!(
            err,
            "the pod template has no container \"agnet\"; its containers: setup, agent, sidecar"
        );
    }

    #[test]
    fn an_argument_without_an_image_is_refused() {
        for bad in ["agent", "agent=", "=agent:v2"] {
            assert!(parse_request(bad).unwrap_err().contains("CONTAINER=IMAGE"));
        }
    }
}
