//! Reconcile requests from the watches: dropped while this replica is a standby, delivered to
//! the controller once it leads; and the count of sets waiting for a reconcile (queue depth).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use futures::Stream;
use futures::channel::mpsc;
use kube::runtime::reflector::ObjectRef;
use prometheus_client::metrics::gauge::Gauge;

use crate::key::set_key;
use crate::target::SetResource;

/// Sets that were asked to reconcile and have not started yet, exported as a gauge.
#[derive(Debug)]
pub struct QueueDepth {
    waiting: Mutex<HashSet<String>>,
    gauge: Gauge,
}

impl QueueDepth {
    /// Tracks into `gauge`.
    pub fn new(gauge: Gauge) -> Self {
        Self {
            waiting: Mutex::default(),
            gauge,
        }
    }

    /// Set `key` (`namespace/name`) was asked to reconcile.
    pub fn queued(&self, key: String) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.insert(key);
        self.gauge.set(gauge_value(waiting.len()));
    }

    /// Set `key` started to reconcile (or is gone).
    pub fn started(&self, key: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.remove(key);
        self.gauge.set(gauge_value(waiting.len()));
    }

    /// Sets waiting now.
    pub fn len(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no set is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn gauge_value(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// The gate between the watches (which run on every replica) and the controller (which runs on
/// the leader only).
#[derive(Debug)]
pub struct Triggers<K: SetResource> {
    sender: OnceLock<mpsc::UnboundedSender<ObjectRef<K>>>,
    queue: Arc<QueueDepth>,
}

impl<K: SetResource> Triggers<K> {
    /// A closed gate counting into `queue`.
    pub fn new(queue: Arc<QueueDepth>) -> Self {
        Self {
            sender: OnceLock::new(),
            queue,
        }
    }

    /// Asks for a reconcile of `set`; dropped while the gate is closed.
    pub fn send(&self, set: ObjectRef<K>) {
        if let Some(sender) = self.sender.get() {
            let key = set_key(set.namespace.as_deref().unwrap_or_default(), &set.name);
            if sender.unbounded_send(set).is_ok() {
                self.queue.queued(key);
            }
        }
    }

    /// Opens the gate and returns the requests from now on. A gate opens once: a second call
    /// gets an empty stream.
    pub fn open(&self) -> impl Stream<Item = ObjectRef<K>> + Send + 'static {
        let (sender, receiver) = mpsc::unbounded();
        if self.sender.set(sender).is_err() {
            tracing::error!("the reconcile gate was opened twice");
        }
        receiver
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::DaemonSet;

    fn queue() -> (Arc<QueueDepth>, Gauge) {
        let gauge = Gauge::default();
        (Arc::new(QueueDepth::new(gauge.clone())), gauge)
    }

    #[tokio::test]
    async fn a_closed_gate_drops_requests_and_an_open_one_delivers_them() {
        let (queue, gauge) = queue();
        let triggers = Triggers::<DaemonSet>::new(queue.clone());
        triggers.send(ObjectRef::new("before").within("ns"));
        assert!(queue.is_empty());

        let mut requests = triggers.open();
        triggers.send(ObjectRef::new("a").within("ns"));
        triggers.send(ObjectRef::new("a").within("ns"));
        triggers.send(ObjectRef::new("b").within("ns"));
        assert_eq!(gauge.get(), 2, "two distinct sets wait");

        let first = requests.next().await.unwrap();
        assert_eq!(first.name, "a");
        queue.started("ns/a");
        assert_eq!(gauge.get(), 1);
        queue.started("ns/b");
        assert_eq!(gauge.get(), 0);
    }
}
