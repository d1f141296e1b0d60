//! CPU time and memory of a measured process, from `/proc/<pid>`.

use crate::error::{Error, Result};

/// CPU time (user + system) of `pid` in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
    parse_cpu_ticks(&stat).ok_or_else(|| Error::Other(format!("{path}: unexpected format")))
}

/// Parses utime + stime out of the text of `/proc/<pid>/stat`.
#[must_use]
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // "pid (comm) state ppid ..." — comm may contain spaces; fields after ')' start at field 3.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14 → index 11, stime field 15 → index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 when it cannot be asked).
#[must_use]
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// A `kB` field of `/proc/<pid>/status` (e.g. `VmHWM`, `VmRSS`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
    parse_status_kb(&text, field)
        .map(|kb| kb * 1024)
        .ok_or_else(|| Error::Other(format!("{path}: no {field}")))
}

/// Parses `<field>:   1234 kB` out of the text of `/proc/<pid>/status`.
#[must_use]
pub fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k != field {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Resets the peak RSS (`VmHWM`) of `pid` to its current RSS (writes `5` to
/// `/proc/<pid>/clear_refs`), so that a later `VmHWM` is the peak of one scenario. Returns
/// whether the kernel accepted it.
#[must_use]
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let stat = "1234 (kube controller) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 75 0 0 20 0 12 0 100 1000000 5000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_status_fields() {
        let status =
            "Name:\teverynode\nVmPeak:\t  200 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(51200));
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(40960));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_ok());
        assert!(status_bytes(me, "VmHWM").unwrap() > 0);
    }
}
