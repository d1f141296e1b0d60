//! `everynode`: the controller and CLI binary.

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Run a daemon on every node of a Kubernetes cluster.
#[derive(Debug, Parser)]
#[command(name = "everynode", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinition of everynode.dev DaemonSets as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print_crd(),
    }
}

fn print_crd() -> anyhow::Result<()> {
    let yaml = everynode_api::crd::crd_yaml().context("rendering the CRD as YAML")?;
    std::io::stdout()
        .lock()
        .write_all(yaml.as_bytes())
        .context("writing the CRD to standard output")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
