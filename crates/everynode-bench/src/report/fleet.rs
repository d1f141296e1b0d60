//! The many-sets results: one cluster, many sets, each controller through F1–F4; the table
//! and the ratios against upstream.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{ClusterMode, ControllerId, ControllerRun, Scenario, TargetCheck, check, fmt_opt, mib};

/// Everything measured by the many-sets suite on one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetResult {
    /// KWOK worker nodes at the start.
    pub nodes: usize,
    /// Sets per controller.
    pub sets: usize,
    /// Pods the sets run once created (F1).
    pub pods: u64,
    /// Node moves in F3 (one after another).
    pub relabels: u64,
    /// Nodes joining in F4 (at once).
    pub joins: u64,
    /// How the nodes were sliced (runs before the option: ten slices, four per set).
    #[serde(default)]
    pub slicing: crate::fleet::Slicing,
    /// How the cluster's own clients were limited.
    pub mode: ClusterMode,
    /// Which of the repeated runs (from 1; 0 in files written before `--repeat`).
    #[serde(default)]
    pub repeat: usize,
    /// Cluster start-up, seconds.
    pub cluster_up_seconds: f64,
    /// One run per controller.
    pub runs: Vec<ControllerRun>,
}

impl FleetResult {
    /// The run of one controller.
    #[must_use]
    pub fn run(&self, c: ControllerId) -> Option<&ControllerRun> {
        self.runs.iter().find(|r| r.controller == c)
    }

    /// CPU milliseconds per event of a step (F3: per node move, F4: per joining node).
    #[must_use]
    pub fn cpu_ms_per_event(&self, run: &ControllerRun, step: Scenario) -> Option<f64> {
        let events = match step {
            Scenario::F3 => self.relabels,
            Scenario::F4 => self.joins,
            _ => 1,
        };
        let r = run.get(step)?;
        (events > 0).then(|| r.cpu_seconds * 1000.0 / events as f64)
    }

    /// Write requests per pod created or moved over F1–F4.
    #[must_use]
    pub fn writes_per_pod(run: &ControllerRun) -> Option<f64> {
        run.writes_per_pod_in(&[Scenario::F1, Scenario::F2, Scenario::F3, Scenario::F4])
    }
}

/// everynode against upstream (unlimited) on the many sets: converge times, CPU per node
/// event, memory, writes per pod.
#[must_use]
pub fn fleet_checks(fleet: &FleetResult) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let u = ControllerId::UpstreamEqual;
    let Some(ur) = fleet.run(u) else { return out };
    for e in [ControllerId::EverynodeAppsV1, ControllerId::EverynodeOwn] {
        let Some(er) = fleet.run(e) else { continue };
        for s in [Scenario::F1, Scenario::F2, Scenario::F3, Scenario::F4] {
            if let (Some(a), Some(b)) = (er.get(s), ur.get(s)) {
                out.push(check(
                    format!("{s:?} converge s"),
                    e,
                    u.label(),
                    a.seconds,
                    b.seconds,
                    0.8,
                ));
            }
        }
        for s in [Scenario::F3, Scenario::F4] {
            if let (Some(a), Some(b)) =
                (fleet.cpu_ms_per_event(er, s), fleet.cpu_ms_per_event(ur, s))
            {
                out.push(check(
                    format!("{s:?} CPU ms per event"),
                    e,
                    u.label(),
                    a,
                    b,
                    0.4,
                ));
            }
        }
        out.push(check(
            "CPU s (F1-F4)",
            e,
            u.label(),
            er.cpu_seconds(),
            ur.cpu_seconds(),
            0.4,
        ));
        let (rss, upstream_rss) = (mib(er.peak_rss_bytes()), mib(ur.peak_rss_bytes()));
        out.push(check("peak RSS MiB", e, u.label(), rss, upstream_rss, 0.4));
        if let (Some(a), Some(b)) = (
            FleetResult::writes_per_pod(er),
            FleetResult::writes_per_pod(ur),
        ) {
            out.push(check("API writes per pod (F1-F4)", e, u.label(), a, b, 0.9));
        }
    }
    out
}

