//! The controller process with its wall clock 5 minutes ahead of the cluster's, and 5 minutes
//! behind (Debian's libfaketime preloaded; the control plane keeps the real time): a healthy
//! rollout completes with no spurious failure, and a revision that never becomes ready trips its
//! 10-second progress deadline about 10 seconds after the rollout starts — not at once, and not
//! 5 minutes late. The controller reads the apiserver's clock from its responses.

use std::time::{Duration, Instant};

use everynode_api::DaemonSet;
use everynode_testkit::deploy::{controller_account, token_kubeconfig};
use everynode_testkit::{NEVER_READY, SIMULATE_LABEL, TestEnv, eventually};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

mod common;

use common::{controller_command, plain_set, ready_pods_on};

const TIMEOUT: Duration = Duration::from_secs(60);
const DEADLINE_SECONDS: u64 = 10;

/// The controller as the test's ServiceAccount, its wall clock moved by `skew` (`+5m`, `-5m`).
async fn skewed_controller(env: &TestEnv, skew: &str) -> tokio::process::Child {
    let Some(library) = everynode_testkit::faketime::library() else {
        panic!(
            "Debian's {} is not installed (as root: apt-get install {0}; `cargo xtask ci` \
             installs it)",
            everynode_testkit::faketime::PACKAGE
        );
    };
    let account = controller_account(env, "skew", |_| {}).await;
    controller_command(env, &token_kubeconfig(env, &account).await)
        .env("EVERYNODE_LOG", "info,kube=warn")
        .env("LD_PRELOAD", library)
        .env("FAKETIME", skew)
        // Timers and timeouts keep the real monotonic clock; only the wall clock is off.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .spawn()
        .expect("start everynode controller")
}

fn set(env: &TestEnv) -> DaemonSet {
    let mut set = plain_set(env, "everynode.dev/v1alpha1", "agent:v1");
    set["spec"]["updateStrategy"] = json!({"rollingUpdate": {
        "maxUnavailable": 1, "progressDeadlineSeconds": DEADLINE_SECONDS,
        "failurePolicy": "Pause"
    }});
    serde_json::from_value(set).expect("the test set decodes")
}

/// The set's rollout failure reason, if any.
async fn failure(sets: &Api<DaemonSet>) -> Option<String> {
    sets.get("agent")
        .await
        .ok()?
        .status?
        .failure
        .map(|f| f.reason)
}

/// Rolls out twice under `skew`: a good revision (no failure) and a never-ready one (its
/// deadline trips on time). Returns the seconds the deadline took.
async fn deadlines_hold_with_the_clock_off_by(skew: &str) -> f64 {
    let env = TestEnv::new(&format!("clock{}", skew.replace(['+', '-'], "x"))).await;
    let nodes = env.add_nodes(3).await;
    everynode_testkit::install_crd(&env.client()).await;
    let _controller = skewed_controller(&env, skew).await;
    let sets = env.api::<DaemonSet>();
    eventually("the set to be created", TIMEOUT, || async {
        sets.create(&PostParams::default(), &set(&env))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    for image in ["agent:v1", "agent:v2"] {
        if image != "agent:v1" {
            let patch = json!({"spec": {"template": {"spec": {"containers": [
                {"name": "agent", "image": image}]}}}});
            sets.patch("agent", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .expect("new image");
        }
        eventually(&format!("{image} ready on every node"), TIMEOUT, || async {
            if let Some(reason) = failure(&sets).await {
                panic!("clock {skew}: spurious rollout failure {reason} rolling out {image}");
            }
            match ready_pods_on(&env, image).await {
                n if n == nodes.len() => Ok(()),
                n => Err(format!("{n} ready")),
            }
        })
        .await;
    }

    let never_ready = json!({"spec": {"template": {
        "metadata": {"labels": {SIMULATE_LABEL: NEVER_READY}},
        "spec": {"containers": [{"name": "agent", "image": "agent:v3"}]}
    }}});
    sets.patch("agent", &PatchParams::default(), &Patch::Merge(never_ready))
        .await
        .expect("never-ready revision");
    let started = Instant::now();
    eventually(
        "the progress deadline to trip",
        Duration::from_secs(90),
        || async {
            match failure(&sets).await {
                Some(reason) if reason == "ProgressDeadlineExceeded" => Ok(()),
                other => Err(format!("failure {other:?}")),
            }
        },
    )
    .await;
    started.elapsed().as_secs_f64()
}

#[tokio::test]
async fn deadlines_hold_with_the_controller_clock_five_minutes_off() {
    let ahead = deadlines_hold_with_the_clock_off_by("+5m").await;
    let behind = deadlines_hold_with_the_clock_off_by("-5m").await;
    println!(
        "{DEADLINE_SECONDS} s progress deadline tripped after {ahead:.1} s (clock 5 min ahead) \
         and {behind:.1} s (5 min behind)"
    );
    let deadline = DEADLINE_SECONDS as f64;
    for (skew, took) in [("ahead", ahead), ("behind", behind)] {
        assert!(
            took >= deadline - 2.0 && took <= deadline + 8.0,
            "clock {skew}: the {deadline} s deadline tripped after {took:.1} s"
        );
    }
}
