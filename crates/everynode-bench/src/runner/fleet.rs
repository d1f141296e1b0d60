//! The many-sets suite on one cluster: the nodes are put in slices, then each controller in
//! turn runs F1 (create every set), F2 (a new template on every set), F3 (nodes move slice one
//! after another) and F4 (nodes join at once) in its own namespace.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use everynode_cluster::Cluster;
use everynode_cluster::nodes as knodes;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};

use super::{Bench, MeasuredProcess, POLL, PodWatch, STALE_AFTER, Staleness, set_resource};
use crate::error::{Error, Result};
use crate::fleet::{self, SLICE_LABEL};
use crate::report::{ControllerId, ControllerRun, FleetResult, Scenario, ScenarioResult};
use crate::step::{StepMeter, StepOutcome, Who};
use crate::workload::{self, REV_LABEL};

/// Options of the many-sets suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetOptions {
    /// Sets per controller.
    pub sets: usize,
    /// Nodes moved to the next slice in F3, one after another.
    pub relabels: usize,
    /// Nodes joining at once in F4.
    pub joins: usize,
    /// How the nodes are sliced and how many slices each set selects.
    pub slicing: fleet::Slicing,
}

/// How often the fleet's convergence is checked (a pass over every pod).
const FLEET_POLL: Duration = Duration::from_millis(250);

