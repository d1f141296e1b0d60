//! Short-string helpers for the planner's hot loops: label lookups, node-name comparisons and
//! hashing. Names, label keys and hashes are short (mostly under 32 bytes), where comparing
//! eight bytes at a time inline beats a `memcmp` call; results are the same as `==`, `cmp`
//! and `BTreeMap::get`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The eight bytes of `b` at `at` (`at + 8 <= b.len()`), big-endian so that integer order is
/// byte order.
#[inline]
fn load(b: &[u8], at: usize) -> u64 {
    b.get(at..)
        .and_then(<[u8]>::first_chunk::<8>)
        .map_or(0, |w| u64::from_be_bytes(*w))
}

/// `b` (shorter than eight bytes) as a big-endian word, zero-padded at the end: two possibly
/// overlapping loads of the first and last bytes, placed at their positions.
#[inline]
fn load_short(b: &[u8]) -> u64 {
    let n = b.len();
    let shift = 8 * (8 - n as u32);
    if n >= 4 {
        let first = b.first_chunk::<4>().map_or(0, |w| u32::from_be_bytes(*w));
        let last = b.last_chunk::<4>().map_or(0, |w| u32::from_be_bytes(*w));
        (u64::from(first) << 32) | (u64::from(last) << shift)
    } else if n >= 2 {
        let first = b.first_chunk::<2>().map_or(0, |w| u16::from_be_bytes(*w));
        let last = b.last_chunk::<2>().map_or(0, |w| u16::from_be_bytes(*w));
        (u64::from(first) << 48) | (u64::from(last) << shift)
    } else {
        b.first().map_or(0, |&x| u64::from(x) << 56)
    }
}

/// Strings up to this length are compared word by word; longer ones by the standard library.
const INLINE_MAX: usize = 32;

/// `a == b`.
#[inline]
pub(crate) fn eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return load_short(a) == load_short(b);
    }
    if n > INLINE_MAX {
        return a == b;
    }
    let mut at = 0;
    while at + 8 < n {
        if load(a, at) != load(b, at) {
            return false;
        }
        at += 8;
    }
    // The last word may overlap the previous one.
    load(a, n - 8) == load(b, n - 8)
}

/// `a.cmp(b)` (byte order).
#[inline]
pub(crate) fn cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len().min(b.len());
    if n > INLINE_MAX {
        return a.cmp(b);
    }
    let (x, y) = if n < 8 {
        (load_short(&a[..n]), load_short(&b[..n]))
    } else {
        let mut at = 0;
        while at + 8 < n {
            let (x, y) = (load(a, at), load(b, at));
            if x != y {
                return x.cmp(&y);
            }
            at += 8;
        }
        // The last word may overlap bytes already found equal.
        (load(a, n - 8), load(b, n - 8))
    };
    x.cmp(&y).then(a.len().cmp(&b.len()))
}

/// Largest map scanned linearly by [`label`]; bigger ones use the tree search.
const SCAN_MAX: usize = 12;

/// `labels.get(key)`, faster for label maps: the first and last entries are checked directly
/// (cheap in a `BTreeMap`, and where a pod's revision hash label and a selector's key often
/// are), then small maps are scanned comparing lengths first, big ones searched. Keys are
/// unique, so all find the same entry.
#[inline]
pub(crate) fn label<'m>(labels: &'m BTreeMap<String, String>, key: &str) -> Option<&'m String> {
    let (k, v) = labels.first_key_value()?;
    if eq(k, key) {
        return Some(v);
    }
    let (k, v) = labels.last_key_value()?;
    if eq(k, key) {
        return Some(v);
    }
    match labels.len() {
        0..=2 => None,
        3..=SCAN_MAX => labels.iter().find(|(k, _)| eq(k, key)).map(|(_, v)| v),
        _ => labels.get(key),
    }
}

/// The first byte of `s` (0 when empty): reading it brings the string into cache.
#[inline]
pub(crate) fn touch(s: &str) -> usize {
    usize::from(s.as_bytes().first().copied().unwrap_or(0))
}

/// Reads the first byte of every key and value of a label map (of the first and last ones
/// for big maps), bringing them into cache; returns a value derived from what it read.
pub(crate) fn touch_labels(labels: &BTreeMap<String, String>) -> usize {
    if labels.len() <= 2 || labels.len() > SCAN_MAX {
        let ends = [labels.first_key_value(), labels.last_key_value()];
        return ends
            .into_iter()
            .flatten()
            .map(|(k, v)| touch(k) + touch(v))
            .sum();
    }
    labels.iter().map(|(k, v)| touch(k) + touch(v)).sum()
}

