//! `everynode plan --nodes/--pods/--revisions`'s snapshot decoding on arbitrary text: every
//! object decoded as each kind. It may refuse the input; it must not panic.
#![no_main]

use everynode::cli::plan::{kind_from_objects, parse_objects};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, Pod};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(objects) = parse_objects(text, "fuzz.yaml") else {
        return;
    };
    if let Ok(nodes) = kind_from_objects::<Node>(objects.clone(), "Node", "fuzz.yaml") {
        for node in &nodes {
            let _ = everynode_core::NodeView::from_node(node);
        }
    }
    if let Ok(pods) = kind_from_objects::<Pod>(objects.clone(), "Pod", "fuzz.yaml") {
        for pod in &pods {
            let _ = everynode_core::PodView::from_pod(pod, "uid");
        }
    }
    if let Ok(revisions) =
        kind_from_objects::<ControllerRevision>(objects, "ControllerRevision", "fuzz.yaml")
    {
        for revision in &revisions {
            let _ = everynode_core::RevisionView::from_revision(revision, "uid");
        }
    }
});
