//! Debian packages the tests need beyond Rust and Go: installed by `cargo xtask ci` on a fresh
//! machine (with `apt-get`, as root), so what CI runs is what a developer's machine runs.

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

async fn apt_get(args: &[&str]) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .await
        .context("running apt-get (the clock-skew tests need Debian's libfaketime)")?;
    if !status.success() {
        bail!(
            "apt-get {} failed ({status}); install libfaketime by hand (as root: apt-get \
             install libfaketime)",
            args.join(" ")
        );
    }
    Ok(())
}
