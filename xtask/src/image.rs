//! `cargo xtask image`: a static `everynode` binary and a reproducible OCI image holding only it,
//! CA certificates and the passwd/group entries of uid 65532, plus the image's SBOM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::oci::{self, Entry, ImageSpec};

/// Where the image is meant to be pushed; `cargo xtask image --reference` names another.
pub(crate) const REPOSITORY: &str = "ghcr.io/everynode/everynode";
/// The image's only platform.
pub(crate) const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Where the binary sits in the image.
pub(crate) const BINARY_PATH: &str = "usr/local/bin/everynode";
/// The non-root user the image runs as.
const USER: &str = "65532:65532";
/// The CA bundle's path in the image.
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, clap::Args)]
pub(crate) struct ImageArgs {
    /// Output directory.
    #[arg(long, default_value = "target/image")]
    pub out: PathBuf,
    /// `repository:tag` the image is loaded as (default: ghcr.io/everynode/everynode:VERSION).
    #[arg(long)]
    pub reference: Option<String>,
    /// Then build it again from a fresh worktree of the commit, with its own target directory,
    /// and fail unless both digests are equal (about 10 minutes more; needs a clean tree).
    #[arg(long)]
    pub check_reproducible: bool,
}

/// What `cargo xtask image` wrote.
#[derive(Debug)]
pub(crate) struct Built {
    /// The static binary.
    pub binary: PathBuf,
    /// The OCI layout directory.
    pub layout: PathBuf,
    /// The OCI + docker archive.
    pub archive: PathBuf,
    /// The CycloneDX SBOM.
    pub sbom: PathBuf,
    /// `repository:tag`.
    pub reference: String,
    /// The manifest digest (`sha256:...`), what a registry reports after a push.
    pub digest: String,
    /// The commit's time: every timestamp of the image (and of the release's archives).
    pub epoch: i64,
}

pub(crate) async fn run(args: ImageArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let built = build(&args).await?;
    let size = std::fs::metadata(&built.archive)?.len();
    println!("image    {} @ {}", built.reference, built.digest);
    println!("archive  {} ({})", built.archive.display(), mib(size));
    println!("layout   {}", built.layout.display());
    println!("sbom     {}", built.sbom.display());
    println!("binary   {}", built.binary.display());
    println!("took     {:.0?}", started.elapsed());
    if args.check_reproducible {
        let again = build_elsewhere(&built).await?;
        println!("again    {again} (a fresh worktree and target directory)");
        if again != built.digest {
            println!("NOT REPRODUCIBLE: the digests differ");
            return Ok(ExitCode::FAILURE);
        }
        println!("reproducible: both builds give {}", built.digest);
    }
    println!(
        "load it:  skopeo copy oci-archive:{} docker://REGISTRY/everynode:TAG\n          \
         docker load -i {0}   |   podman load -i {0}   |   kind load image-archive {0}",
        built.archive.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Builds the image of HEAD again in a new worktree with its own target directory; returns its
/// digest.
async fn build_elsewhere(first: &Built) -> anyhow::Result<String> {
    let root = crate::ci::workspace_root();
    let commit = Commit::of(&root)?;
    if commit.revision.ends_with("-dirty") {
        bail!("--check-reproducible builds the commit: commit or stash the changes first");
    }
    let tree = std::env::temp_dir().join(format!("everynode-repro-{}", std::process::id()));
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&root)
            .status()
    };
    let tree_arg = tree.display().to_string();
    if !git(&["worktree", "add", "--detach", &tree_arg, "HEAD"])?.success() {
        bail!("git worktree add {tree_arg} failed");
    }
    let out = tree.join("out");
    let status =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .args(["xtask", "image", "--out"])
            .arg(&out)
            .arg(format!("--reference={}", first.reference))
            .env("CARGO_TARGET_DIR", tree.join("target"))
            .current_dir(&tree)
            .status()
            .await;
    let digest = std::fs::read_to_string(
        out.join(format!("everynode-{}.digest", env!("CARGO_PKG_VERSION"))),
    );
    let _ = git(&["worktree", "remove", "--force", &tree_arg]);
    if !status?.success() {
        bail!("the second build failed");
    }
    Ok(digest?.trim().to_owned())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

/// Builds the binary and the image into `args.out`.
pub(crate) async fn build(args: &ImageArgs) -> anyhow::Result<Built> {
    let root = crate::ci::workspace_root();
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    let commit = Commit::of(&root)?;
    let version = env!("CARGO_PKG_VERSION");
    let reference = args
        .reference
        .clone()
        .unwrap_or_else(|| format!("{REPOSITORY}:{version}"));
    let tag = reference
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map(|(_, t)| t.to_owned())
        .with_context(|| format!("--reference {reference}: name a tag (repository:tag)"))?;
    let binary = build_static_binary(&root, &commit.revision).await?;
    let spec = ImageSpec {
        reference: reference.clone(),
        tag,
        epoch: commit.epoch,
        entrypoint: vec![format!("/{BINARY_PATH}")],
        user: USER.to_owned(),
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
            format!("SSL_CERT_FILE=/{CA_BUNDLE}"),
        ],
        labels: labels(version, &commit),
    };
    let image = oci::build(&spec, &root_filesystem(&std::fs::read(&binary)?))?;
    std::fs::create_dir_all(&out)?;
    let layout = out.join("oci");
    image.write_layout(&layout)?;
    let archive = out.join(format!("everynode-{version}.oci.tar"));
    std::fs::write(&archive, image.archive(commit.epoch)?)?;
    let digest = image.manifest.digest();
    std::fs::write(
        out.join(format!("everynode-{version}.digest")),
        format!("{digest}\n"),
    )?;
    let sbom = out.join(format!("everynode-{version}.cdx.json"));
    std::fs::write(
        &sbom,
        crate::sbom::cyclonedx(&root, "everynode", TARGET, &oci::rfc3339(commit.epoch))?,
    )?;
    Ok(Built {
        binary,
        layout,
        archive,
        sbom,
        reference,
        digest,
        epoch: commit.epoch,
    })
}

