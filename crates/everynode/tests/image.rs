//! The shipped image run as a container runtime would run it: the archive `cargo xtask image`
//! writes is copied with skopeo and unpacked with umoci, and the entrypoint of the runtime spec
//! umoci writes runs as the image's own USER in a chroot of its root filesystem, with a pod's
//! ServiceAccount mount (a token of `deploy/`'s ServiceAccount) and the in-cluster environment.
//! It must become ready on `/readyz` and run a set. `cargo xtask ci` runs it after building the
//! image (`podman run` is refused on the CI machines, so this is how the image is proven).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use everynode_testkit::deploy::{
    SERVICE_ACCOUNT_NAME, SERVICE_ACCOUNT_NAMESPACE, install_deploy_rbac, service_account_token,
};
use everynode_testkit::{TestEnv, eventually};

/// The image archive under test.
const ARCHIVE_ENV: &str = "EVERYNODE_IMAGE_ARCHIVE";
/// Where a pod's ServiceAccount token, CA and namespace are mounted.
const SERVICE_ACCOUNT_MOUNT: &str = "var/run/secrets/kubernetes.io/serviceaccount";

#[tokio::test]
#[ignore = "needs the image: `cargo xtask image`, then EVERYNODE_IMAGE_ARCHIVE=<its .oci.tar>, \
            as root, with skopeo and umoci (`cargo xtask ci` does all of it)"]
async fn the_image_runs_as_its_own_user_and_runs_a_set() {
    let archive = std::env::var_os(ARCHIVE_ENV).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{ARCHIVE_ENV} is not set: build the image with `cargo xtask image` and name its archive")
    });
    let env = TestEnv::new("image").await;
    let work = tempdir(&env);
    let bundle = unpack(&archive, &work);
    let spec = RuntimeSpec::read(&bundle);
    assert_ne!(spec.user, (0, 0), "the image runs as root");

    everynode_testkit::install_crd(&env.client()).await;
    install_deploy_rbac(&env.client()).await;
    let rootfs = bundle.join("rootfs");
    mount_service_account(&env, &rootfs).await;
    let nodes = env.add_nodes(2).await;
    let port = free_port();
    // Found in this process's PATH: the child's environment is the image's alone.
    let mut controller = tokio::process::Command::new(chroot());
    controller
        .arg(format!("--userspec={}:{}", spec.user.0, spec.user.1))
        .arg(&rootfs)
        .args(&spec.args)
        .args(["controller", "--namespace", env.namespace()])
        .arg(format!("--http-addr=127.0.0.1:{port}"))
        .env_clear()
        .envs(spec.env.iter().filter_map(|kv| kv.split_once('=')))
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env(
            "KUBERNETES_SERVICE_PORT",
            env.cluster().state.ports.apiserver.to_string(),
        )
        .env("POD_NAME", "everynode-image-test")
        .env("POD_NAMESPACE", SERVICE_ACCOUNT_NAMESPACE)
        .env("EVERYNODE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let _controller = controller.spawn().expect("chroot runs the entrypoint");

    eventually(
        "/readyz of the image's controller",
        Duration::from_secs(60),
        || async {
            match http_get(port, "/readyz").await {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    apply_set(
        &env,
        &plain_set(&env, "everynode.dev/v1alpha1", "example.test/agent:1"),
    )
    .await;
    wait_ready_pods(&env, "example.test/agent:1", nodes.len()).await;
    let _ = std::fs::remove_dir_all(&work);
}

/// `chroot` (coreutils) from this process's PATH.
fn chroot() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chroot"))
        .find(|path| path.exists())
        .expect("chroot (coreutils) in PATH")
}

/// A scratch directory of this test.
fn tempdir(env: &TestEnv) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("everynode-{}", env.namespace()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// `skopeo copy` of the archive into an OCI layout, then `umoci unpack` of it: the runtime
/// bundle (root filesystem and `config.json`).
fn unpack(archive: &Path, work: &Path) -> PathBuf {
    let layout = work.join("layout");
    let bundle = work.join("bundle");
    run(
        "skopeo",
        &[
            "copy".into(),
            "--quiet".into(),
            format!("oci-archive:{}", archive.display()),
            format!("oci:{}:test", layout.display()),
        ],
    );
    run(
        "umoci",
        &[
            "unpack".into(),
            "--image".into(),
            format!("{}:test", layout.display()),
            bundle.display().to_string(),
        ],
    );
    bundle
}

fn run(program: &str, args: &[String]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): install it (apt-get install skopeo umoci)")
        });
    assert!(status.success(), "{program} {} failed", args.join(" "));
}

/// What the image asks a runtime to run, from the bundle's OCI runtime spec.
struct RuntimeSpec {
    args: Vec<String>,
    env: Vec<String>,
    user: (u64, u64),
}

impl RuntimeSpec {
    fn read(bundle: &Path) -> Self {
        let path = bundle.join("config.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let spec: serde_json::Value = serde_json::from_str(&text).expect("config.json is JSON");
        let process = &spec["process"];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        };
        let id = |key: &str| process["user"][key].as_u64().unwrap_or_default();
        Self {
            args: strings(&process["args"]),
            env: strings(&process["env"]),
            user: (id("uid"), id("gid")),
        }
    }
}

/// Writes what the kubelet mounts into a pod of `deploy/`'s ServiceAccount: a fresh token, the
/// cluster's CA and the namespace.
async fn mount_service_account(env: &TestEnv, rootfs: &Path) {
    let mount = rootfs.join(SERVICE_ACCOUNT_MOUNT);
    std::fs::create_dir_all(&mount).expect("the ServiceAccount mount");
    let token = service_account_token(env, SERVICE_ACCOUNT_NAME).await;
    let ca = env.cluster().dir.pki_dir().join("ca.crt");
    std::fs::write(mount.join("token"), token).expect("token");
    std::fs::copy(&ca, mount.join("ca.crt")).expect("ca.crt");
    std::fs::write(mount.join("namespace"), SERVICE_ACCOUNT_NAMESPACE).expect("namespace");
}