impl Bench<'_> {
    /// The many-sets suite on this cluster: slices, then every controller through F1–F4.
    pub(super) async fn fleet_run(
        &mut self,
        cluster: &mut Cluster,
        opts: FleetOptions,
    ) -> Result<(u64, Vec<ControllerRun>)> {
        self.put_nodes_in_slices(opts.slicing).await?;
        let mut runs = Vec::new();
        let mut pods = 0;
        for &c in &self.opts.controllers.clone() {
            tracing::info!("controller {} ({} sets)", c.label(), opts.sets);
            let (created, run) = self.fleet_controller_run(cluster, c, opts).await?;
            pods = created;
            runs.push(run);
        }
        Ok((pods, runs))
    }

    /// Labels every current node with its slice (round robin), not measured.
    async fn put_nodes_in_slices(&mut self, slicing: fleet::Slicing) -> Result<()> {
        let api: Api<Node> = Api::all(self.admin.clone());
        self.slices = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), slicing.slice_of_node(i)))
            .collect();
        futures::stream::iter(self.slices.clone())
            .map(|(node, slice)| {
                let api = api.clone();
                async move { label_slice(&api, &node, slice).await }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn fleet_controller_run(
        &mut self,
        cluster: &mut Cluster,
        c: ControllerId,
        opts: FleetOptions,
    ) -> Result<(u64, ControllerRun)> {
        let ns = format!("fleet-{}", c.key());
        self.create_namespace(&ns).await?;
        let t = Instant::now();
        let measured = self.start_measured(cluster, c).await?;
        let startup_seconds = t.elapsed().as_secs_f64();
        let watch = PodWatch::start(&self.admin, &ns).await;
        let result = self.fleet_steps(&ns, c, &measured, &watch, opts).await;
        cluster.stop_extra(&measured.name).await?;
        let steps = result?;
        self.fleet_clean_up(&ns, c, &watch).await?;
        drop(watch);
        self.delete_namespace(&ns).await?;
        let created = steps.first().map_or(0, |s| s.pods);
        Ok((
            created,
            ControllerRun {
                controller: c,
                client_limits: self.client_limits(c),
                startup_seconds,
                scenarios: steps,
            },
        ))
    }

    /// F1–F4 of the measured controller `m` in `ns`.
    async fn fleet_steps(
        &mut self,
        ns: &str,
        c: ControllerId,
        m: &MeasuredProcess,
        watch: &PodWatch,
        opts: FleetOptions,
    ) -> Result<Vec<ScenarioResult>> {
        let (api_version, ar) = set_resource(c);
        let sets: Api<DynamicObject> = Api::namespaced_with(self.admin.clone(), ns, &ar);
        let meter = self.step_meter(Who::measured(m.pid));
        let fleet = Fleet {
            sets: &sets,
            watch,
            count: opts.sets,
            slicing: opts.slicing,
        };
        let mut out = Vec::new();
        tokio::time::sleep(crate::step::SETTLE).await;

        out.push(
            meter
                .measure(Scenario::F1, async |started| {
                    futures::stream::iter(0..opts.sets)
                        .map(|j| create_set(&fleet, api_version, ns, j))
                        .buffer_unordered(8)
                        .try_collect::<Vec<()>>()
                        .await?;
                    let (secs, pods) = self.wait_fleet(&fleet, "1", "F1", started).await?;
                    Ok(StepOutcome::converged(secs, pods))
                })
                .await?,
        );
        out.push(
            meter
                .measure(Scenario::F2, async |started| {
                    futures::stream::iter(0..opts.sets)
                        .map(|j| roll_set(&sets, j, "2"))
                        .buffer_unordered(8)
                        .try_collect::<Vec<()>>()
                        .await?;
                    let (secs, pods) = self.wait_fleet(&fleet, "2", "F2", started).await?;
                    Ok(StepOutcome::converged(secs, pods))
                })
                .await?,
        );
        out.push(self.relabel_step(&meter, &fleet, opts.relabels).await?);
        out.push(self.join_step(&meter, &fleet, opts.joins).await?);
        Ok(out)
    }

    /// F3: `moves` nodes, one after another, move to the next slice; each waits for every set.
    async fn relabel_step(
        &mut self,
        meter: &StepMeter<'_>,
        fleet: &Fleet<'_>,
        moves: usize,
    ) -> Result<ScenarioResult> {
        let api: Api<Node> = Api::all(self.admin.clone());
        meter
            .measure(Scenario::F3, async |started| {
                let mut moved_pods = 0;
                for i in 0..moves {
                    let Some((node, slice)) = self.nth_node_to_move(i) else {
                        break;
                    };
                    let to = fleet.slicing.next(slice);
                    label_slice(&api, &node, to).await?;
                    self.slices.insert(node, to);
                    moved_pods += fleet.slicing.sets_moved_by(slice, to, fleet.count).len();
                    self.wait_fleet(fleet, "2", "F3", Instant::now()).await?;
                }
                Ok(StepOutcome::converged(
                    started.elapsed().as_secs_f64(),
                    moved_pods,
                ))
            })
            .await
    }

    /// The node the `i`-th move of F3 takes: spread over the node list.
    fn nth_node_to_move(&self, i: usize) -> Option<(String, usize)> {
        let step = (self.slices.len() / 10).max(1);
        self.slices
            .iter()
            .nth((i * step + i) % self.slices.len().max(1))
            .map(|(n, s)| (n.clone(), *s))
    }

    /// F4: `k` nodes join at once, spread over the slices.
    async fn join_step(
        &mut self,
        meter: &StepMeter<'_>,
        fleet: &Fleet<'_>,
        k: usize,
    ) -> Result<ScenarioResult> {
        let api: Api<Node> = Api::all(self.admin.clone());
        meter
            .measure(Scenario::F4, async |started| {
                let joining: Vec<(String, usize)> = (0..k)
                    .map(|i| {
                        (
                            format!("kwok-fleet-{:05}", self.joined + i),
                            fleet.slicing.slice_of_node(i),
                        )
                    })
                    .collect();
                self.joined += k;
                futures::stream::iter(joining.clone())
                    .map(|(name, slice)| {
                        let api = api.clone();
                        async move { create_node(&api, &name, slice).await }
                    })
                    .buffer_unordered(8)
                    .try_collect::<Vec<()>>()
                    .await?;
                let pods: usize = joining
                    .iter()
                    .map(|(_, s)| fleet.slicing.sets_selecting(*s, fleet.count))
                    .sum();
                self.slices.extend(joining);
                let (secs, _) = self.wait_fleet(fleet, "2", "F4", started).await?;
                Ok(StepOutcome::converged(secs, pods))
            })
            .await
    }

    /// Waits until every set runs one ready pod at `rev` on each of its nodes, nothing else,
    /// and every set's status says so. Returns the seconds since `started` and the pods wanted.
    async fn wait_fleet(
        &self,
        fleet: &Fleet<'_>,
        rev: &str,
        what: &str,
        started: Instant,
    ) -> Result<(f64, usize)> {
        let timeout = self.timeout()
            + Duration::from_millis(20 * fleet.count as u64 * self.slices.len() as u64 / 10);
        let mut staleness = Staleness::default();
        loop {
            let progress = fleet
                .watch
                .with(|b| {
                    fleet
                        .slicing
                        .fleet_progress(b.pods.values(), &self.slices, fleet.count, rev)
                })
                .ok_or_else(|| Error::Other("pod book poisoned".into()))?;
            if progress.done() && self.fleet_status_converged(fleet).await? {
                return Ok((started.elapsed().as_secs_f64(), progress.wanted_pods()));
            }
            if staleness.is_stale(&progress) {
                tracing::warn!(
                    "{what}: no change for {STALE_AFTER:?} ({progress}); re-listing pods"
                );
                fleet
                    .watch
                    .relist(&self.admin, &fleet.watch.namespace)
                    .await?;
            }
            if started.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    seconds: timeout.as_secs(),
                    detail: progress.to_string(),
                });
            }
            tokio::time::sleep(FLEET_POLL.max(POLL)).await;
        }
    }

    /// Whether every set's status reports its nodes converged.
    async fn fleet_status_converged(&self, fleet: &Fleet<'_>) -> Result<bool> {
        let list = fleet
            .sets
            .list(&ListParams::default())
            .await
            .map_err(Error::kube("list the sets"))?;
        let wanted: BTreeMap<String, usize> = (0..fleet.count)
            .map(|j| {
                (
                    fleet::set_name(j),
                    fleet.slicing.nodes_of(j, &self.slices).len(),
                )
            })
            .collect();
        Ok(list.items.len() == fleet.count
            && list.items.iter().all(|set| {
                let name = set.metadata.name.clone().unwrap_or_default();
                let value = serde_json::to_value(set).unwrap_or_default();
                wanted
                    .get(&name)
                    .is_some_and(|&n| workload::status_converged(&value, n))
            }))
    }

    /// After a controller's run (stopped): removes its pods (one request each) and sets, not
    /// measured.
    async fn fleet_clean_up(&self, ns: &str, c: ControllerId, watch: &PodWatch) -> Result<()> {
        let (_, ar) = set_resource(c);
        let set_api: Api<DynamicObject> = Api::namespaced_with(self.admin.clone(), ns, &ar);
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), ns);
        super::delete_watched_pods(&pods, watch).await?;
        set_api
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .map_err(Error::kube("delete the fleet's sets"))?;
        self.wait_no_pods(watch, "fleet clean-up", Instant::now())
            .await
            .map(|_| ())
    }
}

