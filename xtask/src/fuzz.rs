//! `cargo xtask fuzz`: the cargo-fuzz targets of `fuzz/` (manifest decoding and validation,
//! snapshot files, the planner on arbitrary snapshots with its invariants), each for a while,
//! from the committed corpus. Installs cargo-fuzz when it is missing; builds with the nightly
//! toolchain. `cargo xtask ci` runs each target briefly; long runs give the figures in
//! `docs/fuzzing.md`.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::ci::workspace_root;

/// The targets, in `fuzz/Cargo.toml`.
pub(crate) const TARGETS: &[&str] = &["manifest", "snapshot", "planner"];

#[derive(Debug, clap::Args)]
pub(crate) struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub(crate) seconds: u64,
    /// Only this target (default: all).
    #[arg(long)]
    pub(crate) target: Option<String>,
    /// Keep the inputs that reach new coverage in the committed corpus (`fuzz/corpus/<target>`);
    /// without it they go to a scratch directory.
    #[arg(long)]
    pub(crate) grow_corpus: bool,
}

/// One target's run: libFuzzer's final figures.
#[derive(Debug, Default)]
struct Outcome {
    target: String,
    executions: u64,
    coverage: u64,
    features: u64,
    corpus: u64,
    seconds: f64,
    crashed: bool,
}

pub(crate) async fn run(args: FuzzArgs) -> anyhow::Result<ExitCode> {
    ensure_cargo_fuzz().await?;
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!(
            "--target {t}: not a fuzz target (one of {})",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push(run_target(target, args.seconds, args.grow_corpus).await?);
    }
    println!(
        "\n| target | seconds | executions | exec/s | coverage (edges) | features | corpus | result |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for o in &outcomes {
        println!(
            "| {} | {:.0} | {} | {:.0} | {} | {} | {} | {} |",
            o.target,
            o.seconds,
            o.executions,
            o.executions as f64 / o.seconds.max(1.0),
            o.coverage,
            o.features,
            o.corpus,
            if o.crashed { "CRASH" } else { "no crash" }
        );
    }
    Ok(if outcomes.iter().any(|o| o.crashed) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Installs cargo-fuzz from crates.io unless `cargo fuzz` works.
async fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let present = tokio::process::Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    tracing::info!("installing cargo-fuzz");
    let status = tokio::process::Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .await
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    Ok(())
}

async fn run_target(target: &str, seconds: u64, grow_corpus: bool) -> anyhow::Result<Outcome> {
    let root = workspace_root();
    let committed = root.join("fuzz").join("corpus").join(target);
    let scratch = std::env::temp_dir().join(format!("everynode-fuzz-{target}"));
    std::fs::create_dir_all(&scratch).with_context(|| format!("{}", scratch.display()))?;
    // libFuzzer writes new inputs to the first corpus directory and reads all of them.
    let (first, second) = if grow_corpus {
        (&committed, &scratch)
    } else {
        (&scratch, &committed)
    };
    let started = Instant::now();
    let output = tokio::process::Command::new("cargo")
        .current_dir(root.join("fuzz"))
        .args(["+nightly", "fuzz", "run", target])
        .arg(first)
        .arg(second)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-rss_limit_mb=4096",
            "-print_final_stats=1",
        ])
        .output()
        .await
        .with_context(|| format!("running cargo +nightly fuzz run {target}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let mut outcome = parse(target, &log);
    outcome.seconds = started.elapsed().as_secs_f64().min(seconds as f64 + 5.0);
    outcome.crashed = !output.status.success();
    if outcome.crashed {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "fuzz target {target} failed:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    tracing::info!(
        "{target}: {} executions, coverage {}, corpus {}",
        outcome.executions,
        outcome.coverage,
        outcome.corpus
    );
    Ok(outcome)
}

/// libFuzzer's last status line (`#1234 DONE cov: 10 ft: 20 corp: 5/100b ...`) and final stats
/// (`stat::number_of_executed_units: 1234`).
fn parse(target: &str, log: &str) -> Outcome {
    let mut outcome = Outcome {
        target: target.to_owned(),
        ..Outcome::default()
    };
    let number_after = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    for line in log.lines() {
        if line.starts_with('#') {
            if let Some(v) = number_after(line, "cov:") {
                outcome.coverage = v;
            }
            if let Some(v) = number_after(line, "ft:") {
                outcome.features = v;
            }
            if let Some(v) = number_after(line, "corp:") {
                outcome.corpus = v;
            }
        }
        if let Some(v) = number_after(line, "stat::number_of_executed_units:") {
            outcome.executions = v;
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_figures_are_read_from_its_output() {
        let log = "#2\tINITED cov: 5 ft: 6 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #4096\tpulse  cov: 120 ft: 300 corp: 40/2kb exec/s: 2048 rss: 60Mb\n\
                   #9000\tDONE   cov: 130 ft: 320 corp: 44/3kb lim: 100 exec/s: 3000 rss: 61Mb\n\
                   stat::number_of_executed_units: 9000\n";
        let o = parse("planner", log);
        assert_eq!(
            (o.executions, o.coverage, o.features, o.corpus),
            (9000, 130, 320, 44)
        );
    }
}
