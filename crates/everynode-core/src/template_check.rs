//! Checks of a pod template that the apiserver makes while decoding a pod, before its
//! validation: a bad quantity (`cpu: lots`) is refused with a message that names no field, so
//! everynode names it here.

use k8s_openapi::api::core::v1::{PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

/// A field of the template the apiserver would refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    /// Path from the set, e.g. `spec.template.spec.containers[0].resources.limits[cpu]`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every quantity of the template that is not one (container, init and ephemeral container
/// resources, pod resources and overhead, emptyDir size limits), in field order.
pub fn template_problems(template: &PodTemplateSpec) -> Vec<FieldProblem> {
    let mut problems = Vec::new();
    let Some(spec) = template.spec.as_ref() else {
        return problems;
    };
    let base = "spec.template.spec";
    for (i, c) in spec.containers.iter().enumerate() {
        check_resources(
            &format!("{base}.containers[{i}]"),
            c.resources.as_ref(),
            &mut problems,
        );
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let path = format!("{base}.initContainers[{i}]");
        check_resources(&path, c.resources.as_ref(), &mut problems);
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        let path = format!("{base}.ephemeralContainers[{i}]");
        check_resources(&path, c.resources.as_ref(), &mut problems);
    }
    check_resources(base, spec.resources.as_ref(), &mut problems);
    if let Some(overhead) = &spec.overhead {
        check_map(&format!("{base}.overhead"), overhead, &mut problems);
    }
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if let Some(limit) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) {
            let field = format!("{base}.volumes[{i}].emptyDir.sizeLimit");
            check_quantity(field, limit, &mut problems);
        }
    }
    problems
}

fn check_resources(
    owner: &str,
    resources: Option<&ResourceRequirements>,
    problems: &mut Vec<FieldProblem>,
) {
    let Some(resources) = resources else { return };
    for (name, map) in [
        ("limits", &resources.limits),
        ("requests", &resources.requests),
    ] {
        if let Some(map) = map {
            check_map(&format!("{owner}.resources.{name}"), map, problems);
        }
    }
}

fn check_map(path: &str, map: &BTreeMap<String, Quantity>, problems: &mut Vec<FieldProblem>) {
    for (resource, value) in map {
        check_quantity(format!("{path}[{resource}]"), value, problems);
    }
}

fn check_quantity(field: String, value: &Quantity, problems: &mut Vec<FieldProblem>) {
    if !is_quantity(&value.0) {
        problems.push(FieldProblem {
            field,
            message: format!(
                "{:?} is not a quantity; use a number with an optional suffix, such as 100m, \
                 0.5, 128Mi or 1G",
                value.0
            ),
        });
    }
}

/// Whether `s` parses as a Kubernetes quantity (Go's `resource.ParseQuantity` grammar): a signed
/// decimal number, then a binary suffix (`Ki`…`Ei`), a decimal suffix (`n u m k M G T P E`, or
/// none) or a decimal exponent (`e3`, `E-2`).
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let digits = number.chars().filter(char::is_ascii_digit).count();
    if digits == 0 || number.matches('.').count() > 1 {
        return false;
    }
    match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        _ => suffix
            .strip_prefix(['e', 'E'])
            .map(|exp| exp.strip_prefix(['+', '-']).unwrap_or(exp))
            .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_the_apiserver_grammar() {
        for ok in [
            "1", "100m", "0.5", ".5", "5.", "128Mi", "1Gi", "1e3", "1E-2", "+1k", "-2", "1.5G",
            "3n", "7u",
        ] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in [
            "", "lots", "1 Gi", "1gi", "Mi", "1.2.3", "1e", "1e1.5", "--1", ".", "1KiB", "1ki",
        ] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn a_bad_quantity_is_named_by_its_field() {
        let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "spec": {
                "containers": [
                    {"name": "a", "image": "a", "resources": {"limits": {"cpu": "1"}}},
                    {"name": "b", "image": "b", "resources": {"limits": {"cpu": "lots"},
                                                             "requests": {"memory": "1Gi"}}}
                ],
                "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "big"}}]
            }
        }))
        .unwrap_or_default();
        let fields: Vec<String> = template_problems(&template)
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.template.spec.containers[1].resources.limits[cpu]",
                "spec.template.spec.volumes[0].emptyDir.sizeLimit"
            ]
        );
    }
}
