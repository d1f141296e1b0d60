//! The observability pack of `deploy/observability/` speaks of the metrics the controller
//! exports: every series name in the alert rules and the dashboard is one `/metrics` writes.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use everynode_runtime::metrics::{
    LatencyLabels, Metrics, Outcome, RequestLabels, RetryLabels, RolloutState, SetKind, SetLabels,
    SetSeries,
};

fn observability_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/observability")
}

/// Every sample name of a controller whose families all hold a series.
fn exported() -> BTreeSet<String> {
    let m = Metrics::new(SetKind::everynode);
    let set = SetLabels {
        target: SetKind::everynode,
        namespace: "ns".into(),
        name: "agent".into(),
    };
    let series = SetSeries {
        desired: 1,
        current: 1,
        ready: 1,
        available: 1,
        unavailable: 0,
        updated: 1,
        misscheduled: 0,
        observed_generation: 1,
        metadata_generation: 1,
        state: RolloutState::complete,
        wave: (0, 0),
        failed_nodes: 0,
        skipped_nodes: 0,
        blocked_nodes: 0,
    };
    m.observe_set(&set, &series);
    m.observe_rollback(&set);
    m.observe_reconcile(Outcome::ok, Duration::from_millis(1));
    m.observe_error("api");
    m.observe_leading(true);
    m.observe_watch_restart("pods");
    m.pods_created.inc();
    m.pods_deleted.inc();
    m.api_retries
        .get_or_create(&RetryLabels { code: 429 })
        .inc();
    let (verb, resource) = ("list".to_owned(), "pods".to_owned());
    m.api
        .requests
        .get_or_create(&RequestLabels {
            verb: verb.clone(),
            resource: resource.clone(),
            code: "200".into(),
        })
        .inc();
    m.api
        .latency
        .get_or_create(&LatencyLabels { verb, resource })
        .observe(0.01);
    let text = m.render().expect("metrics render");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Metric names (`everynode_*`, `process_*`) a text mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["everynode_", "process_"] {
        for (at, _) in text.match_indices(prefix) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// The PromQL expressions of the alert rules.
fn rule_expressions() -> String {
    let path = observability_dir().join("alerts.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/observability/alerts.yaml");
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("alerts.yaml is YAML");
    let mut exprs = String::new();
    for group in rules["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            exprs.push_str(rule["expr"].as_str().unwrap_or_default());
            exprs.push('\n');
        }
    }
    assert!(!exprs.trim().is_empty(), "alerts.yaml has no rules");
    exprs
}

/// The queries of the dashboard's panels and variables.
fn dashboard_queries() -> String {
    let path = observability_dir().join("dashboard.json");
    let text = std::fs::read_to_string(&path).expect("deploy/observability/dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut queries = String::new();
    collect_queries(&dashboard, &mut queries);
    assert!(!queries.trim().is_empty(), "the dashboard has no queries");
    queries
}

fn collect_queries(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                if matches!(key.as_str(), "expr" | "query" | "definition")
                    && let Some(q) = v.as_str()
                {
                    out.push_str(q);
                    out.push('\n');
                }
                collect_queries(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

#[test]
fn alerts_and_dashboard_use_only_exported_metrics() {
    let exported = exported();
    for (what, text) in [
        ("alerts.yaml", rule_expressions()),
        ("dashboard.json", dashboard_queries()),
    ] {
        let used = metric_names(&text);
        assert!(!used.is_empty(), "{what} uses no everynode metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} uses metrics the controller does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
}

#[test]
fn the_name_scanner_finds_names_in_promql() {
    let names = metric_names(
        "sum by (target) (everynode_leader) and rate(everynode_api_requests_total[5m]) \
         / process_max_fds and x_everynode_not",
    );
    let names: Vec<_> = names.into_iter().collect();
    assert_eq!(
        names,
        [
            "everynode_api_requests_total",
            "everynode_leader",
            "process_max_fds"
        ]
    );
}

/// promtool from the control-plane cache.
fn promtool(args: &[&str]) -> String {
    let promtool = everynode_cluster::layout::Cache::pinned()
        .tool(everynode_cluster::gobuild::PROMTOOL)
        .unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(&promtool)
        .args(args)
        .current_dir(observability_dir())
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}: {text}", args.join(" "));
    text
}

#[test]
fn promtool_accepts_the_rules() {
    let said = promtool(&["check", "rules", "alerts.yaml"]);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn the_alerts_pass_their_promtool_unit_tests() {
    let said = promtool(&["test", "rules", "alerts_test.yaml"]);
    assert!(said.contains("SUCCESS"), "{said}");
}
