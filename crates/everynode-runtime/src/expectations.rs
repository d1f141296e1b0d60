//! Writes the controller has made but not yet seen in its caches.
//!
//! The informer caches lag behind the controller's own writes. Planning on a cache that does not
//! yet show a pod the controller just created would create a second one. Like upstream's
//! expectations, a set with pending writes is not planned again until the caches show them (or a
//! time-to-live passes, so one lost event cannot wedge a set). Unlike upstream's counters, writes
//! are tracked by identity — created pod names, deleted pods by UID (and name, to find them) —
//! and checked against the cache itself, so no event handler has to decrement anything. A restart starts clean: the pod cache
//! is filled by a consistent list, so it holds every pod an earlier run created.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long pending writes block planning before they are given up on (upstream: 5 minutes).
pub const EXPECTATIONS_TTL: Duration = Duration::from_secs(5 * 60);

/// What the cache says about one pod the controller wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachedPod {
    /// Not in the cache.
    Absent,
    /// In the cache, not being deleted.
    Present,
    /// In the cache with a deletion timestamp.
    Terminating,
}

#[derive(Debug, Default)]
struct Pending {
    /// UID of the set the writes were for (a set deleted and created again under its name has
    /// another).
    set_uid: String,
    creates: BTreeSet<String>,
    /// Deleted pods: UID → name.
    deletes: BTreeMap<String, String>,
    /// Pods updated in place: `(name, revision hash)`.
    updates: BTreeSet<(String, String)>,
    since: Option<Instant>,
}

