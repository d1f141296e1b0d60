//! Shell completion: `everynode completion SHELL` prints a script for bash, zsh, fish, elvish,
//! PowerShell or kubectl's plugin completion; `everynode __complete ARGS…` answers kubectl's plugin completion (kubectl
//! 1.26+ runs `kubectl_complete-everynode` for `kubectl everynode <TAB>`), in Cobra's format.

use std::ffi::OsString;
use std::io::Write;

/// Cobra's `ShellCompDirectiveNoFileComp`: offer no file names when no candidate matches.
const NO_FILE_COMPLETION: u8 = 4;

/// The script kubectl runs to complete `kubectl everynode …` (installed next to the plugin).
const KUBECTL_COMPLETE_SCRIPT: &str = "#!/bin/sh\n\
# kubectl (1.26+) runs this to complete `kubectl everynode ...`: keep it in PATH next to\n\
# kubectl-everynode.\n\
exec kubectl-everynode __complete \"$@\"\n";

/// What a completion script is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScriptFor {
    /// bash (`source <(everynode completion bash)`).
    Bash,
    /// zsh (save as `_everynode` in a directory of `$fpath`).
    Zsh,
    /// fish.
    Fish,
    /// elvish.
    Elvish,
    /// PowerShell.
    Powershell,
    /// kubectl's plugin completion: save as `kubectl_complete-everynode` in PATH (kubectl 1.26+).
    KubectlPlugin,
}

/// Writes the completion script `what` for `command`.
pub fn script(
    command: &mut clap::Command,
    what: ScriptFor,
    out: &mut impl Write,
) -> std::io::Result<()> {
    use clap_complete::Shell;
    let shell = match what {
        ScriptFor::Bash => Shell::Bash,
        ScriptFor::Zsh => Shell::Zsh,
        ScriptFor::Fish => Shell::Fish,
        ScriptFor::Elvish => Shell::Elvish,
        ScriptFor::Powershell => Shell::PowerShell,
        ScriptFor::KubectlPlugin => {
            out.write_all(KUBECTL_COMPLETE_SCRIPT.as_bytes())?;
            return out.flush();
        }
    };
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, command, name, out);
    out.flush()
}

/// Writes the candidates for the last of `args` (the word being completed, empty after a
/// space), one per line with its help after a tab, then Cobra's directive line.
pub fn candidates(
    command: &mut clap::Command,
    args: Vec<OsString>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut words = vec![OsString::from(command.get_name())];
    words.extend(args);
    if words.len() == 1 {
        words.push(OsString::new());
    }
    let index = words.len() - 1;
    let found = clap_complete::engine::complete(command, words, index, None)?;
    for candidate in found.iter().filter(|c| !c.is_hide_set()) {
        let value = candidate.get_value().to_string_lossy();
        match candidate.get_help() {
            Some(help) => writeln!(out, "{value}\t{help}")?,
            None => writeln!(out, "{value}")?,
        }
    }
    writeln!(out, ":{NO_FILE_COMPLETION}")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("everynode")
            .subcommand(clap::Command::new("status").about("Show a set"))
            .subcommand(
                clap::Command::new("rollout")
                    .subcommand(clap::Command::new("status"))
                    .subcommand(clap::Command::new("undo")),
            )
    }

    fn complete(args: &[&str]) -> String {
        let mut out = Vec::new();
        candidates(
            &mut cli(),
            args.iter().map(OsString::from).collect(),
            &mut out,
        )
        .expect("completes");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn subcommands_complete_with_their_help_and_a_cobra_directive() {
        let said = complete(&["st"]);
        assert_eq!(said, "status\tShow a set\n:4\n");
        let said = complete(&["rollout", ""]);
        assert!(
            said.contains("status\n") && said.contains("undo\n"),
            "{said}"
        );
        assert!(said.ends_with(":4\n"), "{said}");
    }

    #[test]
    fn a_bash_script_names_the_binary() {
        let mut out = Vec::new();
        script(&mut cli(), ScriptFor::Bash, &mut out).expect("generates");
        assert!(String::from_utf8_lossy(&out).contains("everynode"));
        let mut out = Vec::new();
        script(&mut cli(), ScriptFor::KubectlPlugin, &mut out).expect("writes");
        assert!(String::from_utf8_lossy(&out).contains("exec kubectl-everynode __complete"));
    }
}