/// The commit the image is built from.
struct Commit {
    /// Full hash, with `-dirty` when the work tree has changes.
    revision: String,
    /// Committer time, seconds since the epoch: every timestamp in the image.
    epoch: i64,
}

impl Commit {
    fn of(root: &Path) -> anyhow::Result<Self> {
        let git = |args: &[&str]| -> anyhow::Result<String> {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(root)
                .output()
                .context("running git (the image takes its revision and time from the commit)")?;
            if !out.status.success() {
                bail!(
                    "git {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(String::from_utf8(out.stdout)?.trim().to_owned())
        };
        let mut revision = git(&["rev-parse", "HEAD"])?;
        if !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
            revision.push_str("-dirty");
        }
        let epoch = git(&["log", "-1", "--format=%ct"])?
            .parse()
            .context("git log --format=%ct")?;
        Ok(Self { revision, epoch })
    }
}

fn labels(version: &str, commit: &Commit) -> BTreeMap<String, String> {
    let source = env!("CARGO_PKG_REPOSITORY");
    [
        ("title", "everynode"),
        ("description", "A DaemonSet controller for Kubernetes"),
        ("source", source),
        ("url", source),
        ("version", version),
        ("revision", commit.revision.as_str()),
        ("created", &oci::rfc3339(commit.epoch)),
        ("licenses", env!("CARGO_PKG_LICENSE")),
    ]
    .into_iter()
    .map(|(k, v)| (format!("org.opencontainers.image.{k}"), v.to_owned()))
    .collect()
}

/// `cargo build --profile dist` of a statically linked `everynode` (glibc static-pie, rustls),
/// with the build's paths remapped so that where the tree sits does not change the bytes.
async fn build_static_binary(root: &Path, revision: &str) -> anyhow::Result<PathBuf> {
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let cargo_home = std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"),
        PathBuf::from,
    );
    let rustflags = [
        "-C target-feature=+crt-static".to_owned(),
        // getrandom finds glibc's getrandom with dlsym, which a static binary cannot: it would
        // fall back to /dev/urandom, which a chroot or a minimal sandbox may not have.
        "--cfg getrandom_backend=\"linux_getrandom\"".to_owned(),
        format!("--remap-path-prefix={}=/build/target", target_dir.display()),
        format!("--remap-path-prefix={}=/build/src", root.display()),
        format!("--remap-path-prefix={}=/cargo", cargo_home.display()),
    ]
    .join(" ");
    let ok = crate::ci::cargo(
        &[
            "build",
            "--locked",
            "--profile",
            "dist",
            "--target",
            TARGET,
            "-p",
            "everynode",
        ],
        // EVERYNODE_REVISION: the `revision` of `everynode_build_info`.
        &[
            ("RUSTFLAGS", rustflags.as_str()),
            ("EVERYNODE_REVISION", revision),
        ],
        &[],
    )
    .await?;
    if !ok {
        bail!("building the static everynode binary failed (see cargo's output above)");
    }
    Ok(target_dir.join(TARGET).join("dist").join("everynode"))
}

/// The image's files: the binary, CA certificates, and passwd/group for root and uid 65532.
fn root_filesystem(binary: &[u8]) -> Vec<Entry> {
    let text = |s: &str| s.as_bytes().to_vec();
    vec![
        Entry::dir("etc"),
        Entry::file(
            "etc/passwd",
            0o644,
            text(
                "root:x:0:0:root:/root:/sbin/nologin\n\
                 nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
            ),
        ),
        Entry::file("etc/group", 0o644, text("root:x:0:\nnonroot:x:65532:\n")),
        Entry::dir("etc/ssl"),
        Entry::dir("etc/ssl/certs"),
        Entry::file(CA_BUNDLE, 0o644, ca_bundle()),
        Entry::dir("home"),
        Entry {
            path: "home/nonroot".to_owned(),
            mode: 0o700,
            data: None,
        },
        Entry {
            path: "tmp".to_owned(),
            mode: 0o1777,
            data: None,
        },
        Entry::dir("usr"),
        Entry::dir("usr/local"),
        Entry::dir("usr/local/bin"),
        Entry::file(BINARY_PATH, 0o755, binary.to_vec()),
    ]
}

/// Mozilla's root certificates (the `webpki-root-certs` crate `Cargo.lock` pins) as PEM: the
/// same bytes on every machine.
fn ca_bundle() -> Vec<u8> {
    use base64::Engine;
    let mut pem = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_bundle_is_pem_with_many_roots() {
        let pem = String::from_utf8(ca_bundle()).unwrap_or_default();
        let certs = pem.matches("-----BEGIN CERTIFICATE-----").count();
        assert!(certs > 100, "{certs} certificates");
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
    }

    #[test]
    fn the_root_filesystem_lists_every_parent_directory() {
        let entries = root_filesystem(b"binary");
        for entry in &entries {
            if let Some((parent, _)) = entry.path.rsplit_once('/') {
                assert!(
                    entries.iter().any(|e| e.path == parent && e.data.is_none()),
                    "{} has no parent entry",
                    entry.path
                );
            }
        }
        let passwd = entries.iter().find(|e| e.path == "etc/passwd");
        let passwd = passwd.and_then(|e| e.data.clone()).unwrap_or_default();
        assert!(String::from_utf8_lossy(&passwd).contains(":65532:65532:"));
    }
}
