//! Starting, inspecting and stopping component processes, by recorded PID only.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::component::Component;
use crate::error::{Error, Result};

/// Starts `program args...` with stdout and stderr appended to `log`, in its own process group
/// (so a Ctrl-C aimed at the caller's terminal does not hit it), and records its PID in
/// `pid_file`.
pub fn spawn(
    component: Component,
    program: &Path,
    args: &[String],
    log: &Path,
    pid_file: &Path,
) -> Result<Child> {
    spawn_named(
        component.name(),
        program,
        args,
        log,
        pid_file,
        " (run `cargo xtask cluster build`)",
    )
}

/// [`spawn`] for any process; `name` labels errors and `hint` follows a failed start.
pub fn spawn_named(
    name: &str,
    program: &Path,
    args: &[String],
    log: &Path,
    pid_file: &Path,
    hint: &str,
) -> Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io("open log", log, e))?;
    let err = out.try_clone().map_err(|e| Error::io("open log", log, e))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Command {
            command: format!("{name}: {}", program.display()),
            message: format!("cannot start: {e}{hint}"),
        })?;
    std::fs::write(pid_file, format!("{}\n", child.id()))
        .map_err(|e| Error::io("write", pid_file, e))?;
    Ok(child)
}

/// Reads a PID file; `Ok(None)` when it does not exist.
pub fn read_pid(pid_file: &Path) -> Result<Option<u32>> {
    match std::fs::read_to_string(pid_file) {
        Ok(s) => s
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|e| Error::Format {
                path: pid_file.to_path_buf(),
                message: format!("not a PID ({e}); remove the file if the process is gone"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", pid_file, e)),
    }
}

/// Whether `pid` is a live process (zombies count as dead).
#[must_use]
pub fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// The command line of `pid`, if it is readable.
#[must_use]
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Whether `pid` is still the process we started from `program` (guards against PID reuse).
#[must_use]
pub fn runs_program(pid: u32, program: &Path) -> bool {
    cmdline(pid)
        .and_then(|c| c.into_iter().next())
        .is_some_and(|argv0| Path::new(&argv0) == program)
}

/// PIDs of live processes whose command line mentions `needle` (e.g. a cluster directory).
/// Sorted. Used to prove that `down` left nothing behind.
#[must_use]
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && is_alive(*pid))
        .filter(|pid| cmdline(*pid).is_some_and(|c| c.iter().any(|a| a.contains(needle))))
        .collect();
    pids.sort_unstable();
    pids
}

/// How a process ended in [`stop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    NotRunning,
    /// It exited after SIGTERM.
    Terminated,
    /// It needed SIGKILL.
    Killed,
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        // ESRCH (already gone) is fine.
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

async fn wait_dead(pid: u32, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if !is_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !is_alive(pid)
}

/// Sends SIGKILL to `pid` and waits up to 5 s for it to be gone.
pub async fn kill_now(pid: u32) {
    signal(pid, Signal::SIGKILL);
    wait_dead(pid, Duration::from_secs(5)).await;
}

/// Sends SIGTERM to `pid`, waits up to `grace`, then SIGKILL and waits up to 5 s more.
pub async fn stop(pid: u32, grace: Duration) -> Stopped {
    if !is_alive(pid) {
        return Stopped::NotRunning;
    }
    signal(pid, Signal::SIGTERM);
    if wait_dead(pid, grace).await {
        return Stopped::Terminated;
    }
    signal(pid, Signal::SIGKILL);
    wait_dead(pid, Duration::from_secs(5)).await;
    Stopped::Killed
}

/// The last `lines` lines of a text file (empty string when it cannot be read).
#[must_use]
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_bogus_is_not() {
        assert!(is_alive(std::process::id()));
        assert!(!is_alive(u32::MAX - 1));
    }

    #[tokio::test]
    async fn stop_terminates_a_sleep() {
        let dir =
            std::env::temp_dir().join(format!("everynode-process-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = spawn(
            Component::Etcd,
            Path::new("/bin/sleep"),
            &["30".to_owned()],
            &dir.join("sleep.log"),
            &dir.join("sleep.pid"),
        )
        .unwrap();
        let pid = read_pid(&dir.join("sleep.pid")).unwrap().unwrap();
        assert_eq!(pid, child.id());
        // Right after fork the child may not have exec'd yet (its command line is still ours).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !runs_program(pid, Path::new("/bin/sleep")) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(runs_program(pid, Path::new("/bin/sleep")));
        assert_eq!(stop(pid, Duration::from_secs(5)).await, Stopped::Terminated);
        child.wait().unwrap();
        assert!(!is_alive(pid));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tail_keeps_last_lines() {
        let p = std::env::temp_dir().join(format!("everynode-tail-{}", std::process::id()));
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&p, 2), "b\nc");
        assert_eq!(tail(&p, 10), "a\nb\nc");
        std::fs::remove_file(&p).unwrap();
        assert_eq!(tail(&p, 2), "");
    }
}
