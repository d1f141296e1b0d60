//! The planner's speed tricks, in one place. Each stays because the planner benchmark
//! (`cargo bench -p everynode-core`) shows it pays; `docs/architecture.md` has the figures.
//!
//! - [`NodeIndex`]: the node names in slot order in one buffer, and a hashed name → slot
//!   lookup that holds only indices (mapping 5,000 pods to their nodes through std's `HashMap`
//!   made the whole plan 11–22 % slower). The explain records share the buffer.
//! - [`strs`]: short-string comparisons and label lookups (std's made plans ~12 % slower).

pub(crate) mod strs;

use crate::explain::offset;
use std::sync::Arc;

use crate::snapshot::NodeView;

use strs::{eq, hash};

/// The node names in slot order, in one buffer, and the slot of each name (the last one for
/// duplicates): mapping a pod to its node compares its target with this buffer rather than
/// with each node's own (scattered) name string.
pub(crate) struct NodeIndex {
    buffer: String,
    /// Name `i` is `buffer[bounds[i]..bounds[i + 1]]`.
    bounds: Vec<u32>,
    lookup: NameIndex,
}

impl NodeIndex {
    /// An empty index sized for `nodes`.
    pub fn with_capacity(nodes: &[Arc<NodeView>]) -> Self {
        let mut bounds = Vec::with_capacity(nodes.len() + 1);
        bounds.push(0);
        Self {
            buffer: String::with_capacity(nodes.iter().map(|n| n.name.len()).sum()),
            bounds,
            lookup: NameIndex::with_capacity(nodes.len()),
        }
    }

    /// Adds `name` as the next slot.
    pub fn push(&mut self, name: &str) {
        let slot = self.bounds.len() - 1;
        self.buffer.push_str(name);
        self.bounds.push(offset(self.buffer.len()));
        let (buffer, bounds) = (&self.buffer, &self.bounds);
        self.lookup
            .insert(name, slot, |i| name_at(buffer, bounds, i));
    }

    /// The slot of `name`.
    #[inline]
    pub fn slot(&self, name: &str) -> Option<usize> {
        self.lookup
            .get(name, |i| name_at(&self.buffer, &self.bounds, i))
    }

    /// `(start, end)` of name `i` in the buffer.
    pub fn range(&self, i: usize) -> (u32, u32) {
        match self.bounds.get(i..i + 2) {
            Some(&[start, end]) => (start, end),
            _ => (0, 0),
        }
    }

    /// Takes the names' buffer, for the explain records ([`NodeIndex::range`] still answers;
    /// the lookup no longer does).
    pub fn take_buffer(&mut self) -> String {
        std::mem::take(&mut self.buffer)
    }
}

/// Name `i` of a buffer.
fn name_at<'b>(buffer: &'b str, bounds: &[u32], i: usize) -> &'b str {
    match bounds.get(i..i + 2) {
        Some(&[start, end]) => buffer.get(start as usize..end as usize).unwrap_or_default(),
        _ => "",
    }
}

/// Name → index into a list of named items, for names read from the list itself (the table
/// holds only indices and a few hash bits): open addressing with linear probing, at most 2/3
/// full. Inserting a name again points it to the later item.
#[derive(Clone, Debug, Default)]
struct NameIndex {
    /// `(hash tag, index + 1)`; `(_, 0)` is an empty bucket. Empty or a power of two long.
    table: Vec<(u32, u32)>,
    /// Occupied buckets.
    len: usize,
}

impl NameIndex {
    /// An index for up to `n` names.
    fn with_capacity(n: usize) -> Self {
        let buckets = (n + n / 2).max(8).next_power_of_two();
        Self {
            table: vec![(0, 0); buckets],
            len: 0,
        }
    }

    /// Maps `name` to `index` (`name_of(i)` gives the names already inserted).
    fn insert<'n>(&mut self, name: &str, index: usize, name_of: impl Fn(usize) -> &'n str + Copy) {
        if 3 * (self.len + 1) > 2 * self.table.len() {
            let old = std::mem::replace(self, Self::with_capacity(2 * (self.len + 1)));
            for &(_, value) in &old.table {
                if value != 0 {
                    let i = value as usize - 1;
                    self.insert(name_of(i), i, name_of);
                }
            }
        }
        let h = hash(name);
        let tag = (h >> 32) as u32;
        let mask = self.table.len() - 1;
        let mut pos = (h as usize) & mask;
        // Item counts beyond u32 are far beyond any cluster (and any memory).
        let value = index as u32 + 1;
        while let Some(bucket) = self.table.get_mut(pos) {
            if bucket.1 == 0 {
                *bucket = (tag, value);
                self.len += 1;
                return;
            }
            if bucket.0 == tag && eq(name_of(bucket.1 as usize - 1), name) {
                bucket.1 = value;
                return;
            }
            pos = (pos + 1) & mask;
        }
    }

    /// The index `name` maps to.
    #[inline]
    fn get<'n>(&self, name: &str, name_of: impl Fn(usize) -> &'n str) -> Option<usize> {
        let mask = self.table.len().checked_sub(1)?;
        let h = hash(name);
        let tag = (h >> 32) as u32;
        let mut pos = (h as usize) & mask;
        loop {
            let &(t, value) = self.table.get(pos)?;
            if value == 0 {
                return None;
            }
            let i = value as usize - 1;
            if t == tag && eq(name_of(i), name) {
                return Some(i);
            }
            pos = (pos + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_their_last_slot() {
        let names: Vec<String> = (0..200).map(|i| format!("n-{}", i % 150)).collect();
        let mut index = NodeIndex::with_capacity(&[]);
        for n in &names {
            index.push(n);
        }
        for (i, n) in names.iter().enumerate() {
            let last = names.iter().rposition(|m| m == n);
            assert_eq!(index.slot(n), last, "{i}");
        }
        assert_eq!(index.slot("n-150"), None);
        assert_eq!(NodeIndex::with_capacity(&[]).slot("x"), None);
    }
}
