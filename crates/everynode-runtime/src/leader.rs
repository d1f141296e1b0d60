//! Leader election on a `coordination.k8s.io` Lease, with client-go's safety rules:
//!
//! - a standby takes the Lease only after it saw the record unchanged for a whole lease
//!   duration, measured on its own monotonic clock (never by comparing timestamps written by
//!   another host, so clock skew cannot shorten it);
//! - the leader renews every retry period and steps down when no renewal succeeded within the
//!   renew deadline, which is shorter than the lease: its writes stop before a standby may start;
//! - every write of the controller goes through a [`WriteGate`] that is open only within the
//!   renew deadline of the last successful renewal, so a leader that was frozen (SIGSTOP, a long
//!   GC pause, a cut network) cannot write after waking, even before it notices the loss.

use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// Timing of the election, client-go's defaults scaled to the lease duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a record must stay unchanged before a standby takes the Lease.
    pub lease_duration: Duration,
    /// The leader steps down when no renewal succeeded for this long (shorter than the lease).
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseTiming {
    /// client-go's 15 s / 10 s / 2 s, for any lease duration: the renew deadline is two thirds
    /// of it, the retry period a seventh (at least 200 ms).
    pub fn for_lease(lease_duration: Duration) -> Self {
        Self {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration / 7).max(Duration::from_millis(200)),
        }
    }
}

/// Open while this replica leads and its last successful renewal is within the renew deadline.
#[derive(Debug)]
pub struct WriteGate {
    renewed_at: Mutex<Option<Instant>>,
    renew_deadline: Duration,
}

impl WriteGate {
    /// A closed gate for a replica that does not lead yet.
    pub fn closed(renew_deadline: Duration) -> Arc<Self> {
        Arc::new(Self {
            renewed_at: Mutex::new(None),
            renew_deadline,
        })
    }

    /// Whether the controller may write now.
    pub fn is_open(&self) -> bool {
        self.lock()
            .is_some_and(|at| at.elapsed() < self.renew_deadline)
    }

    /// Records a renewal whose request was sent at `sent`.
    pub(crate) fn renewed(&self, sent: Instant) {
        *self.lock() = Some(sent);
    }

    /// Closes the gate for good (the Lease is lost or released).
    pub fn close(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.renewed_at.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A client layer that fails writes (anything but GET) at once while `gate` is closed; reads
/// and watches pass.
#[derive(Clone)]
pub struct GateLayer {
    /// The gate.
    pub gate: Arc<WriteGate>,
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            gate: self.gate.clone(),
        }
    }
}

/// See [`GateLayer`].
#[derive(Clone)]
pub struct GateService<S> {
    inner: S,
    gate: Arc<WriteGate>,
}

/// The error of a write refused by the gate.
#[derive(Debug, thiserror::Error)]
#[error("not writing: this replica does not hold the leader Lease (or could not renew it in time)")]
pub struct NotLeader;

impl<S, B> tower::Service<http::Request<B>> for GateService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.method() != http::Method::GET && !self.gate.is_open() {
            return Box::pin(std::future::ready(Err(NotLeader.into())));
        }
        let response = self.inner.call(request);
        Box::pin(async move { response.await.map_err(Into::into) })
    }
}

/// One replica's view of the Lease.
pub struct Elector {
    leases: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    gate: Arc<WriteGate>,
    /// The record last seen and when (this replica's clock) it was first seen.
    observed: Option<(Option<LeaseSpec>, Instant)>,
    leading: bool,
}

impl Elector {
    /// An elector for the Lease `namespace/name` (with an ungated client: the Lease is written
    /// to keep the gate open).
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
        gate: Arc<WriteGate>,
    ) -> Self {
        Self {
            leases: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
            gate,
            observed: None,
            leading: false,
        }
    }

    /// Tries to acquire the Lease until it is held; `leading` is sent `true` then. Keeps renewing
    /// and returns once leadership is lost (the gate is closed by then).
    pub async fn run(mut self, leading: tokio::sync::watch::Sender<bool>) {
        loop {
            // Check the deadline before anything else: a replica that was frozen must not even
            // try to renew after it passed.
            if self.leading && !self.gate.is_open() {
                tracing::error!(identity = %self.identity, "no renewal of the leader Lease within the renew deadline; stepping down");
                break;
            }
            let sent = Instant::now();
            let attempt =
                tokio::time::timeout(self.timing.renew_deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => {
                    self.gate.renewed(sent);
                    if !self.leading {
                        self.leading = true;
                        tracing::info!(identity = %self.identity, "acquired the leader Lease");
                        let _ = leading.send(true);
                    }
                }
                Ok(Ok(false)) if self.leading => {
                    tracing::error!(identity = %self.identity, "the leader Lease was taken by another replica");
                    break;
                }
                Ok(Ok(false)) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "acquiring or renewing the leader Lease failed")
                }
                Err(_) => tracing::warn!("acquiring or renewing the leader Lease timed out"),
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
        self.gate.close();
        let _ = leading.send(false);
    }

    /// Gives the Lease up (an empty holder), so a standby takes over at once. Only while the
    /// gate is still open: a replica that lost it has nothing to release.
    pub async fn release(leases: &Api<Lease>, name: &str, identity: &str, gate: &WriteGate) {
        if !gate.is_open() {
            return;
        }
        gate.close();
        let patch =
            serde_json::json!({"spec": {"holderIdentity": null, "leaseDurationSeconds": 1}});
        match leases.get(name).await {
            Ok(lease) if holder(&lease) == Some(identity) => {
                if let Err(err) = leases
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::warn!(error = %err, "releasing the leader Lease failed");
                }
            }
            _ => {}
        }
    }

    /// The Lease API this elector writes.
    pub fn leases(&self) -> Api<Lease> {
        self.leases.clone()
    }

    /// One attempt, as client-go's `tryAcquireOrRenew`: `Ok(true)` when this replica holds the
    /// Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let duration = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(lease) = self.leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(err) => Err(err),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| seen.as_ref() != Some(&spec))
        {
            self.observed = Some((Some(spec.clone()), Instant::now()));
        }
        let held_by_other = spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty() && h != self.identity);
        let lease_duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.timing.lease_duration, Duration::from_secs);
        let unchanged_for = self
            .observed
            .as_ref()
            .map_or(Duration::ZERO, |(_, at)| at.elapsed());
        if held_by_other && unchanged_for < lease_duration {
            return Ok(false);
        }
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let transitions = spec.lease_transitions.unwrap_or(0);
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": lease.metadata.resource_version},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": duration,
                "acquireTime": if ours { spec.acquire_time.clone() } else { Some(now.clone()) },
                "renewTime": now,
                "leaseTransitions": if ours { transitions } else { transitions + 1 },
            }
        });
        match self
            .leases
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => {
                self.observed = Some((updated.spec, Instant::now()));
                Ok(true)
            }
            // Someone else wrote it meanwhile.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_follows_client_go_ratios() {
        let t = LeaseTiming::for_lease(Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period.as_secs(), 2);
        assert!(t.renew_deadline < t.lease_duration);
    }

    #[test]
    fn the_gate_closes_at_the_renew_deadline() {
        let gate = WriteGate::closed(Duration::from_millis(50));
        assert!(!gate.is_open());
        gate.renewed(Instant::now());
        assert!(gate.is_open());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!gate.is_open());
        gate.renewed(Instant::now());
        gate.close();
        assert!(!gate.is_open());
    }
}
