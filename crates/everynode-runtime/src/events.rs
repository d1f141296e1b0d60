//! Events on the set. Pod writes are summarised: one Event per kind of write and cause, naming
//! the pods, instead of one per pod, gathered over a window per set ([`POD_WRITE_WINDOW`]): the
//! first writes after a quiet spell are published at once, later ones together when the window
//! ends, and each window of a set that keeps writing is twice as long as the one before, up to
//! [`POD_WRITE_WINDOW_MAX`]. A rollout over 1,000 nodes thus writes a handful of Events, not
//! 3,000 (upstream's recorder drops most per-pod Events in its spam filter instead). Events
//! never hold up a reconcile; writes still gathered when the controller stops are not published.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::key::key_of;
use crate::target::SetResource;

/// Pods named in one summary Event; the rest are counted.
const NAMED_PODS: usize = 8;

/// The API server's limit on an Event's note (events.k8s.io/v1: 1 kB).
const NOTE_LIMIT: usize = 1024;

/// One kind of pod write and its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PodWrite {
    Created,
    Deleted,
    UpdatedInPlace,
    CreateFailed,
    DeleteFailed,
    UpdateFailed,
}

impl PodWrite {
    /// The Event reason (upstream's, where upstream has one).
    fn reason(self) -> &'static str {
        match self {
            Self::Created => "SuccessfulCreate",
            Self::Deleted => "SuccessfulDelete",
            Self::UpdatedInPlace => "SuccessfulUpdate",
            Self::CreateFailed => "FailedCreate",
            Self::DeleteFailed => "FailedDelete",
            Self::UpdateFailed => "FailedUpdate",
        }
    }

    fn action(self) -> &'static str {
        match self {
            Self::Created | Self::CreateFailed => "CreatePod",
            Self::Deleted | Self::DeleteFailed => "DeletePod",
            Self::UpdatedInPlace | Self::UpdateFailed => "UpdatePod",
        }
    }

    fn failed(self) -> bool {
        matches!(
            self,
            Self::CreateFailed | Self::DeleteFailed | Self::UpdateFailed
        )
    }

    /// The note's opening words.
    fn verb(self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::Deleted => "Deleted",
            Self::UpdatedInPlace => "Updated in place",
            Self::CreateFailed => "Error creating",
            Self::DeleteFailed => "Error deleting",
            Self::UpdateFailed => "Error updating in place",
        }
    }
}

/// How long a set's pod writes are gathered into one Event per kind after the first is
/// published.
pub const POD_WRITE_WINDOW: Duration = Duration::from_secs(5);

/// The longest window: a set that writes pods for minutes publishes them once a minute.
pub const POD_WRITE_WINDOW_MAX: Duration = Duration::from_secs(60);

/// The window after one that ended with writes to publish.
fn next_window(window: Duration) -> Duration {
    window.saturating_mul(2).min(POD_WRITE_WINDOW_MAX)
}

/// Pod writes grouped by kind and detail (the delete reason, the new images, the error), each
/// group published as one Event.
#[derive(Debug, Default)]
pub(crate) struct PodWriteEvents {
    groups: BTreeMap<(PodWrite, String), Vec<String>>,
}

impl PodWriteEvents {
    /// Records one pod write; `detail` is its cause (successes) or error (failures).
    pub(crate) fn record(&mut self, write: PodWrite, pod: &str, detail: String) {
        self.groups
            .entry((write, detail))
            .or_default()
            .push(pod.to_owned());
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Adds `other`'s writes to these.
    fn merge(&mut self, other: Self) {
        for (group, pods) in other.groups {
            self.groups.entry(group).or_default().extend(pods);
        }
    }

    /// Publishes one Event per group, in a fixed order (creates, deletes, updates, failures).
    fn send(self, recorder: &Recorder, regarding: &ObjectReference) {
        for ((write, detail), mut pods) in self.groups {
            pods.sort_unstable();
            let type_ = if write.failed() {
                EventType::Warning
            } else {
                EventType::Normal
            };
            let note = summary_note(write, &detail, &pods);
            send(
                recorder,
                regarding,
                type_,
                write.reason(),
                write.action(),
                note,
            );
        }
    }
}

/// The sets (by UID) whose pod-write window is open, with the writes gathered since it last
/// closed (shared with the task that ends each window).
#[derive(Clone, Debug, Default)]
pub struct PodWriteWindows {
    open: Arc<Mutex<HashMap<String, PodWriteEvents>>>,
}

impl PodWriteWindows {
    /// Takes a set's new writes: `Some` (publish them now and start a window) when no window is
    /// open, else `None` (they are held until the window ends).
    fn gather(&self, set: &str, writes: PodWriteEvents) -> Option<PodWriteEvents> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open.get_mut(set) {
            Some(held) => {
                held.merge(writes);
                None
            }
            None => {
                open.insert(set.to_owned(), PodWriteEvents::default());
                Some(writes)
            }
        }
    }

