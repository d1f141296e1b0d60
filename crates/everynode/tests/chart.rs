//! The Helm chart `deploy/helm/everynode`: `helm lint`, renders against golden files for three
//! value sets, values the controller would not run with refused with the fix, the plain
//! manifests of `deploy/` rendered from it, and `helm install`, `upgrade` and `uninstall` on the
//! local cluster — the controller running with the chart's ServiceAccount token.
//!
//! helm is built from its Go module into the control-plane cache (`cargo xtask cluster build`).
//! `EVERYNODE_UPDATE_GOLDEN=1` rewrites the golden files and the rendered manifests.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use everynode_testkit::deploy::token_kubeconfig_in;
use everynode_testkit::{TestEnv, eventually};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/everynode")
}

/// helm from the control-plane cache.
fn helm() -> PathBuf {
    everynode_cluster::layout::Cache::pinned()
        .tool(everynode_cluster::gobuild::HELM)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs helm; `Ok(stdout)` or `Err(stderr)`.
fn run_helm(args: &[&str], kubeconfig: Option<&Path>) -> Result<String, String> {
    let mut command = std::process::Command::new(helm());
    command.args(args).env(
        "HELM_CACHE_HOME",
        std::env::temp_dir().join("everynode-helm-cache"),
    );
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    let out = command.output().expect("helm runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("helm {}: {stderr}{stdout}", args.join(" ")))
    }
}

/// `helm template everynode` of the chart in namespace everynode-system, with `args`.
fn template(args: &[&str]) -> Result<String, String> {
    let chart = chart();
    let mut all = vec![
        "template",
        "everynode",
        chart.to_str().unwrap_or_default(),
        "--namespace",
        "everynode-system",
    ];
    all.extend_from_slice(args);
    run_helm(&all, None)
}

/// Compares `actual` with the committed `path`, or rewrites it with EVERYNODE_UPDATE_GOLDEN.
fn assert_file(path: &Path, actual: &str) {
    if std::env::var_os("EVERYNODE_UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == actual,
        "{} is out of date: EVERYNODE_UPDATE_GOLDEN=1 cargo test -p everynode --test chart",
        path.display()
    );
}

/// The value sets of `ci/`, by file stem.
fn value_sets() -> Vec<(String, PathBuf)> {
    let mut sets: Vec<(String, PathBuf)> = std::fs::read_dir(chart().join("ci"))
        .expect("the chart's ci/ directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            (stem.trim_end_matches("-values").to_owned(), p)
        })
        .collect();
    sets.sort();
    sets
}

