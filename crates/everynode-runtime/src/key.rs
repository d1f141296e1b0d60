//! The key a set is known by in the controller's per-set state (expectations, error backoff,
//! template verdicts, pacing, metrics cleanup): `namespace/name`, as client-go's
//! `MetaNamespaceKeyFunc` forms it. The one place it is formatted.

use kube::{Resource, ResourceExt};

/// `namespace/name`.
pub fn set_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The key of a set object.
pub fn key_of<K: Resource>(set: &K) -> String {
    set_key(&set.namespace().unwrap_or_default(), &set.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_namespace_slash_name() {
        assert_eq!(
            set_key("kube-system", "fluent-bit"),
            "kube-system/fluent-bit"
        );
    }
}
