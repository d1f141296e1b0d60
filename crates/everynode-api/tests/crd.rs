//! The CRD: the committed manifest equals the generated one, and its validation rules (evaluated
//! locally, as the apiserver evaluates them at admission) accept the valid examples and reject
//! every manifest under `testdata/invalid/` with the expected message.

use std::path::{Path, PathBuf};

use everynode_api::DaemonSet;
use everynode_api::crd::{CRD_MANIFEST_PATH, crd_yaml, validate};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> (String, serde_json::Value) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: serde_json::Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (text, value)
}

/// The value of a `# key: value` header line.
fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("# {key}: ");
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(prefix.as_str()))
}

#[test]
fn committed_crd_matches_generated() {
    let generated = crd_yaml().expect("CRD renders");
    let path = repo_root().join(CRD_MANIFEST_PATH);
    if std::env::var_os("EVERYNODE_UPDATE_CRD").is_some() {
        std::fs::write(&path, &generated).expect("write CRD");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{CRD_MANIFEST_PATH} is out of date; regenerate it with \
         `cargo run -p everynode -- crd > {CRD_MANIFEST_PATH}` \
         (or EVERYNODE_UPDATE_CRD=1 cargo test -p everynode-api)"
    );
}

#[test]
fn crd_names_columns_and_subresources() {
    let crd = everynode_api::crd::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("daemonsets.everynode.dev")
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    let short = crd.spec.names.short_names.clone().unwrap_or_default();
    for taken in ["ds", "daemon", "ads", "eds"] {
        assert!(
            !short.iter().any(|s| s == taken),
            "short name {taken} collides"
        );
    }
    assert_eq!(short, vec!["evds".to_owned()]);
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some())
    );
    let columns: Vec<String> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.to_uppercase())
        .collect();
    assert_eq!(
        columns,
        [
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE"
        ]
    );
}

#[test]
fn valid_manifests_are_accepted_and_decode() {
    let files = yaml_files("testdata/valid");
    assert!(files.len() >= 3);
    for path in files {
        let (_, value) = load(&path);
        let violations = validate(&value, None);
        assert!(violations.is_empty(), "{}: {violations:?}", path.display());
        let set: DaemonSet = serde_json::from_value(value)
            .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
        assert!(
            !set.spec
                .template
                .spec
                .unwrap_or_default()
                .containers
                .is_empty()
        );
    }
}

#[test]
fn invalid_manifests_are_rejected_with_a_clear_message() {
    let files = yaml_files("testdata/invalid");
    assert!(
        files.len() >= 20,
        "expected at least 20 invalid manifests, found {}",
        files.len()
    );
    for path in files {
        let (text, value) = load(&path);
        let expected = header(&text, "expect")
            .unwrap_or_else(|| panic!("{} lacks an `# expect:` header", path.display()));
        let old = header(&text, "old").map(|old| load(&repo_root().join("testdata").join(old)).1);
        let violations = validate(&value, old.as_ref());
        assert!(
            violations.iter().any(|v| v.to_string().contains(expected)),
            "{}: expected a violation containing {expected:?}, got {violations:#?}",
            path.display()
        );
    }
}

#[test]
fn selector_may_stay_the_same_on_update() {
    let (_, value) = load(&repo_root().join("testdata/valid/node-exporter.yaml"));
    let mut updated = value.clone();
    updated["spec"]["template"]["spec"]["containers"][0]["image"] = "node-exporter:v2".into();
    assert_eq!(validate(&updated, Some(&value)), vec![]);
}

#[test]
fn defaults_match_apps_v1() {
    let (_, value) = load(&repo_root().join("testdata/valid/storage-ondelete.yaml"));
    let set: DaemonSet = serde_json::from_value(value).expect("decodes");
    assert_eq!(set.spec.effective_min_ready_seconds(), 0);
    assert_eq!(set.spec.effective_revision_history_limit(), 10);
    let mut spec = set.spec.clone();
    spec.update_strategy = None;
    let strategy = spec.effective_update_strategy();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.expect("defaulted");
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(0)));

    // everynode accepts maxSurge alone; maxUnavailable then defaults to 0 (surge only), so no
    // manifest apps/v1 accepts changes meaning.
    for surge in [IntOrString::Int(1), IntOrString::String("10%".to_owned())] {
        spec.update_strategy = Some(everynode_api::DaemonSetUpdateStrategy {
            type_: None,
            rolling_update: Some(everynode_api::RollingUpdateDaemonSet {
                max_surge: Some(surge.clone()),
                ..Default::default()
            }),
        });
        let rolling = spec
            .effective_update_strategy()
            .rolling_update
            .expect("set");
        assert_eq!(
            rolling.max_unavailable,
            Some(IntOrString::Int(0)),
            "{surge:?}"
        );
    }
    spec.update_strategy = Some(everynode_api::DaemonSetUpdateStrategy {
        type_: None,
        rolling_update: Some(everynode_api::RollingUpdateDaemonSet {
            max_surge: Some(IntOrString::String("0%".to_owned())),
            ..Default::default()
        }),
    });
    let rolling = spec
        .effective_update_strategy()
        .rolling_update
        .expect("set");
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
}
