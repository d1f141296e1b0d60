//! The many-sets workload: nodes split into slices by a label, and sets that each select a
//! window of consecutive slices (required node affinity), rotating, so every slice is selected
//! by the same number of sets and moving one node to the next slice moves it out of one
//! rotation's sets and into another's ([`Slicing`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::workload::{APP_LABEL, IMAGE, PodInfo, Progress, REV_LABEL};

/// Node label that puts a node in a slice (`s0` … `s9`).
pub const SLICE_LABEL: &str = "bench.everynode.dev/slice";
/// How the nodes are sliced: `slices` slices (round robin), each set selecting `window`
/// consecutive ones, rotating, so every slice is selected by the same number of sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slicing {
    /// Number of slices.
    pub slices: usize,
    /// Consecutive slices each set selects.
    pub window: usize,
}

impl Default for Slicing {
    /// Ten slices, four per set: 50 sets on 1,000 nodes run 400 pods each, and moving a node
    /// to the next slice moves it out of 5 sets and into 5 others.
    fn default() -> Self {
        Self {
            slices: 10,
            window: 4,
        }
    }
}

/// The label value of slice `k`.
#[must_use]
pub fn slice_value(k: usize) -> String {
    format!("s{k}")
}

/// Name of set `j`.
#[must_use]
pub fn set_name(j: usize) -> String {
    format!("fleet-{j:02}")
}

impl Slicing {
    /// Checks that the window fits in the slices.
    ///
    /// # Errors
    /// A message naming the option to change.
    pub fn validate(self) -> Result<Self, String> {
        if self.window == 0 || self.window > self.slices {
            return Err(format!(
                "--window {} must be between 1 and --slices ({})",
                self.window, self.slices
            ));
        }
        Ok(self)
    }

    /// The slice of the `i`-th node (round robin).
    #[must_use]
    pub fn slice_of_node(self, i: usize) -> usize {
        i % self.slices
    }

    /// The slice after `k`.
    #[must_use]
    pub fn next(self, k: usize) -> usize {
        (k + 1) % self.slices
    }

    /// The slices set `j` selects: `window` consecutive ones from `j mod slices`.
    #[must_use]
    pub fn slices_of(self, j: usize) -> BTreeSet<usize> {
        (0..self.window).map(|t| (j + t) % self.slices).collect()
    }

    /// How many of `sets` sets select slice `k`.
    #[must_use]
    pub fn sets_selecting(self, k: usize, sets: usize) -> usize {
        (0..sets)
            .filter(|&j| self.slices_of(j).contains(&k))
            .count()
    }

    /// Set `j` for `api_version` in `namespace`: its own app label, its slices by required
    /// node affinity (KWOK nodes only), RollingUpdate with maxUnavailable 10 %.
    #[must_use]
    pub fn set_object(self, api_version: &str, namespace: &str, j: usize, rev: &str) -> Value {
        let name = set_name(j);
        let slices: Vec<String> = self.slices_of(j).into_iter().map(slice_value).collect();
        json!({
            "apiVersion": api_version,
            "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": {"matchLabels": {APP_LABEL: name}},
                "template": {
                    "metadata": {"labels": {APP_LABEL: name, REV_LABEL: rev}},
                    "spec": {
                        "nodeSelector": {"type": "kwok"},
                        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [
                                {"key": SLICE_LABEL, "operator": "In", "values": slices}
                            ]}]
                        }}},
                        "containers": [{
                            "name": "pause",
                            "image": IMAGE,
                            "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}
                        }]
                    }
                },
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}}
            }
        })
    }

    /// The nodes (by slice) set `j` runs on.
    #[must_use]
    pub fn nodes_of(self, j: usize, slices: &BTreeMap<String, usize>) -> BTreeSet<String> {
        let window = self.slices_of(j);
        slices
            .iter()
            .filter(|(_, k)| window.contains(k))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The sets whose nodes change when a node moves from slice `from` to slice `to`.
    #[must_use]
    pub fn sets_moved_by(self, from: usize, to: usize, sets: usize) -> Vec<usize> {
        (0..sets)
            .filter(|&j| self.slices_of(j).contains(&from) != self.slices_of(j).contains(&to))
            .collect()
    }

    /// Every set's progress toward "one ready pod at `rev` on each of its nodes, no other
    /// pod", from the namespace's pods (each names its set by its app label).
    #[must_use]
    pub fn fleet_progress<'p>(
        self,
        pods: impl IntoIterator<Item = &'p PodInfo>,
        slices: &BTreeMap<String, usize>,
        sets: usize,
        rev: &str,
    ) -> FleetProgress {
        let wanted: Vec<BTreeSet<String>> = (0..sets).map(|j| self.nodes_of(j, slices)).collect();
        let index: BTreeMap<String, usize> = (0..sets).map(|j| (set_name(j), j)).collect();
        let mut ready: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); sets];
        let mut stray = vec![0usize; sets];
        for pod in pods {
            let Some(&j) = index.get(&pod.app) else {
                continue;
            };
            if !wanted[j].contains(&pod.node) || pod.rev != rev {
                stray[j] += 1;
            } else if pod.ready && !pod.deleting {
                ready[j].insert(pod.node.as_str());
            }
        }
        let per_set = (0..sets)
            .map(|j| Progress {
                nodes: wanted[j].len(),
                ready: ready[j].len(),
                old: stray[j],
                missing: wanted[j]
                    .iter()
                    .filter(|n| !ready[j].contains(n.as_str()))
                    .take(5)
                    .cloned()
                    .collect(),
            })
            .collect();
        FleetProgress { per_set }
    }
}