/// The sets of one controller's fleet and the harness's view of their pods.
struct Fleet<'a> {
    sets: &'a Api<DynamicObject>,
    watch: &'a PodWatch,
    count: usize,
    slicing: fleet::Slicing,
}

async fn label_slice(api: &Api<Node>, node: &str, slice: usize) -> Result<()> {
    let patch =
        serde_json::json!({"metadata": {"labels": {SLICE_LABEL: fleet::slice_value(slice)}}});
    api.patch(node, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(Error::kube(format!("label node {node}")))?;
    Ok(())
}

async fn create_node(api: &Api<Node>, name: &str, slice: usize) -> Result<()> {
    let labels = BTreeMap::from([
        (knodes::CLUSTER_NODE_LABEL.to_owned(), "true".to_owned()),
        (SLICE_LABEL.to_owned(), fleet::slice_value(slice)),
    ]);
    let node = knodes::worker(name, knodes::zone_for(slice), &labels);
    api.create(&PostParams::default(), &node)
        .await
        .map_err(Error::kube(format!("create node {name}")))?;
    Ok(())
}

async fn create_set(fleet: &Fleet<'_>, api_version: &str, ns: &str, j: usize) -> Result<()> {
    let object = fleet.slicing.set_object(api_version, ns, j, "1");
    let obj: DynamicObject =
        serde_json::from_value(object).map_err(|e| Error::Other(e.to_string()))?;
    fleet
        .sets
        .create(&PostParams::default(), &obj)
        .await
        .map_err(Error::kube(format!("create {}", fleet::set_name(j))))?;
    Ok(())
}

async fn roll_set(sets: &Api<DynamicObject>, j: usize, rev: &str) -> Result<()> {
    let patch =
        serde_json::json!({"spec": {"template": {"metadata": {"labels": {REV_LABEL: rev}}}}});
    sets.patch(
        &fleet::set_name(j),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map_err(Error::kube(format!("update {}", fleet::set_name(j))))?;
    Ok(())
}

/// A [`FleetResult`] from a run's parts.
pub(super) fn result(
    (nodes, mode): (usize, crate::report::ClusterMode),
    opts: FleetOptions,
    cluster_up_seconds: f64,
    (pods, runs): (u64, Vec<ControllerRun>),
) -> FleetResult {
    FleetResult {
        nodes,
        sets: opts.sets,
        pods,
        relabels: opts.relabels as u64,
        joins: opts.joins as u64,
        slicing: opts.slicing,
        mode,
        repeat: 0,
        cluster_up_seconds,
        runs,
    }
}
