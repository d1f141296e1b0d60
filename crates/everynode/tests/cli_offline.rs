//! `everynode plan` offline on snapshot files (no cluster): every node-exclusion reason, the
//! waves of a rolling update, and every kind of bad input with its clear error.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `everynode ARGS` with no cluster configured: (exit code, stdout, stderr).
fn everynode(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_everynode"))
        .args(args)
        .current_dir(root())
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("NO_COLOR", "1")
        .output()
        .expect("run everynode");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const NODES: &str = "examples/snapshot/nodes.yaml";

fn plan(set: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["plan", "-f", set, "--nodes", NODES];
    args.extend_from_slice(extra);
    everynode(&args)
}

/// The WHY column of `node` in a plan's node table.
fn why(out: &str, node: &str) -> String {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(node))
        .map(|l| l.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no line for {node} in:\n{out}"))
}

#[test]
fn the_example_rolling_update_goes_one_node_at_a_time() {
    let (code, out, err) = plan(
        "examples/snapshot/fluent-bit.yaml",
        &[
            "--pods",
            "examples/snapshot/pods.yaml",
            "--revisions",
            "examples/snapshot/revisions.yaml",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("Plan for ops/fluent-bit: a pod on 3 of 4 nodes\n"),
        "{out}"
    );
    assert!(
        why(&out, "control-plane")
            .contains("taint node-role.kubernetes.io/control-plane:NoSchedule not tolerated"),
        "{out}"
    );
    for (wave, node) in ["kwok-node-000", "kwok-node-001", "kwok-node-002"]
        .iter()
        .enumerate()
    {
        assert!(
            out.contains(&format!(
                "Wave {}: 1 node(s), at most 1 unavailable\n  {node}: delete (pod deleted: rolling update within maxUnavailable), create",
                wave + 1
            )),
            "{out}"
        );
    }
    assert!(
        out.contains("Converges after 3 wave(s) with 3 pod(s)"),
        "{out}"
    );

    // The set as it is now (no template change): nothing to do.
    let current = std::fs::read_to_string(root().join("examples/snapshot/fluent-bit.yaml"))
        .expect("read example")
        .replace("fluent-bit:4.0.2", "fluent-bit:4.0.1");
    let current_path =
        std::env::temp_dir().join(format!("everynode-current-{}.yaml", std::process::id()));
    std::fs::write(&current_path, current).expect("write");
    let (code, out, _) = plan(
        current_path.to_str().unwrap_or_default(),
        &[
            "--pods",
            "examples/snapshot/pods.yaml",
            "--revisions",
            "examples/snapshot/revisions.yaml",
        ],
    );
    let _ = std::fs::remove_file(&current_path);
    assert_eq!(code, 0);
    assert!(out.contains("Nothing to do"), "{out}");
}

#[test]
fn a_new_set_lands_on_every_eligible_node_in_one_wave_as_json_too() {
    let (code, out, err) = plan("examples/snapshot/fluent-bit.yaml", &["-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        report["waves"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(
        report["waves"][0]["creates"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(report["podsAfter"], 3);
    assert_eq!(report["converged"], true);
}

#[test]
fn every_exclusion_reason_is_named() {
    let (_, out, err) = plan("testdata/cli/storage-ssd.yaml", &[]);
    assert!(
        why(&out, "kwok-node-002").contains("nodeSelector disk=ssd"),
        "{out}{err}"
    );
    let (_, out, err) = plan("testdata/cli/zone-a.yaml", &[]);
    assert_eq!(why(&out, "kwok-node-000"), "", "{out}{err}");
    assert!(why(&out, "kwok-node-001").contains("affinity"), "{out}");
    let (_, out, err) = plan("testdata/cli/pinned.yaml", &[]);
    assert!(
        why(&out, "kwok-node-000").contains("kwok-node-001"),
        "{out}{err}"
    );
    assert_eq!(why(&out, "kwok-node-001"), "", "{out}");
    let (_, out, _) = plan("examples/snapshot/fluent-bit.yaml", &[]);
    assert!(
        why(&out, "control-plane").contains("not tolerated"),
        "{out}"
    );
}

#[test]
fn bad_input_names_the_file_the_place_and_what_was_expected() {
    let (code, _, err) = plan("testdata/cli/invalid.yaml", &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("testdata/cli/invalid.yaml: invalid DaemonSet: spec.updateStrategy.rollingUpdate.partition"),
        "{err}"
    );
    let (code, _, err) = everynode(&[
        "plan",
        "-f",
        "examples/snapshot/fluent-bit.yaml",
        "--nodes",
        "testdata/cli/not-yaml.yaml",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("testdata/cli/not-yaml.yaml: ") && err.contains("line 4 column 1"),
        "{err}"
    );
    let (code, _, err) = everynode(&[
        "plan",
        "-f",
        "examples/snapshot/fluent-bit.yaml",
        "--nodes",
        "examples/snapshot/pods.yaml",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("item 1 is a \"Pod\", expected a Node"),
        "{err}"
    );
    let (code, _, err) = everynode(&["plan", "-f", NODES, "--nodes", NODES]);
    assert_eq!(code, 1);
    assert!(
        err.contains("expected exactly one DaemonSet, found 4 objects"),
        "{err}"
    );
    let (code, _, err) = everynode(&["plan", "-f", "no/such/file.yaml", "--nodes", NODES]);
    assert_eq!(code, 1);
    assert!(err.contains("no/such/file.yaml: cannot read"), "{err}");
}

#[test]
fn without_a_cluster_the_error_says_how_to_get_one() {
    let (code, _, err) = everynode(&["status"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("KUBECONFIG") || err.contains("kubeconfig"),
        "{err}"
    );
}

#[test]
fn the_plan_shows_zone_waves_bake_time_and_the_nodes_a_partition_holds() {
    let (code, out, err) = plan(
        "testdata/cli/fluent-bit-zones.yaml",
        &[
            "--pods",
            "examples/snapshot/pods.yaml",
            "--revisions",
            "examples/snapshot/revisions.yaml",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let wave_lines: Vec<&str> = out.lines().filter(|l| l.starts_with("Wave ")).collect();
    assert_eq!(wave_lines.len(), 2, "{out}");
    assert!(wave_lines[1].contains("after waiting"), "{out}");
    let first_node = |wave: usize| {
        let at = out.find(wave_lines[wave]).unwrap_or(0) + wave_lines[wave].len() + 1;
        out[at..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_end_matches(':')
            .to_owned()
    };
    assert_eq!(first_node(0), "kwok-node-002", "zone-c first: {out}");
    assert_eq!(first_node(1), "kwok-node-001", "then zone-b: {out}");
    assert!(
        out.contains("Held: 1 node(s) stay on their revision\n  kwok-node-000: update deferred: held on the old revision by partition"),
        "{out}"
    );
}

/// Runs `everynode ARGS` with at most 2 GiB of address space: hostile input must end in a clear
/// error, not in the allocator giving up.
fn everynode_bounded(args: &[&str]) -> (i32, String) {
    let mut command = vec!["ulimit -v 2097152; exec \"$0\" \"$@\"".to_owned()];
    command.push(env!("CARGO_BIN_EXE_everynode").to_owned());
    command.extend(args.iter().map(|a| (*a).to_owned()));
    let output = std::process::Command::new("sh")
        .arg("-c")
        .args(&command)
        .current_dir(root())
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("run everynode");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("everynode-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

#[test]
fn hostile_input_gets_a_clear_error_in_bounded_memory() {
    // A YAML alias bomb: nine levels of ten aliases each, a billion strings once expanded.
    let mut bomb = String::from(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for level in 1..10 {
        let previous = format!("*a{}", level - 1);
        let list = vec![previous; 10].join(",");
        bomb.push_str(&format!("a{level}: &a{level} [{list}]\n"));
    }
    let bomb_file = scratch("bomb.yaml");
    std::fs::write(&bomb_file, bomb).expect("write bomb");
    let bomb_path = bomb_file.display().to_string();
    let started = std::time::Instant::now();
    let (code, err) = everynode_bounded(&["plan", "-f", &bomb_path, "--nodes", NODES]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&bomb_path) && err.contains("repetition limit"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    // A 100 MB file is refused before it is read.
    let big = scratch("big.yaml");
    let file = std::fs::File::create(&big).expect("create big file");
    file.set_len(100 * 1000 * 1000).expect("size big file");
    let big_path = big.display().to_string();
    let set = "examples/snapshot/fluent-bit.yaml";
    let (code, err) = everynode_bounded(&["plan", "-f", set, "--nodes", &big_path]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("95.4 MiB is more than the 64 MiB"), "{err}");

    // A DaemonSet whose metadata is not an object (found by fuzzing: it panicked).
    let odd = scratch("odd.yaml");
    std::fs::write(&odd, "kind: DaemonSet\nmetadata: 5\n").expect("write odd set");
    let odd_path = odd.display().to_string();
    let (code, err) = everynode_bounded(&["plan", "-f", &odd_path, "--nodes", NODES]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("metadata of the DaemonSet is not an object"),
        "{err}"
    );

    // A kubeconfig that is not one names the file.
    let bad = scratch("kubeconfig");
    std::fs::write(&bad, "clusters: [[[").expect("write kubeconfig");
    let bad_path = bad.display().to_string();
    let (code, err) = everynode_bounded(&["status", "--kubeconfig", &bad_path]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("reading kubeconfig {bad_path}")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(big.parent().expect("scratch dir"));
}

#[test]
fn the_plan_names_the_override_each_node_gets_and_a_bad_override() {
    // The snapshot's nodes, kwok-node-001 with a GPU and kwok-node-002 an arm64 node.
    let nodes = std::fs::read_to_string(root().join(NODES)).expect("read nodes");
    let nodes = nodes
        .replace(
            "      kubernetes.io/hostname: kwok-node-001\n",
            "      kubernetes.io/hostname: kwok-node-001\n      nvidia.com/gpu.present: \"true\"\n",
        )
        .replace(
            "      kubernetes.io/arch: amd64\n      kubernetes.io/hostname: kwok-node-002\n",
            "      kubernetes.io/arch: arm64\n      kubernetes.io/hostname: kwok-node-002\n",
        );
    let nodes_path = scratch("override-nodes.yaml");
    std::fs::write(&nodes_path, nodes).expect("write nodes");
    let nodes_path = nodes_path.to_string_lossy().into_owned();
    let set = "examples/node-overrides.yaml";
    let (code, out, err) = everynode(&["plan", "-f", set, "--nodes", &nodes_path]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().skip(1).take(5).collect();
    assert_eq!(
        rows,
        [
            "NODE           POD  OVERRIDE  WHY",
            "control-plane  no   -         node excluded: taint node-role.kubernetes.io/control-plane:NoSchedule not tolerated",
            "kwok-node-000  yes  -",
            "kwok-node-001  yes  gpu",
            "kwok-node-002  yes  arm64",
        ],
        "{out}"
    );

    // An override of a container the template lacks: the plan says so and creates nothing.
    let manifest = std::fs::read_to_string(root().join(set)).expect("read example");
    let bad = manifest.replacen(
        "        - name: agent\n          image: registry.example.com/node-agent:1.4.0-arm64",
        "        - name: agnet\n          image: registry.example.com/node-agent:1.4.0-arm64",
        1,
    );
    assert_ne!(bad, manifest);
    let bad_path = scratch("bad-override.yaml");
    std::fs::write(&bad_path, bad).expect("write set");
    let bad_path = bad_path.to_string_lossy().into_owned();
    let (code, out, err) = everynode(&["plan", "-f", &bad_path, "--nodes", &nodes_path]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "Problem: spec.nodeOverrides[arm64].containers[agnet]: Invalid value: the template \
             has no container or init container \"agnet\"; use one of: agent\n"
        ),
        "{out}"
    );
    assert!(!out.contains("create ("), "{out}");
}

#[test]
fn the_plan_shows_which_nodes_pull_the_new_images_ahead() {
    let (code, out, err) = plan(
        "testdata/cli/fluent-bit-pre-pull.yaml",
        &[
            "--pods",
            "examples/snapshot/pods.yaml",
            "--revisions",
            "examples/snapshot/revisions.yaml",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let waves: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("Wave 1"))
        .filter(|l| l.starts_with("Wave") || l.contains("prePull"))
        .collect();
    assert_eq!(
        waves,
        [
            "Wave 1: 1 node(s), at most 1 unavailable",
            "  pulling the new images ahead (prePull): kwok-node-000, kwok-node-001",
            "Wave 2: 1 node(s), at most 1 unavailable",
            "  pulling the new images ahead (prePull): kwok-node-002",
            "Wave 3: 1 node(s), at most 1 unavailable",
        ],
        "{out}"
    );
}
