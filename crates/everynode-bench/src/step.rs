//! One measured step of a scenario, shared by every scenario of the floor and the controllers:
//! take the start readings (clock, CPU ticks and reset peak RSS from `/proc/<pid>`, end of the
//! audit log), run the scenario's action until it converges, settle, read the counters and
//! record a [`ScenarioResult`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use everynode_cluster::audit::AuditReader;
use everynode_cluster::{BENCH_FLOOR_USER, BENCH_MEASURED_USER};

use crate::error::Result;
use crate::procfs;
use crate::report::{Scenario, ScenarioResult};
use crate::stats::Latency;

/// Pause after convergence before a scenario's counters are read, so that trailing writes
/// (status updates, events) are counted with the scenario that caused them.
pub(crate) const SETTLE: Duration = Duration::from_secs(2);

/// Whose counters a scenario reads: the process (none for the floor) and the audited user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who<'a> {
    /// The measured process; `None` for the floor client, which runs inside the harness.
    pub(crate) pid: Option<u32>,
    /// The user whose requests the audit log attributes to the scenario.
    pub(crate) user: &'a str,
}

impl Who<'static> {
    /// The floor client: no process of its own, its own audited user.
    pub(crate) const FLOOR: Self = Self {
        pid: None,
        user: BENCH_FLOOR_USER,
    };

    /// A measured controller process, authenticated as the measured user.
    pub(crate) const fn measured(pid: u32) -> Self {
        Self {
            pid: Some(pid),
            user: BENCH_MEASURED_USER,
        }
    }
}

/// What a scenario's action reports once converged; the counters come from the [`StepMeter`].
#[derive(Debug, Clone, Default)]
pub(crate) struct StepOutcome {
    /// Time to converge in seconds (S5: the idle window).
    pub(crate) seconds: f64,
    /// Pods that had to be created or removed to converge.
    pub(crate) pods: u64,
    /// Node joined → its pod created (S3).
    pub(crate) join_latency: Option<Latency>,
    /// Node admits DaemonSet pods → its pod created (S3).
    pub(crate) admitted_latency: Option<Latency>,
}

impl StepOutcome {
    /// Converged after `seconds` with `pods` pods created or removed, no latencies.
    pub(crate) fn converged(seconds: f64, pods: usize) -> Self {
        Self {
            seconds,
            pods: pods as u64,
            ..Self::default()
        }
    }
}

/// Readings taken when a step starts.
struct StartReadings {
    /// When the step started; the action's convergence time counts from here.
    at: Instant,
    /// CPU ticks of the measured process so far (0 without a process).
    cpu_ticks: u64,
    /// The audit log from its current end.
    audit: AuditReader,
    /// Whether the process's peak RSS could be reset to its current RSS.
    rss_reset: bool,
    /// CPU ticks of each cluster process so far.
    cluster_ticks: BTreeMap<String, u64>,
}

impl StartReadings {
    /// Starts the clock, then reads CPU ticks, the audit log's end and resets the peak RSS.
    fn take(pid: Option<u32>, audit_log: &Path, cluster: &[(String, u32)]) -> Self {
        Self {
            at: Instant::now(),
            cpu_ticks: pid.and_then(|p| procfs::cpu_ticks(p).ok()).unwrap_or(0),
            audit: AuditReader::at_end(audit_log),
            rss_reset: pid.is_some_and(procfs::reset_peak_rss),
            cluster_ticks: cluster_ticks(cluster),
        }
    }
}

/// CPU ticks of each cluster process that can be read, by name.
fn cluster_ticks(cluster: &[(String, u32)]) -> BTreeMap<String, u64> {
    cluster
        .iter()
        .filter_map(|(name, pid)| Some((name.clone(), procfs::cpu_ticks(*pid).ok()?)))
        .collect()
}

/// Measures the steps of one client (a controller process or the floor) on one cluster.
#[derive(Debug, Clone)]
pub(crate) struct StepMeter<'a> {
    /// Whose counters are read.
    who: Who<'a>,
    /// The cluster's audit log.
    audit_log: PathBuf,
    /// Clock ticks per second, to turn CPU ticks into seconds.
    ticks_per_second: f64,
    /// The cluster's own processes (name, PID), whose CPU each step reads too.
    cluster: Vec<(String, u32)>,
}

impl<'a> StepMeter<'a> {
    /// A meter of `who`'s steps, counting requests in `audit_log`.
    pub(crate) fn new(who: Who<'a>, audit_log: &Path, ticks_per_second: f64) -> Self {
        Self {
            who,
            audit_log: audit_log.to_path_buf(),
            ticks_per_second,
            cluster: Vec::new(),
        }
    }

    /// Also reads the CPU of these cluster processes (name, PID) in every step.
    pub(crate) fn with_cluster(self, cluster: Vec<(String, u32)>) -> Self {
        Self { cluster, ..self }
    }

    /// Runs one measured step of `scenario`: takes the start readings, runs `action` (given
    /// the step's start, it acts and returns once converged), settles, then reads CPU, peak
    /// RSS and the audit log. Nothing is recorded when `action` fails.
    pub(crate) async fn measure(
        &self,
        scenario: Scenario,
        action: impl AsyncFnOnce(Instant) -> Result<StepOutcome>,
    ) -> Result<ScenarioResult> {
        let start = StartReadings::take(self.who.pid, &self.audit_log, &self.cluster);
        let outcome = action(start.at).await?;
        let converged = cluster_ticks(&self.cluster);
        let cluster_cpu_seconds = converged
            .into_iter()
            .filter_map(|(name, ticks)| {
                let before = *start.cluster_ticks.get(&name)?;
                let seconds = ticks.saturating_sub(before) as f64 / self.ticks_per_second;
                Some((name, seconds))
            })
            .collect();
        let mut result = self.finish(start, scenario, outcome).await?;
        result.cluster_cpu_seconds = cluster_cpu_seconds;
        Ok(result)
    }