/// See [`Slicing::fleet_progress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetProgress {
    /// Progress of each set (old = pods at another revision or on a node it does not select).
    pub per_set: Vec<Progress>,
}

impl FleetProgress {
    /// Every set converged.
    #[must_use]
    pub fn done(&self) -> bool {
        self.per_set.iter().all(Progress::done)
    }

    /// Pods the sets want in all.
    #[must_use]
    pub fn wanted_pods(&self) -> usize {
        self.per_set.iter().map(|p| p.nodes).sum()
    }
}

impl std::fmt::Display for FleetProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let done = self.per_set.iter().filter(|p| p.done()).count();
        write!(f, "{done}/{} sets converged", self.per_set.len())?;
        if let Some((j, p)) = self.per_set.iter().enumerate().find(|(_, p)| !p.done()) {
            write!(f, "; {}: {p}", set_name(j))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_BY_FOUR: Slicing = Slicing {
        slices: 10,
        window: 4,
    };

    fn slices(n: usize, slicing: Slicing) -> BTreeMap<String, usize> {
        (0..n)
            .map(|i| (format!("n{i:04}"), slicing.slice_of_node(i)))
            .collect()
    }

    #[test]
    fn every_slice_is_selected_by_the_same_number_of_sets() {
        let s = Slicing::default();
        assert_eq!(s, TEN_BY_FOUR);
        let per_slice: Vec<usize> = (0..10).map(|k| s.sets_selecting(k, 50)).collect();
        assert_eq!(per_slice, vec![20; 10]);
        // 50 sets on 1,000 nodes: 400 nodes each, 20,000 pods.
        let nodes = slices(1000, s);
        assert!((0..50).all(|j| s.nodes_of(j, &nodes).len() == 400));
        // 50 slices of one: 50 sets on 5,000 nodes run 100 pods each, one set per slice.
        let single = Slicing {
            slices: 50,
            window: 1,
        };
        let nodes = slices(5000, single);
        assert!((0..50).all(|j| single.nodes_of(j, &nodes).len() == 100));
        assert!((0..50).all(|k| single.sets_selecting(k, 50) == 1));
        assert_eq!(single.sets_moved_by(3, single.next(3), 50), vec![3, 4]);
    }

    #[test]
    fn moving_a_node_to_the_next_slice_moves_ten_of_fifty_sets() {
        for from in 0..10 {
            let moved = TEN_BY_FOUR.sets_moved_by(from, TEN_BY_FOUR.next(from), 50);
            assert_eq!(moved.len(), 10, "from s{from}: {moved:?}");
        }
    }

    #[test]
    fn a_window_wider_than_the_slices_is_refused() {
        let wide = Slicing {
            slices: 3,
            window: 4,
        };
        assert!(wide.validate().is_err_and(|e| e.contains("--window 4")));
        assert!(TEN_BY_FOUR.validate().is_ok());
    }

    #[test]
    fn set_objects_select_their_window_and_label_their_pods() {
        let set = TEN_BY_FOUR.set_object("apps/v1", "ns", 9, "1");
        assert_eq!(set["metadata"]["name"], "fleet-09");
        let values = &set["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0]["values"];
        assert_eq!(values, &json!(["s0", "s1", "s2", "s9"]));
        assert_eq!(
            set["spec"]["template"]["metadata"]["labels"][APP_LABEL],
            "fleet-09"
        );
    }

    #[test]
    fn progress_counts_each_set_on_its_own_nodes() {
        let nodes = slices(20, TEN_BY_FOUR);
        let pod = |set: usize, node: &str, rev: &str| PodInfo {
            app: set_name(set),
            node: node.into(),
            rev: rev.into(),
            ready: true,
            deleting: false,
        };
        let mut pods: Vec<PodInfo> = Vec::new();
        for j in 0..2 {
            for n in TEN_BY_FOUR.nodes_of(j, &nodes) {
                pods.push(pod(j, &n, "1"));
            }
        }
        let progress = |pods: &[PodInfo]| TEN_BY_FOUR.fleet_progress(pods, &nodes, 2, "1");
        assert!(progress(&pods).done());
        assert_eq!(progress(&pods).wanted_pods(), 16);
        // a pod of set 0 on a node outside its window keeps it from converging
        let outside = nodes.iter().find(|(_, k)| **k == 7).map(|(n, _)| n.clone());
        pods.push(pod(0, &outside.unwrap_or_default(), "1"));
        let p = progress(&pods);
        assert!(!p.done());
        assert_eq!((p.per_set[0].old, p.per_set[1].old), (1, 0));
        assert!(p.to_string().starts_with("1/2 sets converged; fleet-00"));
    }
}
