//! Repeated runs (`--repeat N`): the targets of one cluster size and mode as the median of the
//! per-run ratios. A single run spreads by ±25 % on this machine; the median of paired ratios
//! (everynode and its reference measured on the same cluster) decides a target, and the range
//! shows how far one run can be from it.

use std::fmt::Write as _;

use super::{ControllerId, TargetCheck, fmt_opt};

/// One target over several runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatedCheck {
    /// What is compared.
    pub metric: String,
    /// Which everynode variant.
    pub everynode: ControllerId,
    /// Against what.
    pub reference: String,
    /// The target ratio (≤).
    pub limit: f64,
    /// The check of each run, in run order.
    pub runs: Vec<TargetCheck>,
}

impl RepeatedCheck {
    /// The median of the runs' ratios (`None` when a reference was 0 in every run).
    #[must_use]
    pub fn median_ratio(&self) -> Option<f64> {
        median(self.runs.iter().filter_map(|c| c.ratio).collect())
    }

    /// The smallest and largest ratio of the runs.
    #[must_use]
    pub fn ratio_range(&self) -> Option<(f64, f64)> {
        let ratios = self.runs.iter().filter_map(|c| c.ratio);
        let min = ratios.clone().reduce(f64::min)?;
        Some((min, ratios.reduce(f64::max)?))
    }

    /// Met by the median ratio; a check against 0 (idle requests) only when every run met it.
    #[must_use]
    pub fn met(&self) -> bool {
        match self.median_ratio() {
            Some(r) => r <= self.limit + 1e-9,
            None => self.runs.iter().all(TargetCheck::met),
        }
    }

    /// How many runs met the target on their own.
    #[must_use]
    pub fn runs_met(&self) -> usize {
        self.runs.iter().filter(|c| c.met()).count()
    }
}

/// The median (mean of the middle two for an even count); `None` for no values.
#[must_use]
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => values.get(n / 2).copied(),
        _ => Some((values.get(n / 2 - 1)? + values.get(n / 2)?) / 2.0),
    }
}

/// Groups the checks of several runs of one cluster by target, in the order of the first run.
#[must_use]
pub fn repeated_checks(per_run: &[Vec<TargetCheck>]) -> Vec<RepeatedCheck> {
    let mut out: Vec<RepeatedCheck> = Vec::new();
    for check in per_run.iter().flatten() {
        let same = |r: &&mut RepeatedCheck| {
            r.metric == check.metric
                && r.everynode == check.everynode
                && r.reference == check.reference
        };
        match out.iter_mut().find(same) {
            Some(r) => r.runs.push(check.clone()),
            None => out.push(RepeatedCheck {
                metric: check.metric.clone(),
                everynode: check.everynode,
                reference: check.reference.clone(),
                limit: check.limit,
                runs: vec![check.clone()],
            }),
        }
    }
    out
}

/// The medians as a markdown section (nothing for fewer than two runs).
pub(crate) fn markdown(md: &mut String, title: &str, per_run: &[Vec<TargetCheck>]) {
    if per_run.len() < 2 {
        return;
    }
    let checks = repeated_checks(per_run);
    if checks.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "## {title}: medians of {} runs\n\nEach ratio is everynode ÷ its reference on the same \
         cluster; the target is decided by the median ratio.\n\n| everynode | metric | reference | \
         median ratio | range | runs met | target | |\n|---|---|---|---:|---:|---:|---:|---|",
        per_run.len()
    );
    for c in &checks {
        let range = c
            .ratio_range()
            .map_or_else(|| "–".to_owned(), |(lo, hi)| format!("{lo:.2}–{hi:.2}"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {range} | {} of {} | ≤ {:.2} | {} |",
            c.everynode.label(),
            c.metric,
            c.reference,
            fmt_opt(c.median_ratio(), 2),
            c.runs_met(),
            c.runs.len(),
            c.limit,
            if c.met() { "met" } else { "**missed**" }
        );
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::check;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn a_target_is_decided_by_the_median_of_the_paired_ratios() {
        let e = ControllerId::EverynodeAppsV1;
        let run = |everynode: f64, floor: f64, idle: f64| {
            vec![
                check("S1 converge s", e, "floor", everynode, floor, 1.15),
                check("idle S5 requests", e, "none", idle, 0.0, 0.0),
            ]
        };
        // Ratios 1.3, 1.0, 1.1: one run misses, the median (1.1) meets the target.
        let checks = repeated_checks(&[
            run(13.0, 10.0, 0.0),
            run(5.0, 5.0, 0.0),
            run(11.0, 10.0, 2.0),
        ]);
        assert_eq!(checks.len(), 2);
        let s1 = &checks[0];
        assert_eq!(s1.runs.len(), 3);
        assert!((s1.median_ratio().unwrap_or_default() - 1.1).abs() < 1e-9);
        assert_eq!(s1.ratio_range(), Some((1.0, 1.3)));
        assert_eq!((s1.runs_met(), s1.met()), (2, true));
        // Idle requests: one run made two, so the target is missed.
        let idle = &checks[1];
        assert_eq!(
            (idle.median_ratio(), idle.runs_met(), idle.met()),
            (None, 2, false)
        );
    }

    #[test]
    fn one_run_has_no_median_section() {
        let e = ControllerId::EverynodeOwn;
        let one = vec![vec![check("CPU s (S1-S5)", e, "upstream", 1.0, 4.0, 0.4)]];
        let mut md = String::new();
        markdown(&mut md, "1000 nodes", &one);
        assert!(md.is_empty());
        let two = [one.clone(), one].concat();
        markdown(&mut md, "1000 nodes", &two);
        assert!(md.contains("## 1000 nodes: medians of 2 runs"));
        assert!(md.contains("| everynode v1alpha1 | CPU s (S1-S5) | upstream | 0.25 | 0.25–0.25 | 2 of 2 | ≤ 0.40 | met |"));
    }
}
