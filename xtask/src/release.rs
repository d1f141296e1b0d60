//! `cargo xtask release`: everything a release ships, in one directory — the static binary's
//! tarball (with completions and kubectl's plugin completion script), the image archive and its
//! digest, the SBOM, the packaged chart, the CRD, the plain manifests pinned to the image digest,
//! krew's plugin manifest, the CHANGELOG section, and `SHA256SUMS` of all of it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::image::{self, Built, ImageArgs};
use crate::oci::{self, Entry};

/// Where releases are downloaded from (krew's manifest points there).
const DOWNLOAD_BASE: &str = "https://everynode.dev/everynode/releases/download";

#[derive(Debug, clap::Args)]
pub(crate) struct ReleaseArgs {
    /// Output directory (emptied first).
    #[arg(long, default_value = "target/release-artifacts")]
    pub out: PathBuf,
}

pub(crate) async fn run(args: ReleaseArgs) -> anyhow::Result<ExitCode> {
    let files = build(&args).await?;
    for file in &files {
        let size = std::fs::metadata(file)?.len();
        println!("{:>10}  {}", size, file.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the release into `args.out`; returns its files.
pub(crate) async fn build(args: &ReleaseArgs) -> anyhow::Result<Vec<PathBuf>> {
    let root = crate::ci::workspace_root();
    let out = root.join(&args.out);
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    let version = env!("CARGO_PKG_VERSION");
    let built = image::build(&ImageArgs {
        out: out.clone(),
        reference: None,
        check_reproducible: false,
    })
    .await?;
    std::fs::remove_dir_all(&built.layout)?;
    let tarball = binary_tarball(&root, &out, &built, version)?;
    let checksum = write_checksum(&tarball)?;
    write(
        &out,
        "plugin.yaml",
        krew_manifest(version, &tarball, &checksum)?,
    )?;
    package_chart(&root, &out)?;
    let crd = std::fs::read(root.join("deploy/crds/daemonsets.everynode.dev.yaml"))?;
    write(&out, &format!("everynode-{version}-crd.yaml"), crd)?;
    write(
        &out,
        &format!("everynode-{version}.yaml"),
        plain_manifests(&root, &built)?.into_bytes(),
    )?;
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md"))?;
    write(
        &out,
        &format!("everynode-{version}-CHANGES.md"),
        changes_of(&changelog, version)?.into_bytes(),
    )?;
    sha256sums(&out)
}

fn write(out: &Path, name: &str, bytes: Vec<u8>) -> anyhow::Result<PathBuf> {
    let path = out.join(name);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// `everynode-VERSION-x86_64-linux.tar.gz`: the binary, kubectl's plugin completion script,
/// completion scripts, LICENSE and README.
fn binary_tarball(
    root: &Path,
    out: &Path,
    built: &Built,
    version: &str,
) -> anyhow::Result<PathBuf> {
    let binary = std::fs::read(&built.binary)?;
    let mut entries = vec![
        Entry::file("everynode", 0o755, binary),
        Entry::file(
            "kubectl_complete-everynode",
            0o755,
            completion(&built.binary, "kubectl-plugin")?,
        ),
        Entry::file("LICENSE", 0o644, std::fs::read(root.join("LICENSE"))?),
        Entry::file("README.md", 0o644, std::fs::read(root.join("README.md"))?),
        Entry::dir("completions"),
    ];
    for (shell, file) in [
        ("bash", "everynode.bash"),
        ("zsh", "_everynode"),
        ("fish", "everynode.fish"),
    ] {
        let script = completion(&built.binary, shell)?;
        entries.push(Entry::file(&format!("completions/{file}"), 0o644, script));
    }
    let tarball = oci::gzip(&oci::tar_of(&entries, built.epoch)?)?;
    write(
        out,
        &format!("everynode-{version}-x86_64-linux.tar.gz"),
        tarball,
    )
}

/// `everynode completion SHELL` of the built binary.
fn completion(binary: &Path, shell: &str) -> anyhow::Result<Vec<u8>> {
    let output = std::process::Command::new(binary)
        .args(["completion", shell])
        .output()
        .with_context(|| format!("running {} completion {shell}", binary.display()))?;
    if !output.status.success() || output.stdout.is_empty() {
        bail!(
            "everynode completion {shell} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output.stdout)
}

/// Builds the release and checks it: every checksum, krew's sha256 of the tarball, the
/// tarball's contents. Returns the image archive.
pub(crate) async fn build_and_check(args: &ReleaseArgs) -> anyhow::Result<PathBuf> {
    let files = build(args).await?;
    let dir = crate::ci::workspace_root().join(&args.out);
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS"))?;
    for line in sums.lines() {
        let (sum, name) = line.split_once("  ").context("a SHA256SUMS line")?;
        let actual = oci::sha256_digest(&std::fs::read(dir.join(name))?);
        if actual.trim_start_matches("sha256:") != sum {
            bail!("SHA256SUMS: {name} does not match");
        }
    }
    let find = |suffix: &str| {
        files
            .iter()
            .find(|f| f.to_string_lossy().ends_with(suffix))
            .cloned()
            .with_context(|| format!("the release has no *{suffix}"))
    };
    let tarball = find("-x86_64-linux.tar.gz")?;
    let sum = oci::sha256_digest(&std::fs::read(&tarball)?);
    let krew = std::fs::read_to_string(dir.join("plugin.yaml"))?;
    if !krew.contains(&format!("sha256: {}", sum.trim_start_matches("sha256:"))) {
        bail!("plugin.yaml does not carry the tarball's sha256");
    }
    let mut names = Vec::new();
    let tar = flate2::read::GzDecoder::new(std::fs::File::open(&tarball)?);
    for entry in tar::Archive::new(tar).entries()? {
        names.push(entry?.path()?.display().to_string());
    }
    for wanted in [
        "everynode",
        "kubectl_complete-everynode",
        "completions/_everynode",
        "LICENSE",
    ] {
        if !names.iter().any(|n| n == wanted) {
            bail!("the tarball has no {wanted}: {names:?}");
        }
    }
    for suffix in [".tgz", "-crd.yaml", "-CHANGES.md", ".cdx.json", ".digest"] {
        find(suffix)?;
    }
    find(".oci.tar")
}

/// Writes `FILE.sha256` (`sha256sum` format) next to `file`; returns the hex digest.
fn write_checksum(file: &Path) -> anyhow::Result<String> {
    let digest = oci::sha256_digest(&std::fs::read(file)?);
    let hex = digest.trim_start_matches("sha256:").to_owned();
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    std::fs::write(
        file.with_file_name(format!("{name}.sha256")),
        format!("{hex}  {name}\n"),
    )?;
    Ok(hex)
}

/// krew's manifest of the `everynode` plugin (`kubectl everynode`).
fn krew_manifest(version: &str, tarball: &Path, sha256: &str) -> anyhow::Result<Vec<u8>> {
    let name = tarball.file_name().unwrap_or_default().to_string_lossy();
    let manifest = format!(
        r#"apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: everynode
spec:
  version: v{version}
  homepage: {home}
  shortDescription: Plan, explain and roll out DaemonSets
  description: |
    Shows where a DaemonSet runs and why a node has no pod (in the scheduler's own words), plans
    a set before it is applied, and follows, pauses, undoes and restarts rollouts — of
    everynode.dev DaemonSets and of the built-in apps/v1 ones.
  caveats: |
    Completion: kubectl 1.26+ completes `kubectl everynode` when kubectl_complete-everynode (in
    the archive) is in your PATH.
  platforms:
    - selector:
        matchLabels:
          os: linux
          arch: amd64
      uri: {DOWNLOAD_BASE}/v{version}/{name}
      sha256: {sha256}
      files:
        - from: everynode
          to: .
        - from: kubectl_complete-everynode
          to: .
        - from: LICENSE
          to: .
      bin: everynode
"#,
        home = env!("CARGO_PKG_REPOSITORY"),
    );
    Ok(manifest.into_bytes())
}

/// `helm package` of the chart into `out`.
fn package_chart(root: &Path, out: &Path) -> anyhow::Result<()> {
    let helm = everynode_cluster::layout::Cache::pinned().tool(everynode_cluster::gobuild::HELM)?;
    let status = std::process::Command::new(helm)
        .args(["package", "deploy/helm/everynode", "--destination"])
        .arg(out)
        .current_dir(root)
        .status()
        .context("running helm package")?;
    if !status.success() {
        bail!("helm package failed ({status})");
    }
    Ok(())
}

/// The plain manifests of `deploy/` in install order, the image pinned to the built digest.
fn plain_manifests(root: &Path, built: &Built) -> anyhow::Result<String> {
    let mut all = String::new();
    for file in [
        "namespace.yaml",
        "crds/daemonsets.everynode.dev.yaml",
        "rbac.yaml",
        "user-roles.yaml",
        "controller.yaml",
    ] {
        let text = std::fs::read_to_string(root.join("deploy").join(file))?;
        all.push_str("---\n");
        all.push_str(&text);
    }
    let by_tag = format!("image: {}", built.reference);
    if !all.contains(&by_tag) {
        bail!(
            "deploy/controller.yaml does not name the image {}",
            built.reference
        );
    }
    Ok(all.replace(&by_tag, &format!("{by_tag}@{}", built.digest)))
}

/// The CHANGELOG section of `version` (`## [VERSION]`), or the unreleased one.
fn changes_of(changelog: &str, version: &str) -> anyhow::Result<String> {
    for heading in [format!("## [{version}]"), "## [Unreleased]".to_owned()] {
        if let Some(start) = changelog.find(&heading) {
            let rest = &changelog[start + heading.len()..];
            let end = rest.find("\n## ").unwrap_or(rest.len());
            return Ok(format!("# everynode {version}{}\n", rest[..end].trim_end()));
        }
    }
    bail!("CHANGELOG.md has no section `## [{version}]` (nor `## [Unreleased]`)")
}

/// Writes `SHA256SUMS` of every file in `out`; returns the files.
fn sha256sums(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut sums = String::new();
    for file in &files {
        let digest = oci::sha256_digest(&std::fs::read(file)?);
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        sums.push_str(&format!(
            "{}  {name}\n",
            digest.trim_start_matches("sha256:")
        ));
    }
    files.push(write(out, "SHA256SUMS", sums.into_bytes())?);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changes_are_the_section_of_the_version_or_the_unreleased_one() -> anyhow::Result<()> {
        let log = "# Changelog\n\n## [Unreleased]\n\n### Added\n- b\n\n## [0.1.0]\n\n- a\n";
        assert_eq!(changes_of(log, "0.1.0")?, "# everynode 0.1.0\n\n- a\n");
        assert_eq!(
            changes_of(log, "0.2.0")?,
            "# everynode 0.2.0\n\n### Added\n- b\n"
        );
        assert!(changes_of("# Changelog\n", "0.2.0").is_err());
        Ok(())
    }

    #[test]
    fn krew_points_at_the_tarball_with_its_checksum() -> anyhow::Result<()> {
        let manifest = krew_manifest(
            "0.1.0",
            Path::new("/x/everynode-0.1.0-x86_64-linux.tar.gz"),
            "ab12",
        )?;
        let manifest = String::from_utf8(manifest)?;
        for line in [
            "      sha256: ab12\n",
            "/v0.1.0/everynode-0.1.0-x86_64-linux.tar.gz\n",
            "      bin: everynode\n",
            "  version: v0.1.0\n",
        ] {
            assert!(manifest.contains(line), "{line} in {manifest}");
        }
        Ok(())
    }
}
