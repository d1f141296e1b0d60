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
    }
}