/// The many-sets section of the report.
pub(crate) fn markdown(md: &mut String, fleet: &FleetResult) {
    let _ = writeln!(
        md,
        "## Many sets: {} sets, {} pods on {} nodes, {}{}\n",
        fleet.sets,
        fleet.pods,
        fleet.nodes,
        fleet.mode.label(),
        if fleet.repeat > 0 {
            format!(", run {}", fleet.repeat)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        md,
        "Cluster up in {:.0} s. Each set selects {} of {} node slices. F3: {} nodes move to the \
         next slice one after another (each changes {} sets); F4: {} nodes join at once (each \
         selected by {} sets).\n",
        fleet.cluster_up_seconds,
        fleet.slicing.window,
        fleet.slicing.slices,
        fleet.relabels,
        fleet.slicing.sets_moved_by(0, 1, fleet.sets).len(),
        fleet.joins,
        fleet.slicing.sets_selecting(0, fleet.sets),
    );
    let _ = writeln!(
        md,
        "| controller | F1 create s | F2 roll s | F3 s per move | F3 CPU ms per move | F4 join s | F4 CPU ms per join | CPU s | peak RSS MiB | writes/pod |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for run in &fleet.runs {
        let sec = |s| fmt_opt(run.get(s).map(|r| r.seconds), 1);
        let per_move = run
            .get(Scenario::F3)
            .map(|r| r.seconds / fleet.relabels.max(1) as f64);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0} | {} |",
            run.controller.label(),
            sec(Scenario::F1),
            sec(Scenario::F2),
            fmt_opt(per_move, 2),
            fmt_opt(fleet.cpu_ms_per_event(run, Scenario::F3), 0),
            sec(Scenario::F4),
            fmt_opt(fleet.cpu_ms_per_event(run, Scenario::F4), 0),
            run.cpu_seconds(),
            mib(run.peak_rss_bytes()),
            fmt_opt(FleetResult::writes_per_pod(run), 2),
        );
    }
    md.push('\n');
    super::checks_table(md, &fleet_checks(fleet));
}

#[cfg(test)]
mod tests {
    use super::super::tests::run;
    use super::*;

    fn fleet() -> FleetResult {
        let with_fleet_steps = |c, factor| {
            let mut r = run(c, factor);
            for (s, step) in
                r.scenarios
                    .iter_mut()
                    .zip([Scenario::F1, Scenario::F2, Scenario::F3, Scenario::F4])
            {
                s.scenario = step;
            }
            r.scenarios.truncate(4);
            r
        };
        FleetResult {
            nodes: 1000,
            sets: 50,
            pods: 20_000,
            relabels: 10,
            joins: 10,
            slicing: crate::fleet::Slicing::default(),
            mode: ClusterMode::Unthrottled,
            repeat: 0,
            cluster_up_seconds: 60.0,
            runs: vec![
                with_fleet_steps(ControllerId::UpstreamEqual, 1.0),
                with_fleet_steps(ControllerId::EverynodeAppsV1, 0.3),
            ],
        }
    }

    #[test]
    fn per_event_cpu_and_ratios_against_upstream_unlimited() {
        let f = fleet();
        let everynode = f
            .run(ControllerId::EverynodeAppsV1)
            .unwrap_or_else(|| panic!("run"));
        // 4.0 × 0.3 CPU seconds over 10 moves
        assert_eq!(f.cpu_ms_per_event(everynode, Scenario::F3), Some(120.0));
        let checks = fleet_checks(&f);
        let cpu = checks
            .iter()
            .find(|c| c.metric == "F3 CPU ms per event")
            .unwrap_or_else(|| panic!("F3 CPU check"));
        assert_eq!(
            (cpu.ratio.map(|r| (r * 10.0).round()), cpu.met()),
            (Some(3.0), true)
        );
        assert!(checks.iter().all(|c| c.reference == "upstream (unlimited)"));
    }

    #[test]
    fn markdown_names_the_fleet_and_a_row_per_controller() {
        let mut md = String::new();
        markdown(&mut md, &fleet());
        assert!(
            md.contains("## Many sets: 50 sets, 20000 pods on 1000 nodes, unthrottled cluster")
        );
        assert!(
            md.contains("| everynode apps/v1 | 3.0 | 3.0 | 0.30 | 120 | 3.0 | 120 |"),
            "{md}"
        );
    }
}
