//! The node readiness gate key each set declared at its last reconcile: what a set that is gone
//! (or no longer gated) leaves for `crate::gate::sync` to look at again.

use std::collections::HashMap;
use std::sync::Mutex;

/// The gate key of each set, by set key.
#[derive(Debug, Default)]
pub struct GateKeys {
    keys: Mutex<HashMap<String, String>>,
}

impl GateKeys {
    /// Records the gate key `set_key` declares now (`None`: none); returns the key it declared
    /// before, if that is another one (its nodes must be looked at again).
    pub fn register(&self, set_key: &str, taint_key: Option<&str>) -> Option<String> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let before = match taint_key {
            Some(key) => keys.insert(set_key.to_owned(), key.to_owned()),
            None => keys.remove(set_key),
        };
        before.filter(|b| Some(b.as_str()) != taint_key)
    }
}