    /// At the end of a set's window: `Some` (publish them, and keep the window open for
    /// another, longer period) when writes were held, else `None` and the window is closed.
    fn end_window(&self, set: &str) -> Option<PodWriteEvents> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open.get_mut(set) {
            Some(held) if !held.is_empty() => Some(std::mem::take(held)),
            _ => {
                open.remove(set);
                None
            }
        }
    }
}

/// Publishes a reconcile's pod writes on the set, through the set's window.
pub(crate) fn publish_pod_writes<K: SetResource>(
    recorder: &Recorder,
    windows: &PodWriteWindows,
    set: &K,
    writes: PodWriteEvents,
) {
    if writes.is_empty() {
        return;
    }
    // By UID: a set deleted and made again under its name gets a window (and Events) of its own.
    let key = set.meta().uid.clone().unwrap_or_else(|| key_of(set));
    let Some(now) = windows.gather(&key, writes) else {
        return;
    };
    let regarding = set.object_ref(&());
    now.send(recorder, &regarding);
    let windows = windows.clone();
    let recorder = recorder.clone();
    tokio::spawn(async move {
        let mut window = POD_WRITE_WINDOW;
        loop {
            tokio::time::sleep(window).await;
            match windows.end_window(&key) {
                Some(held) => held.send(&recorder, &regarding),
                None => break,
            }
            window = next_window(window);
        }
    });
}

/// `Created pod: a`, `Deleted 3 pods (pod failed): a, b, c`, `Created 1000 pods: a, …, h and
/// 992 more`, `Error creating pod a: <error>`, `Error creating 2 pods (a, b): <error>`.
fn summary_note(write: PodWrite, detail: &str, pods: &[String]) -> String {
    let named = pods
        .iter()
        .take(NAMED_PODS)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let list = match pods.len().saturating_sub(NAMED_PODS) {
        0 => named,
        more => format!("{named} and {more} more"),
    };
    let verb = write.verb();
    let note = match (write.failed(), pods.len(), detail.is_empty()) {
        (true, 1, _) => format!("{verb} pod {list}: {detail}"),
        (true, n, _) => format!("{verb} {n} pods ({list}): {detail}"),
        (false, 1, true) => format!("{verb} pod: {list}"),
        (false, 1, false) => format!("{verb} pod: {list} ({detail})"),
        (false, n, true) => format!("{verb} {n} pods: {list}"),
        (false, n, false) => format!("{verb} {n} pods ({detail}): {list}"),
    };
    truncate(note, NOTE_LIMIT)
}

/// Cuts `text` to at most `limit` bytes on a character boundary, marking the cut.
fn truncate(mut text: String, limit: usize) -> String {
    const MARK: &str = " …";
    if text.len() <= limit {
        return text;
    }
    let mut end = limit - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
    text
}

/// Publishes the events the plan carries (placement, failures, rollout steps).
pub(crate) fn publish_plan_events<K: SetResource>(
    recorder: &Recorder,
    set: &K,
    events: &[everynode_core::PlanEvent],
) {
    for event in events {
        let type_ = if event.reason.is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(
            recorder,
            set,
            type_,
            event.reason.as_str(),
            event.reason.action(),
            event.message.clone(),
        );
    }
}

/// Publishes one Event on the set from a task of its own: a reconcile never waits for its
/// Events (upstream's recorder is asynchronous too). Failures are logged, never fatal; the
/// recorder folds repeats into a series.
pub(crate) fn publish<K: SetResource>(
    recorder: &Recorder,
    set: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    send(recorder, &set.object_ref(&()), type_, reason, action, note);
}