/// Pending writes per set, keyed by the set's `namespace/name`.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    /// Records writes about to be issued for `set`: pods created by name, pods deleted as
    /// `(UID, name)`, pods updated in place as `(name, revision hash)` (satisfied once the cache shows the pod
    /// with that hash, or without the pod). Adds to whatever is pending: a plan made while
    /// writes were outstanding has none of its own, and recording it must not forget theirs
    /// (the next plan would then run on a cache that does not show them yet).
    pub fn expect(
        &self,
        set: &str,
        set_uid: &str,
        created_names: impl IntoIterator<Item = String>,
        deleted: impl IntoIterator<Item = (String, String)>,
        updates: impl IntoIterator<Item = (String, String)>,
        now: Instant,
    ) {
        let mut creates = created_names.into_iter().peekable();
        let mut deletes = deleted.into_iter().peekable();
        let mut updates = updates.into_iter().peekable();
        if creates.peek().is_none() && deletes.peek().is_none() && updates.peek().is_none() {
            return;
        }
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let pending = map.entry(set.to_owned()).or_default();
        if pending.set_uid != set_uid {
            *pending = Pending {
                set_uid: set_uid.to_owned(),
                ..Pending::default()
            };
        }
        pending.creates.extend(creates);
        pending.deletes.extend(deletes);
        pending.updates.extend(updates);
        pending.since = Some(now);
    }

    /// Forgets an in-place update that failed.
    pub fn update_failed(&self, set: &str, pod: &str) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pending) = map.get_mut(set) {
            pending.updates.retain(|(name, _)| name != pod);
        }
    }

    /// Forgets a write that failed (it will never show up in the cache).
    pub fn write_failed(&self, set: &str, created_name: Option<&str>, deleted_uid: Option<&str>) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pending) = map.get_mut(set) {
            if let Some(name) = created_name {
                pending.creates.remove(name);
            }
            if let Some(uid) = deleted_uid {
                pending.deletes.remove(uid);
            }
        }
    }

    /// Whether `set` has writes recorded that were not yet seen satisfied.
    pub fn has_pending(&self, set: &str) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(set)
    }

    /// Whether every pending write of `set` shows in the cache (or has expired). `by_name` looks
    /// a pod up by name, `by_name_and_uid` likewise but answers [`CachedPod::Absent`] for a pod
    /// of that name with another UID (a deleted pod's successor), `shows_hash` whether a pod
    /// updated in place shows its new revision hash (or is gone). Satisfied writes are
    /// forgotten. Returns the number of writes still outstanding (0 = satisfied).
    pub fn outstanding(
        &self,
        set: &str,
        now: Instant,
        by_name: impl Fn(&str) -> CachedPod,
        by_name_and_uid: impl Fn(&str, &str) -> CachedPod,
        shows_hash: impl Fn(&str, &str) -> bool,
    ) -> usize {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pending) = map.get_mut(set) else {
            return 0;
        };
        let expired = pending
            .since
            .is_some_and(|since| now.saturating_duration_since(since) >= EXPECTATIONS_TTL);
        pending
            .creates
            .retain(|name| by_name(name) == CachedPod::Absent);
        pending
            .deletes
            .retain(|uid, name| by_name_and_uid(name, uid) == CachedPod::Present);
        pending
            .updates
            .retain(|(name, hash)| !shows_hash(name, hash));
        let left = pending.creates.len() + pending.deletes.len() + pending.updates.len();
        if left == 0 || expired {
            map.remove(set);
            return 0;
        }
        left
    }

    /// Drops what is pending for `set` when it was recorded for another set of that name (one
    /// deleted and created again): the new set must not wait for the old one's pods.
    pub fn claim(&self, set: &str, set_uid: &str) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(set).is_some_and(|p| p.set_uid != set_uid) {
            map.remove(set);
        }
    }

    /// Forgets a pod creation the pod watch has shown (even if the pod is gone again by the
    /// next plan: deleted by someone else, or by the garbage collector).
    pub fn observed_create(&self, set: &str, pod: &str) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pending) = map.get_mut(set) {
            pending.creates.remove(pod);
        }
    }

    /// Drops everything pending for a set that is gone.
    pub fn forget(&self, set: &str) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outstanding writes of `set` when the cache holds no pod at all.
    fn with_empty_cache(e: &Expectations, set: &str, now: Instant) -> usize {
        e.outstanding(
            set,
            now,
            |_| CachedPod::Absent,
            |_, _| CachedPod::Absent,
            |_, _| true,
        )
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Deleted pods `(UID, name)`, each named after its UID.
    fn uids(list: &[&str]) -> Vec<(String, String)> {
        list.iter()
            .map(|uid| ((*uid).to_owned(), format!("pod-{uid}")))
            .collect()
    }

    #[test]
    fn a_plan_without_writes_keeps_what_is_pending() {
        // The benchmark found it: a reconcile triggered while creates were outstanding planned
        // no writes, recorded that empty plan, and so cleared the pending creates; the next
        // reconcile planned on a lagging cache and created the same pods again (409s).
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect("ns/a", "uid-a", names(&["a-1", "a-2"]), vec![], [], t0);
        e.expect("ns/a", "uid-a", vec![], vec![], [], t0);
        assert_eq!(with_empty_cache(&e, "ns/a", t0), 2);
        // Writes recorded later add to the earlier ones.
        e.expect("ns/a", "uid-a", names(&["a-3"]), uids(&["uid-9"]), [], t0);
        let present = |_: &str, _: &str| CachedPod::Present;
        assert_eq!(
            e.outstanding("ns/a", t0, |_| CachedPod::Absent, present, |_, _| true),
            4
        );
    }

    #[test]
    fn nothing_pending_is_satisfied() {
        let e = Expectations::default();
        assert_eq!(with_empty_cache(&e, "ns/a", Instant::now()), 0);
    }

    #[test]
    fn creates_are_satisfied_once_the_cache_shows_them() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect("ns/a", "uid-a", names(&["a-1", "a-2"]), vec![], [], t0);
        assert_eq!(with_empty_cache(&e, "ns/a", t0), 2);
        let seen = |n: &str| {
            if n == "a-1" {
                CachedPod::Present
            } else {
                CachedPod::Absent
            }
        };
        assert_eq!(
            e.outstanding("ns/a", t0, seen, |_, _| CachedPod::Absent, |_, _| true),
            1
        );
        // a pod that was created and is already terminating was seen too
        assert_eq!(
            e.outstanding(
                "ns/a",
                t0,
                |_| CachedPod::Terminating,
                |_, _| CachedPod::Absent,
                |_, _| true
            ),
            0
        );
        // and once satisfied the record is gone, even if the cache forgets the pod again
        assert_eq!(with_empty_cache(&e, "ns/a", t0), 0);
    }

    #[test]
    fn deletes_are_satisfied_by_a_deletion_timestamp_or_absence() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect("ns/a", "uid-a", vec![], uids(&["uid-1", "uid-2"]), [], t0);
        let by_name_and_uid = |name: &str, uid: &str| match (name, uid) {
            ("pod-uid-1", "uid-1") => CachedPod::Terminating,
            (_, _) => CachedPod::Present,
        };
        assert_eq!(
            e.outstanding(
                "ns/a",
                t0,
                |_| CachedPod::Absent,
                by_name_and_uid,
                |_, _| true
            ),
            1
        );
        assert_eq!(with_empty_cache(&e, "ns/a", t0), 0);
    }

    #[test]
    fn a_delete_is_satisfied_when_its_name_holds_a_new_pod() {
        // Pod names are deterministic: the node's next pod may carry the deleted one's name.
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect("ns/a", "uid-a", vec![], uids(&["uid-1"]), [], t0);
        assert!(e.has_pending("ns/a"));
        let successor = |name: &str, uid: &str| {
            if name == "pod-uid-1" && uid == "uid-2" {
                CachedPod::Present
            } else {
                CachedPod::Absent
            }
        };
        assert_eq!(
            e.outstanding("ns/a", t0, |_| CachedPod::Present, successor, |_, _| true),
            0
        );
        assert!(!e.has_pending("ns/a"));
    }

    #[test]
    fn in_place_updates_are_satisfied_once_the_cache_shows_the_new_hash() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect(
            "ns/a",
            "uid-a",
            vec![],
            vec![],
            [("a-1".to_owned(), "h2".to_owned())],
            t0,
        );
        let absent = |_: &str| CachedPod::Absent;
        let deleted = |_: &str, _: &str| CachedPod::Absent;
        assert_eq!(
            e.outstanding("ns/a", t0, absent, deleted, |_, h| h == "h1"),
            1
        );
        assert_eq!(
            e.outstanding("ns/a", t0, absent, deleted, |n, h| n == "a-1" && h == "h2"),
            0
        );
    }

    #[test]
    fn pending_writes_expire_after_the_ttl() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect("ns/a", "uid-a", names(&["a-1"]), vec![], [], t0);
        let almost = t0 + EXPECTATIONS_TTL - Duration::from_millis(1);
        assert_eq!(with_empty_cache(&e, "ns/a", almost), 1);
        assert_eq!(with_empty_cache(&e, "ns/a", t0 + EXPECTATIONS_TTL), 0);
    }

    #[test]
    fn failed_writes_are_not_waited_for() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect(
            "ns/a",
            "uid-a",
            names(&["a-1", "a-2"]),
            uids(&["uid-1"]),
            [],
            t0,
        );
        e.write_failed("ns/a", Some("a-1"), None);
        e.write_failed("ns/a", None, Some("uid-1"));
        let seen = |n: &str| {
            if n == "a-2" {
                CachedPod::Present
            } else {
                CachedPod::Absent
            }
        };
        assert_eq!(
            e.outstanding("ns/a", t0, seen, |_, _| CachedPod::Present, |_, _| true),
            0
        );
    }

    #[test]
    fn sets_are_independent_and_forgettable() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect("ns/a", "uid-a", names(&["a-1"]), vec![], [], t0);
        e.expect("ns/b", "uid-b", names(&["b-1"]), vec![], [], t0);
        e.forget("ns/a");
        assert_eq!(with_empty_cache(&e, "ns/a", t0), 0);
        assert_eq!(with_empty_cache(&e, "ns/b", t0), 1);
    }

    #[test]
    fn a_set_created_again_under_its_name_does_not_wait_for_the_old_ones_pods() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.expect("ns/a", "uid-old", names(&["a-1"]), vec![], [], t0);
        e.claim("ns/a", "uid-old");
        assert_eq!(with_empty_cache(&e, "ns/a", t0), 1);
        e.claim("ns/a", "uid-new");
        assert_eq!(with_empty_cache(&e, "ns/a", t0), 0);
        // And writes recorded for the new set replace the old set's.
        e.expect("ns/a", "uid-old", names(&["a-1"]), vec![], [], t0);
        e.expect("ns/a", "uid-new", names(&["a-9"]), vec![], [], t0);
        e.observed_create("ns/a", "a-9");
        assert_eq!(with_empty_cache(&e, "ns/a", t0), 0);
    }
}
