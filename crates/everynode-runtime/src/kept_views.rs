//! Views kept between reconciles, one per cached object. The caches replace an object's `Arc`
//! whenever it changes and never change one in place, so a view is built again only for an
//! object whose `Arc` is new, and dropped once its object is no longer among those asked for.
//! An entry holds a `Weak` of its object: the allocation is not reused for another object
//! while the entry lives, so its address names one version of one object, and a lookup hashes
//! that address instead of comparing names and resourceVersions. [`crate::node_views`] keeps
//! one for every node, [`crate::pod_views`] one per set.

use std::collections::hash_map::Entry;
use std::sync::{Arc, Weak};

/// One object's view (`None`: the object has none) and the last refresh that saw it.
#[derive(Debug)]
struct Kept<O, V> {
    /// Keeps the object's allocation, and so its address, from being reused.
    _object: Weak<O>,
    view: Option<Arc<V>>,
    seen: u64,
}

/// Views by the address of the object they were built from.
#[derive(Debug)]
pub struct KeptViews<O, V> {
    by_address: foldhash::HashMap<usize, Kept<O, V>>,
    refreshes: u64,
    /// Views built or dropped so far.
    changes: u64,
}

impl<O, V> Default for KeptViews<O, V> {
    fn default() -> Self {
        Self {
            by_address: foldhash::HashMap::default(),
            refreshes: 0,
            changes: 0,
        }
    }
}

impl<O, V> KeptViews<O, V> {
    /// The views of `objects` in their order, leaving out those `build` gives none: kept for
    /// an object seen before, built otherwise; the views of objects not among `objects` are
    /// dropped.
    pub fn refresh<'a>(
        &mut self,
        objects: impl IntoIterator<Item = &'a Arc<O>>,
        mut build: impl FnMut(&O) -> Option<V>,
    ) -> Vec<Arc<V>>
    where
        O: 'a,
    {
        self.refreshes += 1;
        let now = self.refreshes;
        let mut seen = 0;
        let changes = &mut self.changes;
        let views = objects
            .into_iter()
            .filter_map(|object| {
                let kept = match self.by_address.entry(Arc::as_ptr(object).addr()) {
                    Entry::Occupied(entry) => entry.into_mut(),
                    Entry::Vacant(entry) => {
                        *changes += 1;
                        entry.insert(Kept {
                            _object: Arc::downgrade(object),
                            view: build(object).map(Arc::new),
                            seen: 0,
                        })
                    }
                };
                if kept.seen != now {
                    kept.seen = now;
                    seen += 1;
                }
                kept.view.clone()
            })
            .collect();
        if self.by_address.len() > seen {
            self.changes += 1;
            self.by_address.retain(|_, kept| kept.seen == now);
        }
        views
    }

    /// How many times a view was built or views were dropped: unchanged between two
    /// refreshes, they gave the same views.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// How many objects are kept (with a view or without).
    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    /// Whether no object is kept.
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refresh(kept: &mut KeptViews<String, String>, objects: &[Arc<String>]) -> Vec<Arc<String>> {
        kept.refresh(objects, |o| {
            (!o.starts_with('-')).then(|| format!("view of {o}"))
        })
    }

    #[test]
    fn a_view_is_kept_while_its_object_is_the_same_and_dropped_with_it() {
        let mut kept = KeptViews::default();
        let (a, b) = (Arc::new("a".to_owned()), Arc::new("b".to_owned()));
        let first = refresh(&mut kept, &[a.clone(), b.clone()]);
        // b changed: the cache holds a new Arc, equal or not.
        let b2 = Arc::new("b".to_owned());
        let second = refresh(&mut kept, &[b2.clone(), a.clone()]);
        assert!(Arc::ptr_eq(&first[0], &second[1]), "a unchanged: kept");
        assert!(
            !Arc::ptr_eq(&first[1], &second[0]),
            "b changed: built again"
        );
        assert_eq!(kept.len(), 2, "the old b is dropped");
        refresh(&mut kept, &[b2]);
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn objects_without_a_view_are_left_out_and_remembered() {
        let mut kept = KeptViews::default();
        let objects = [Arc::new("-x".to_owned()), Arc::new("a".to_owned())];
        let views = refresh(&mut kept, &objects);
        assert_eq!(views.len(), 1);
        assert_eq!(*views[0], "view of a");
        assert_eq!(kept.len(), 2);
        assert_eq!(refresh(&mut kept, &objects).len(), 1);
    }

    #[test]
    fn an_entry_keeps_its_address_from_being_reused() {
        let mut kept = KeptViews::default();
        let old = Arc::new("a".to_owned());
        let old_address = Arc::as_ptr(&old).addr();
        refresh(&mut kept, std::slice::from_ref(&old));
        drop(old);
        // While the entry lives no new object can take the old one's address.
        let new: Vec<Arc<String>> = (0..64).map(|i| Arc::new(format!("n{i}"))).collect();
        assert!(new.iter().all(|n| Arc::as_ptr(n).addr() != old_address));
    }
}
