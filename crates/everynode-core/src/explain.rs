//! Compact building blocks of the per-node `explain` output ([`crate::NodeDecision`]).
//!
//! A plan over thousands of nodes makes one decision per node. Giving each its own `String`
//! name and `Vec` of deferrals cost two heap allocations (and frees) per node, most of the
//! price of `explain`. Here all names of a plan share one buffer ([`SharedName`]) and a node's
//! deferrals are stored inline unless there are several ([`Deferrals`]); the (rarely present)
//! exclusion reason is boxed, which keeps a decision small. Both types behave like the string
//! and list they stand for: they deref to `str` / `[Deferred]`, compare with strings / slices,
//! and print (`Debug`, `Display`) and serialise exactly as `String` and `Vec<Deferred>` do, so
//! the plan's `Debug` and JSON output are unchanged.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::reason::Deferred;

/// A node or pod name in a plan's explain output; the decisions of one plan share one buffer
/// of node names and one of pod names.
#[derive(Clone)]
pub struct SharedName {
    names: Arc<str>,
    start: u32,
    end: u32,
}

impl SharedName {
    /// A name with a buffer of its own.
    pub fn new(name: &str) -> Self {
        Self {
            names: Arc::from(name),
            start: 0,
            end: offset(name.len()),
        }
    }

    /// The name at `start..end` of a plan's shared buffer of names.
    pub(crate) fn in_buffer(names: &Arc<str>, start: u32, end: u32) -> Self {
        Self {
            names: Arc::clone(names),
            start,
            end,
        }
    }

    /// Another name at `start..end` of the buffer this one is in.
    pub(crate) fn in_same_buffer(&self, start: u32, end: u32) -> &str {
        self.names
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        self.names
            .get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

/// A buffer offset (names beyond 4 GiB would read as empty, not panic).
pub(crate) fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Deref for SharedName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SharedName {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for SharedName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for SharedName {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for SharedName {
    fn from(name: String) -> Self {
        Self::new(&name)
    }
}

impl From<&SharedName> for String {
    fn from(name: &SharedName) -> Self {
        name.as_str().to_owned()
    }
}

impl fmt::Debug for SharedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SharedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl Serialize for SharedName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq for SharedName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SharedName {}

impl PartialOrd for SharedName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for SharedName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

macro_rules! str_eq {
    ($($t:ty),*) => {$(
        impl PartialEq<$t> for SharedName {
            fn eq(&self, other: &$t) -> bool {
                self.as_str() == AsRef::<str>::as_ref(other)
            }
        }
        impl PartialEq<SharedName> for $t {
            fn eq(&self, other: &SharedName) -> bool {
                AsRef::<str>::as_ref(self) == other.as_str()
            }
        }
    )*};
}
str_eq!(str, &str, String);

/// What a plan deferred on one node, in order. Most nodes defer nothing or one thing, which
/// is stored inline.
#[derive(Clone, Default)]
pub struct Deferrals(Repr);

#[derive(Clone, Default)]
enum Repr {
    #[default]
    Empty,
    One(Deferred),
    Many(Vec<Deferred>),
}

impl Deferrals {
    /// No deferral.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `d`.
    pub fn push(&mut self, d: Deferred) {
        self.0 = match std::mem::take(&mut self.0) {
            Repr::Empty => Repr::One(d),
            Repr::One(first) => Repr::Many(vec![first, d]),
            Repr::Many(mut v) => {
                v.push(d);
                Repr::Many(v)
            }
        };
    }

    /// The deferrals, in order.
    pub fn as_slice(&self) -> &[Deferred] {
        match &self.0 {
            Repr::Empty => &[],
            Repr::One(d) => std::slice::from_ref(d),
            Repr::Many(v) => v,
        }
    }
}

impl Deref for Deferrals {
    type Target = [Deferred];
    fn deref(&self) -> &[Deferred] {
        self.as_slice()
    }
}

impl<'d> IntoIterator for &'d Deferrals {
    type Item = &'d Deferred;
    type IntoIter = std::slice::Iter<'d, Deferred>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl FromIterator<Deferred> for Deferrals {
    fn from_iter<I: IntoIterator<Item = Deferred>>(iter: I) -> Self {
        let mut out = Self::new();
        for d in iter {
            out.push(d);
        }
        out
    }
}

impl From<Vec<Deferred>> for Deferrals {
    fn from(v: Vec<Deferred>) -> Self {
        v.into_iter().collect()
    }
}

impl From<Deferrals> for Vec<Deferred> {
    fn from(d: Deferrals) -> Self {
        match d.0 {
            Repr::Empty => Vec::new(),
            Repr::One(d) => vec![d],
            Repr::Many(v) => v,
        }
    }
}

impl fmt::Debug for Deferrals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl Serialize for Deferrals {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

impl PartialEq for Deferrals {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Deferrals {}

impl PartialEq<[Deferred]> for Deferrals {
    fn eq(&self, other: &[Deferred]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<Vec<Deferred>> for Deferrals {
    fn eq(&self, other: &Vec<Deferred>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_behave_like_strings() {
        let strings = ["node-0", "", "node-10"];
        let buffer: Arc<str> = Arc::from(strings.concat());
        let names = [
            SharedName::in_buffer(&buffer, 0, 6),
            SharedName::in_buffer(&buffer, 6, 6),
            SharedName::in_buffer(&buffer, 6, 13),
        ];
        assert_eq!(names.len(), 3);
        for (n, s) in names.iter().zip(strings) {
            assert_eq!(n, s);
            assert_eq!(*n, *s);
            assert_eq!(n, &SharedName::new(s));
            assert_eq!(format!("{n:?}"), format!("{s:?}"));
            assert_eq!(format!("{n:#?}"), format!("{:#?}", s.to_owned()));
            assert_eq!(n.to_string(), s);
            assert_eq!(serde_json::to_string(n).ok(), serde_json::to_string(s).ok());
        }
        assert!(names[0] < names[2]);
    }

    #[test]
    fn deferrals_behave_like_a_vec() {
        let items = [
            Deferred::BurstLimit,
            Deferred::Backoff {
                delay: std::time::Duration::from_secs(2),
            },
            Deferred::WaitingForTermination,
        ];
        for n in 0..=items.len() {
            let v: Vec<Deferred> = items[..n].to_vec();
            let d: Deferrals = v.iter().cloned().collect();
            assert_eq!(d, v);
            assert_eq!(d.len(), n);
            assert_eq!(format!("{d:?}"), format!("{v:?}"));
            assert_eq!(format!("{d:#?}"), format!("{v:#?}"));
            assert_eq!(
                serde_json::to_string(&d).ok(),
                serde_json::to_string(&v).ok()
            );
            assert_eq!(Vec::from(d.clone()), v);
            assert_eq!(Deferrals::from(v.clone()), d);
        }
    }
}
