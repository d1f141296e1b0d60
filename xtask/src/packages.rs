//! Debian packages the tests need beyond Rust and Go (libfaketime for the clock-skew tests,
//! skopeo and umoci for the image test): installed by `cargo xtask ci` on a fresh machine (with
//! `apt-get`, as root), so what CI runs is what a developer's machine runs.

use anyhow::{Context, bail};

/// Installs Debian's libfaketime (for the clock-skew tests) unless it is there.
pub(crate) async fn ensure_libfaketime() -> anyhow::Result<()> {
    use everynode_cluster::faketime;
    if faketime::library().is_some() {
        return Ok(());
    }
    tracing::info!("installing {} with apt-get", faketime::PACKAGE);
    apt_get(&["update", "-qq"]).await?;
    apt_get(&[
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        faketime::PACKAGE,
    ])
    .await?;
    if faketime::library().is_none() {
        bail!(
            "{} is installed but its library was not found; set EVERYNODE_LIBFAKETIME to \
             libfaketime.so.1",
            faketime::PACKAGE
        );
    }
    Ok(())
}

/// Installs skopeo and umoci (the image test copies and unpacks the image with them) unless
/// both are in PATH.
pub(crate) async fn ensure_image_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = ["skopeo", "umoci"]
        .into_iter()
        .filter(|tool| !in_path(tool))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    tracing::info!("installing {} with apt-get", missing.join(" "));
    apt_get(&["update", "-qq"]).await?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    apt_get(&args).await
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .any(|dir| dir.join(program).is_file())
}

async fn apt_get(args: &[&str]) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .await
        .context("running apt-get (CI installs libfaketime, skopeo and umoci with it)")?;
    if !status.success() {
        bail!(
            "apt-get {} failed ({status}); install the packages by hand (as root: apt-get \
             install libfaketime skopeo umoci)",
            args.join(" ")
        );
    }
    Ok(())
}
