//! What a plan reads from pod labels, computed once per distinct label map.
//!
//! The controller gives pods with equal labels one shared map ([`PodLabels`]): every pod of a
//! revision carries the same labels, so a plan over 5,000 pods meets a handful of maps. Reading
//! 5,000 maps scattered over the heap (the selector match and the revision hash of each pod) was
//! the plan's largest cost; a memo keyed by the map's address reads each distinct map once. Maps
//! that are not shared (tests, the CLI) are computed every time, as before.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::snapshot::PodLabels;

/// Distinct maps a memo remembers: a set's pods have one per live revision, plus the odd orphan.
const REMEMBERED: usize = 8;

/// A value computed from label maps, remembered for the last few distinct maps.
pub(super) struct LabelMemo<'a, T> {
    seen: Vec<(&'a PodLabels, T)>,
}

impl<'a, T: Copy> LabelMemo<'a, T> {
    pub(super) fn new() -> Self {
        Self {
            seen: Vec::with_capacity(REMEMBERED),
        }
    }

    /// `compute(labels)`, or the value computed before for the same map.
    pub(super) fn get(
        &mut self,
        labels: &'a PodLabels,
        compute: impl FnOnce(&'a BTreeMap<String, String>) -> T,
    ) -> T {
        if let Some((_, value)) = self.seen.iter().find(|(seen, _)| Arc::ptr_eq(seen, labels)) {
            return *value;
        }
        let value = compute(labels);
        if self.seen.len() < REMEMBERED {
            self.seen.push((labels, value));
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> PodLabels {
        Arc::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_shared_map_is_computed_once_and_equal_maps_apart_each_time() {
        let shared = labels(&[("app", "agent")]);
        let copy = labels(&[("app", "agent")]);
        let mut memo = LabelMemo::new();
        let mut computed = 0;
        for map in [&shared, &shared, &copy, &shared, &copy] {
            let value = memo.get(map, |l| {
                computed += 1;
                l.len()
            });
            assert_eq!(value, 1);
        }
        // `shared` once, `copy` once: a map is told apart by its address.
        assert_eq!(computed, 2);
    }

    #[test]
    fn past_the_limit_maps_are_computed_every_time() {
        let maps: Vec<PodLabels> = (0..REMEMBERED + 2)
            .map(|i| labels(&[("n", &i.to_string())]))
            .collect();
        let mut memo = LabelMemo::new();
        let mut computed = 0;
        for _ in 0..2 {
            for map in &maps {
                let value = memo.get(map, |l| {
                    computed += 1;
                    l["n"].parse::<usize>().unwrap_or(usize::MAX)
                });
                assert!(value < maps.len());
            }
        }
        assert_eq!(computed, REMEMBERED + 2 * 2);
    }
}