/// A fast, non-cryptographic hash of a short string: eight bytes per folded multiply.
#[inline]
pub(crate) fn hash(s: &str) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, w: u64| {
        let p = u128::from(h ^ w) * u128::from(K);
        (p as u64) ^ ((p >> 64) as u64)
    };
    let b = s.as_bytes();
    let n = b.len();
    let mut h = mix(0, n as u64);
    if n < 8 {
        return mix(h, load_short(b));
    }
    let mut at = 0;
    while at + 8 < n {
        h = mix(h, load(b, at));
        at += 8;
    }
    mix(h, load(b, n - 8))
}

/// Name → index into a list of named items, for names read from the list itself (the table
/// holds only indices and a few hash bits): open addressing with linear probing, at most 2/3
/// full. Inserting a name again points it to the later item.
#[derive(Clone, Debug, Default)]
pub(crate) struct NameIndex {
    /// `(hash tag, index + 1)`; `(_, 0)` is an empty bucket. Empty or a power of two long.
    table: Vec<(u32, u32)>,
    /// Occupied buckets.
    len: usize,
}

impl NameIndex {
    /// An index for up to `n` names.
    pub(crate) fn with_capacity(n: usize) -> Self {
        let buckets = (n + n / 2).max(8).next_power_of_two();
        Self {
            table: vec![(0, 0); buckets],
            len: 0,
        }
    }

    /// Maps `name` to `index` (`name_of(i)` gives the names already inserted).
    pub(crate) fn insert<'n>(
        &mut self,
        name: &str,
        index: usize,
        name_of: impl Fn(usize) -> &'n str + Copy,
    ) {
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
    pub(crate) fn get<'n>(&self, name: &str, name_of: impl Fn(usize) -> &'n str) -> Option<usize> {
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
    fn helpers_agree_with_std() {
        let samples = [
            "",
            "a",
            "ab",
            "ab\0",
            "node-00001",
            "node-00002",
            "node-0000",
            "kubernetes.io/hostname",
            "kubernetes.io/os",
            "topology.kubernetes.io/zone",
            "controller-revision-hash",
            "controller-revision-hasi",
            "a-very-long-name-that-is-longer-than-thirty-two-bytes-1",
            "a-very-long-name-that-is-longer-than-thirty-two-bytes-2",
            "zz\u{e9}",
            "zz\u{e8}",
        ];
        // Every length up to past the inline limit, differing in each position.
        let mut generated = Vec::new();
        for len in 0..40 {
            let base: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            generated.push(base.clone());
            for at in 0..len {
                let mut bytes = base.clone().into_bytes();
                bytes[at] = if at % 2 == 0 { b'0' } else { b'~' };
                generated.push(String::from_utf8(bytes).unwrap());
            }
        }
        let all: Vec<&str> = samples
            .iter()
            .copied()
            .chain(generated.iter().map(String::as_str))
            .collect();
        for &a in &all {
            for &b in &all {
                assert_eq!(eq(a, b), a == b, "{a:?} == {b:?}");
                assert_eq!(cmp(a, b), a.cmp(b), "{a:?} cmp {b:?}");
            }
        }
        let small: BTreeMap<String, String> = samples[..6]
            .iter()
            .map(|k| ((*k).to_owned(), format!("v{k}")))
            .collect();
        let big: BTreeMap<String, String> = samples
            .iter()
            .map(|k| ((*k).to_owned(), format!("v{k}")))
            .collect();
        for map in [&small, &big] {
            for k in samples.iter().chain(&["missing"]) {
                assert_eq!(label(map, k), map.get(*k));
            }
        }
        // Duplicates map to the last one.
        let names: Vec<String> = (0..200).map(|i| format!("n-{}", i % 150)).collect();
        let mut index = NameIndex::default();
        for (i, n) in names.iter().enumerate() {
            index.insert(n, i, |j| names[j].as_str());
        }
        for (i, n) in names.iter().enumerate() {
            let last = names.iter().rposition(|m| m == n);
            assert_eq!(index.get(n, |j| names[j].as_str()), last, "{i}");
        }
        assert_eq!(index.get("n-150", |j| names[j].as_str()), None);
        assert_eq!(NameIndex::default().get("x", |j| names[j].as_str()), None);
    }
}