/// [`publish`], for a set known by its reference.
fn send(
    recorder: &Recorder,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note, NOTE_LIMIT)),
        action: action.to_owned(),
        secondary: None,
    };
    let recorder = recorder.clone();
    let regarding = regarding.clone();
    let reason = reason.to_owned();
    tokio::spawn(async move {
        if let Err(err) = recorder.publish(&event, &regarding).await {
            tracing::debug!(error = %err, reason, "publishing event failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p-{i:04}")).collect()
    }

    #[test]
    fn one_pod_keeps_upstream_wording() {
        assert_eq!(
            summary_note(PodWrite::Created, "", &pods(1)),
            "Created pod: p-0000"
        );
        assert_eq!(
            summary_note(PodWrite::Deleted, "pod failed", &pods(1)),
            "Deleted pod: p-0000 (pod failed)"
        );
        assert_eq!(
            summary_note(PodWrite::CreateFailed, "quota exceeded", &pods(1)),
            "Error creating pod p-0000: quota exceeded"
        );
    }

    #[test]
    fn many_pods_name_the_first_and_count_the_rest() {
        assert_eq!(
            summary_note(PodWrite::Created, "", &pods(3)),
            "Created 3 pods: p-0000, p-0001, p-0002"
        );
        assert_eq!(
            summary_note(PodWrite::Deleted, "rolling update", &pods(1000)),
            "Deleted 1000 pods (rolling update): p-0000, p-0001, p-0002, p-0003, p-0004, \
             p-0005, p-0006, p-0007 and 992 more"
        );
        assert_eq!(
            summary_note(PodWrite::DeleteFailed, "forbidden", &pods(2)),
            "Error deleting 2 pods (p-0000, p-0001): forbidden"
        );
    }

    #[test]
    fn notes_stay_within_the_api_limit_on_a_char_boundary() {
        let long = "é".repeat(2000);
        let note = summary_note(PodWrite::UpdateFailed, &long, &pods(1));
        assert!(note.len() <= NOTE_LIMIT, "{}", note.len());
        assert!(note.ends_with(" …"));
        assert_eq!(truncate("short".to_owned(), NOTE_LIMIT), "short");
    }

    #[test]
    fn writes_group_by_kind_and_detail() {
        let mut events = PodWriteEvents::default();
        events.record(PodWrite::Deleted, "b", "old".to_owned());
        events.record(PodWrite::Created, "z", String::new());
        events.record(PodWrite::Deleted, "a", "old".to_owned());
        events.record(PodWrite::Deleted, "c", "failed".to_owned());
        let groups: Vec<(PodWrite, &str, usize)> = events
            .groups
            .iter()
            .map(|((w, d), p)| (*w, d.as_str(), p.len()))
            .collect();
        assert_eq!(
            groups,
            [
                (PodWrite::Created, "", 1),
                (PodWrite::Deleted, "failed", 1),
                (PodWrite::Deleted, "old", 2)
            ]
        );
    }

    fn created(pod: &str) -> PodWriteEvents {
        let mut events = PodWriteEvents::default();
        events.record(PodWrite::Created, pod, String::new());
        events
    }

    fn pods_of(events: &PodWriteEvents) -> Vec<&str> {
        events
            .groups
            .values()
            .flatten()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn a_window_publishes_the_first_writes_at_once_and_gathers_the_rest() {
        let windows = PodWriteWindows::default();
        let first = windows.gather("ns/a", created("a-1"));
        assert_eq!(first.as_ref().map(pods_of), Some(vec!["a-1"]));
        assert!(windows.gather("ns/a", created("a-2")).is_none());
        assert!(windows.gather("ns/a", created("a-3")).is_none());
        // Another set has a window of its own.
        assert!(windows.gather("ns/b", created("b-1")).is_some());

        let held = windows.end_window("ns/a");
        assert_eq!(held.as_ref().map(pods_of), Some(vec!["a-2", "a-3"]));
        // The window stays open for another period after publishing held writes...
        assert!(windows.gather("ns/a", created("a-4")).is_none());
        assert_eq!(
            windows.end_window("ns/a").as_ref().map(pods_of),
            Some(vec!["a-4"])
        );
        // ...and closes after a period without writes, so the next write goes out at once.
        assert!(windows.end_window("ns/a").is_none());
        assert!(windows.gather("ns/a", created("a-5")).is_some());
    }

    #[test]
    fn windows_of_a_set_that_keeps_writing_double_up_to_a_minute() {
        let mut window = POD_WRITE_WINDOW;
        let mut ends = Vec::new();
        let mut at = Duration::ZERO;
        for _ in 0..6 {
            at += window;
            ends.push(at.as_secs());
            window = next_window(window);
        }
        assert_eq!(ends, [5, 15, 35, 75, 135, 195]);
    }
}
