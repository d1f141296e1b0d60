//! The Argo CD health check of `deploy/argocd/`: the argocd-cm patch inlines `health.lua` byte
//! for byte (the script itself is tested under gopher-lua, Argo CD's Lua, in
//! `tools/argocd-health`).

use std::path::{Path, PathBuf};

const PATCH: &str = "deploy/argocd/argocd-cm-patch.yaml";
const SCRIPT: &str = "deploy/argocd/health.lua";
/// Argo CD's key for a health check of group `everynode.dev`, kind `DaemonSet`.
const KEY: &str = "resource.customizations.health.everynode.dev_DaemonSet";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `patch` up to its `KEY: |` line, then `script` as that literal block (4 spaces in).
fn with_script(patch: &str, script: &str) -> String {
    let key_line = format!("  {KEY}: |\n");
    let end = patch
        .find(&key_line)
        .map_or(patch.len(), |at| at + key_line.len());
    let mut out = patch[..end].to_owned();
    for line in script.lines() {
        if !line.is_empty() {
            out.push_str("    ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn the_argocd_cm_patch_inlines_health_lua() {
    let script = read(SCRIPT);
    if std::env::var_os("EVERYNODE_UPDATE_ARGOCD").is_some() {
        let updated = with_script(&read(PATCH), &script);
        std::fs::write(repo_root().join(PATCH), updated).expect("write the patch");
    }
    let patch: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(PATCH)).expect("YAML");
    assert_eq!(patch["kind"].as_str(), Some("ConfigMap"));
    assert_eq!(patch["metadata"]["name"].as_str(), Some("argocd-cm"));
    let inlined = patch["data"][KEY].as_str().unwrap_or_default();
    assert!(
        inlined == script,
        "{PATCH}: data.{KEY} differs from {SCRIPT}; rewrite it with \
         EVERYNODE_UPDATE_ARGOCD=1 cargo test -p everynode-api --test argocd"
    );
}