#[test]
fn helm_lint_passes_for_every_value_set() {
    let chart = chart();
    let chart = chart.to_str().unwrap_or_default();
    run_helm(&["lint", "--strict", chart], None).unwrap_or_else(|e| panic!("{e}"));
    for (_, values) in value_sets() {
        let values = values.to_str().unwrap_or_default();
        run_helm(&["lint", "--strict", chart, "--values", values], None)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn the_chart_renders_as_the_golden_files_say() {
    let sets = value_sets();
    assert_eq!(sets.len(), 3, "three value sets in ci/: {sets:?}");
    for (name, values) in sets {
        let rendered = template(&["--values", values.to_str().unwrap_or_default()])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_file(
            &repo().join(format!("deploy/helm/golden/{name}.yaml")),
            &rendered,
        );
    }
}

#[test]
fn the_plain_manifests_are_the_chart_rendered() {
    for (file, templates, what) in [
        (
            "rbac.yaml",
            &["serviceaccount.yaml", "rbac.yaml"][..],
            "The controller's ServiceAccount and RBAC (exactly the calls it makes)",
        ),
        (
            "user-roles.yaml",
            &["aggregated-roles.yaml"][..],
            "everynode DaemonSets in the built-in view, edit and admin roles",
        ),
        (
            "controller.yaml",
            &[
                "deployment.yaml",
                "service.yaml",
                "poddisruptionbudget.yaml",
            ][..],
            "The controller Deployment, its metrics Service and PodDisruptionBudget",
        ),
    ] {
        let mut args = Vec::new();
        for t in templates {
            args.extend(["--show-only".to_owned(), format!("templates/{t}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let rendered = template(&args).unwrap_or_else(|e| panic!("{e}"));
        let header = format!(
            "# {what}.\n# Rendered from deploy/helm/everynode (default values, namespace \
             everynode-system); do not edit:\n# EVERYNODE_UPDATE_GOLDEN=1 cargo test -p everynode \
             --test chart renders it again.\n"
        );
        assert_file(&repo().join("deploy").join(file), &(header + &rendered));
    }
}

#[test]
fn the_chart_carries_the_crd_and_the_alerts_of_deploy() {
    for (copy, source) in [
        (
            "deploy/helm/everynode/crds/daemonsets.everynode.dev.yaml",
            "deploy/crds/daemonsets.everynode.dev.yaml",
        ),
        (
            "deploy/helm/everynode/files/alerts.yaml",
            "deploy/observability/alerts.yaml",
        ),
    ] {
        let source = std::fs::read_to_string(repo().join(source)).expect(source);
        assert_file(&repo().join(copy), &source);
    }
}

#[test]
fn values_the_controller_would_not_run_with_are_refused_with_the_fix() {
    for (args, says) in [
        (
            &["--set", "target=apps/v1"][..],
            "set appsV1.builtinControllerIsOff=true",
        ),
        (
            &[
                "--set",
                "replicas=2",
                "--set",
                "leaderElection.enabled=false",
            ][..],
            "need leaderElection.enabled=true",
        ),
        (&["--set", "target=apps"][..], "target"),
        (&["--set", "image.digest=latest"][..], "digest"),
        (&["--set", "replica=2"][..], "replica"),
    ] {
        let refused = template(args).expect_err("refused");
        assert!(refused.contains(says), "{args:?}: {refused}");
    }
}

#[tokio::test]
async fn helm_install_upgrade_and_uninstall_on_the_local_cluster() {
    let env = TestEnv::new("chart").await;
    let admin = env.cluster().kubeconfig();
    let release = env.namespace().to_owned();
    let chart = chart();
    let selector = serde_json::to_string(&env.group_selector()).expect("selector");
    let install = |verb: &'static str, extra: &'static [&'static str]| {
        let mut args = vec![
            verb.to_owned(),
            release.clone(),
            chart.display().to_string(),
            "--namespace".into(),
            release.clone(),
            "--set".into(),
            "replicas=1".into(),
            "--set-json".into(),
            format!("nodeSelector={selector}"),
            "--wait".into(),
            "--timeout=2m".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let nodes = env.add_nodes(2).await;
    let args = install("install", &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_helm(&args, Some(&admin)).unwrap_or_else(|e| panic!("{e}"));

    // The controller process with the chart's ServiceAccount token, its leader Lease in the
    // release's namespace (the chart's Role).
    let account = format!("{release}-everynode");
    let kubeconfig = token_kubeconfig_in(&env, &release, &account).await;
    let _controller = controller_command(&env, &kubeconfig)
        .args(["--leader-elect", "--lease-namespace", &release])
        .spawn()
        .expect("the controller starts");
    apply_set(
        &env,
        &plain_set(&env, "everynode.dev/v1alpha1", "example.test/agent:1"),
    )
    .await;
    wait_ready_pods(&env, "example.test/agent:1", nodes.len()).await;
    view_sees_everynode_sets(&env).await;

    let args = install("upgrade", &["--set", "workers=3"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_helm(&args, Some(&admin)).unwrap_or_else(|e| panic!("{e}"));
    let deployments: Api<Deployment> = Api::namespaced(env.client(), &release);
    let deployment = deployments
        .get(&format!("{release}-everynode-controller"))
        .await
        .expect("the Deployment");
    let args = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.args)
        .unwrap_or_default();
    assert!(args.contains(&"--workers=3".to_owned()), "{args:?}");

    run_helm(
        &["uninstall", &release, "--namespace", &release, "--wait"],
        Some(&admin),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let roles: Api<ClusterRole> = Api::all(env.client());
    assert!(
        roles
            .get_opt(&format!("{release}-everynode-controller"))
            .await
            .expect("get")
            .is_none(),
        "the ClusterRole outlived the release"
    );
    assert!(
        deployments
            .get_opt(&format!("{release}-everynode-controller"))
            .await
            .expect("get")
            .is_none(),
        "the Deployment outlived the release"
    );
}

/// A user with the built-in `view` role in the namespace can list everynode DaemonSets (the
/// chart's aggregated ClusterRole), and cannot change them.
async fn view_sees_everynode_sets(env: &TestEnv) {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
    let user = format!("{}-viewer", env.namespace());
    let bindings: Api<RoleBinding> = Api::namespaced(env.client(), env.namespace());
    let binding = RoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some("viewer".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "view".into(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.clone(),
            ..Default::default()
        }]),
    };
    bindings
        .create(&Default::default(), &binding)
        .await
        .expect("RoleBinding");
    let reviews: Api<SubjectAccessReview> = Api::all(env.client());
    let allowed = |verb: &'static str| {
        let reviews = reviews.clone();
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("everynode.dev".into()),
                    resource: Some("daemonsets".into()),
                    verb: Some(verb.into()),
                    namespace: Some(env.namespace().to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        async move {
            reviews
                .create(&Default::default(), &review)
                .await
                .map(|r| r.status.is_some_and(|s| s.allowed))
                .map_err(|e| e.to_string())
        }
    };
    eventually(
        "view to list everynode DaemonSets",
        Duration::from_secs(30),
        || async {
            match allowed("list").await? {
                true => Ok(()),
                false => Err("not allowed yet".to_owned()),
            }
        },
    )
    .await;
    assert_eq!(allowed("delete").await, Ok(false), "view may delete sets");
}
