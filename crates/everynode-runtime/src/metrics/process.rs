//! The standard `process_*` metrics (as the Go and Python clients export them), read from
//! `/proc/self` on each scrape. On systems without `/proc` nothing is written.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux reports process times in ticks of `USER_HZ`, which is 100 on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// Collects `process_*` on scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Clone, Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: f64,
    start_time_seconds: f64,
    virtual_memory_bytes: f64,
    resident_memory_bytes: f64,
    open_fds: f64,
    max_fds: f64,
}

impl Reading {
    fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        let mut reading = parse(&stat, &status, &boot, &limits)?;
        reading.open_fds = open_fds as f64;
        Some(reading)
    }
}

/// Parses the `/proc` files (`stat`'s fields after the command name, which may hold spaces).
fn parse(stat: &str, status: &str, boot: &str, limits: &str) -> Option<Reading> {
    let after_name = &stat[stat.rfind(')')? + 2..];
    // Fields from the 3rd (state) on: utime is the 14th, stime 15th, starttime 22nd, vsize 23rd.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let boot_time: f64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(f64::INFINITY);
    Some(Reading {
        cpu_seconds: (field(14)? + field(15)?) / TICKS_PER_SECOND,
        start_time_seconds: boot_time + field(22)? / TICKS_PER_SECOND,
        virtual_memory_bytes: field(23)?,
        resident_memory_bytes: rss_kib * 1024.0,
        open_fds: 0.0,
        max_fds,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(r) = Reading::now() else {
            return Ok(());
        };
        let counter = ConstCounter::new(r.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?)?;
        for (name, help, value) in [
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                r.start_time_seconds,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                r.virtual_memory_bytes,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                r.resident_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                r.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                r.max_fds,
            ),
        ] {
            ConstGauge::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_give_cpu_memory_and_start_time() {
        let stat = "42 (every node) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 \
                    1000 123456789 2000 18446744073709551615";
        let status = "Name:\teverynode\nVmRSS:\t   65536 kB\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\n";
        let limits = "Limit  Soft Limit  Hard Limit  Units\n\
                      Max open files            1048576              1048576              files\n";
        let r = parse(stat, status, boot, limits).expect("parses");
        assert_eq!(r.cpu_seconds, 3.0);
        assert_eq!(r.start_time_seconds, 1_700_000_010.0);
        assert_eq!(r.virtual_memory_bytes, 123_456_789.0);
        assert_eq!(r.resident_memory_bytes, 64.0 * 1024.0 * 1024.0);
        assert_eq!(r.max_fds, 1_048_576.0);
    }

    #[test]
    fn this_process_can_be_read() {
        let r = Reading::now().expect("/proc/self is readable on Linux");
        assert!(r.resident_memory_bytes > 0.0 && r.open_fds > 0.0, "{r:?}");
    }
}