    /// Ends a step: settles, then reads CPU, peak RSS and the audit log, and logs the result.
    async fn finish(
        &self,
        mut start: StartReadings,
        scenario: Scenario,
        outcome: StepOutcome,
    ) -> Result<ScenarioResult> {
        let Who { pid, user } = self.who;
        tokio::time::sleep(SETTLE).await;
        let requests = start.audit.read_new(user)?;
        let (cpu_seconds, peak_rss_bytes) = match pid {
            Some(p) => {
                let ticks = procfs::cpu_ticks(p)?.saturating_sub(start.cpu_ticks);
                if !start.rss_reset {
                    tracing::warn!(
                        "could not reset the peak RSS of pid {p}; reporting its lifetime peak"
                    );
                }
                (
                    ticks as f64 / self.ticks_per_second,
                    procfs::status_bytes(p, "VmHWM")?,
                )
            }
            None => (0.0, 0),
        };
        let StepOutcome {
            seconds,
            pods,
            join_latency,
            admitted_latency,
        } = outcome;
        tracing::info!(
            "  {scenario:?} {:<36} {seconds:>7.1} s  {:>6} requests ({} writes)  cpu {cpu_seconds:.1} s  rss {} MiB{}",
            scenario.describe(),
            requests.total(),
            requests.writes(),
            peak_rss_bytes / (1024 * 1024),
            join_latency.map_or_else(String::new, |l| format!(
                "  join→pod p50 {:.0} ms p99 {:.0} ms",
                l.p50_ms, l.p99_ms
            )),
        );
        Ok(ScenarioResult {
            scenario,
            seconds,
            pods,
            requests,
            cpu_seconds,
            peak_rss_bytes,
            join_latency,
            admitted_latency,
            cluster_cpu_seconds: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An audit log path that does not exist: no requests are counted.
    fn no_audit_log() -> PathBuf {
        std::env::temp_dir().join(format!("everynode-bench-step-{}-none", std::process::id()))
    }

    #[tokio::test]
    async fn records_the_outcome_and_the_start_it_was_given() {
        let meter = StepMeter::new(Who::FLOOR, &no_audit_log(), 100.0);
        let mut given = None;
        let result = meter
            .measure(Scenario::S3, async |started| {
                given = Some(started);
                Ok(StepOutcome {
                    join_latency: Latency::of(&[5.0]),
                    admitted_latency: Latency::of(&[3.0]),
                    ..StepOutcome::converged(1.5, 7)
                })
            })
            .await
            .expect("a step without process reads nothing that can fail");
        assert!(given.is_some_and(|at| at.elapsed() >= SETTLE));
        assert_eq!(result.scenario, Scenario::S3);
        assert!((result.seconds - 1.5).abs() < f64::EPSILON);
        assert_eq!(result.pods, 7);
        assert_eq!(result.requests.total(), 0);
        assert_eq!((result.cpu_seconds, result.peak_rss_bytes), (0.0, 0));
        assert_eq!(result.join_latency.map(|l| l.samples), Some(1));
        assert_eq!(result.admitted_latency.map(|l| l.max_ms), Some(3.0));
    }

    #[tokio::test]
    async fn reads_cpu_and_peak_rss_of_a_measured_process() {
        let meter = StepMeter::new(Who::measured(std::process::id()), &no_audit_log(), 100.0);
        let result = meter
            .measure(Scenario::S5, async |_| Ok(StepOutcome::converged(0.0, 0)))
            .await
            .expect("the own process is readable");
        assert!(result.peak_rss_bytes > 0);
        assert!(result.cpu_seconds >= 0.0);
    }

    #[tokio::test]
    async fn reads_the_cpu_of_cluster_processes_until_convergence() {
        let me = ("harness".to_owned(), std::process::id());
        let gone = ("gone".to_owned(), u32::MAX);
        let meter = StepMeter::new(Who::FLOOR, &no_audit_log(), 100.0).with_cluster(vec![me, gone]);
        let result = meter
            .measure(Scenario::S1, async |_| {
                // Burn some CPU in this process, one of the "cluster" processes here.
                let spin = Instant::now();
                while spin.elapsed() < Duration::from_millis(300) {
                    std::hint::black_box(spin.elapsed());
                }
                Ok(StepOutcome::converged(0.3, 0))
            })
            .await
            .expect("a step without a measured process");
        assert!(
            result
                .cluster_cpu_seconds
                .get("harness")
                .is_some_and(|s| *s > 0.0)
        );
        assert!(!result.cluster_cpu_seconds.contains_key("gone"));
    }

    #[tokio::test]
    async fn a_failed_action_fails_the_step() {
        let meter = StepMeter::new(Who::FLOOR, &no_audit_log(), 100.0);
        let result = meter
            .measure(Scenario::S1, async |_| {
                Err(crate::error::Error::Other("no convergence".into()))
            })
            .await;
        assert!(result.is_err());
    }
}
