//! `everynode migrate daemonset/NAME [--undo] [--dry-run]`: turn a built-in apps/v1 DaemonSet
//! into an everynode one — or back — without restarting a pod. The new set is created frozen,
//! the old one deleted with `--cascade=orphan`, and the new set's controller adopts the running
//! pods and revisions (the revision hashes are the same, so nothing looks out of date).

pub mod convert;
pub mod plan;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use convert::{MIGRATION_ANNOTATION, built_in_from, everynode_from, record_name};
use plan::{Direction, EverynodeSet, Observed, Owner, Step, all_steps, next_step};

/// The key of the apps/v1 manifest in the undo record.
const RECORD_KEY: &str = "daemonset.json";

/// One migration: the set, where it goes, how long a wait may take.
pub struct Migration {
    /// The cluster.
    pub client: Client,
    /// The set's namespace.
    pub namespace: String,
    /// The set's name (both kinds).
    pub name: String,
    /// apps/v1 → everynode, or back.
    pub direction: Direction,
    /// The longest wait for a deletion or an adoption.
    pub timeout: Duration,
}

impl Migration {
    fn built_in_api(&self) -> Api<apps::DaemonSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn everynode_api(&self) -> Api<everynode_api::DaemonSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn records(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// `--dry-run`: the steps from where things stand, one line each.
    pub async fn dry_run(&self) -> anyhow::Result<String> {
        let (observed, _) = self.observe().await?;
        let steps = all_steps(self.direction, &observed).map_err(|why| self.refused(&why))?;
        if steps.is_empty() {
            return Ok(format!("{}: nothing to do", self.subject()));
        }
        let mut out = format!("{} would:\n", self.subject());
        for (number, step) in steps.iter().enumerate() {
            out.push_str(&format!("{}. {}\n", number + 1, self.describe(*step)));
        }
        Ok(out)
    }

    /// Runs the steps, printing each when done; checks that no pod was replaced.
    pub async fn run(&self) -> anyhow::Result<()> {
        let (mut observed, before) = self.observe().await?;
        println!("{}: {} pod(s)", self.subject(), before.len());
        let mut number = 0;
        loop {
            let step = next_step(self.direction, &observed).map_err(|why| self.refused(&why))?;
            if step == Step::Done {
                break;
            }
            self.take(step).await?;
            number += 1;
            println!("{number}. {}", self.describe(step));
            observed = self.observe().await?.0;
        }
        let (_, after) = self.observe().await?;
        let replaced: Vec<&String> = before.difference(&after).collect();
        if replaced.is_empty() {
            println!(
                "done: no pod was restarted ({} pod(s), the same UIDs)",
                after.len()
            );
            Ok(())
        } else {
            bail!("pods changed during the migration: {replaced:?} are gone")
        }
    }

    fn subject(&self) -> String {
        let (from, to) = match self.direction {
            Direction::Forward => ("daemonset.apps", "daemonset.everynode.dev"),
            Direction::Undo => ("daemonset.everynode.dev", "daemonset.apps"),
        };
        format!("{from}/{} in {} to {to}", self.name, self.namespace)
    }

    fn refused(&self, why: &str) -> anyhow::Error {
        anyhow::anyhow!("cannot migrate {}/{}: {why}", self.namespace, self.name)
    }

    fn describe(&self, step: Step) -> String {
        let name = &self.name;
        match step {
            Step::CreateEverynode => format!(
                "create daemonset.everynode.dev/{name} from the apps/v1 set, frozen (no pod is \
                 changed until the migration ends)"
            ),
            Step::OrphanBuiltIn => format!(
                "delete daemonset.apps/{name} with --cascade=orphan (its pods and revisions keep running)"
            ),
            Step::AwaitAdoption(Owner::Everynode) => {
                format!("daemonset.everynode.dev/{name} adopts the pods and revisions")
            }
            Step::AwaitAdoption(Owner::BuiltIn) => {
                format!("daemonset.apps/{name} adopts the pods and revisions")
            }
            Step::Release => format!("unfreeze daemonset.everynode.dev/{name}"),
            Step::SaveRecord => format!(
                "freeze daemonset.everynode.dev/{name} and save the apps/v1 manifest in configmap/{}",
                record_name(name)
            ),
            Step::OrphanEverynode => format!(
                "delete daemonset.everynode.dev/{name} with --cascade=orphan (its pods and revisions keep running)"
            ),
            Step::CreateBuiltIn => format!("create daemonset.apps/{name} from the saved manifest"),
            Step::RemoveRecord => format!("delete configmap/{}", record_name(name)),
            Step::DeleteUnusedEverynode => format!(
                "delete daemonset.everynode.dev/{name}, which the stopped migration created and \
                 which owns no pod"
            ),
            Step::Done => "nothing".to_owned(),
        }
    }

    /// What the cluster shows, and the UIDs of the live pods of the set's selector.
    async fn observe(&self) -> anyhow::Result<(Observed, BTreeSet<String>)> {
        let built_in = get_opt(&self.built_in_api(), &self.name).await?;
        let everynode = get_opt(&self.everynode_api(), &self.name).await?;
        let record = get_opt(&self.records(), &record_name(&self.name)).await?;
        let selector = match (&built_in, &everynode) {
            (Some(set), _) => set.spec.as_ref().map(|s| s.selector.clone()),
            (None, Some(set)) => Some(set.spec.selector.clone()),
            (None, None) => None,
        };
        let pods = match selector {
            Some(selector) => self.pods(&selector).await?,
            None => Vec::new(),
        };
        let uid_of = |meta: &kube::core::ObjectMeta| meta.uid.clone().unwrap_or_default();
        let controllers: BTreeSet<String> = pods
            .iter()
            .map(|p| {
                p.owner_references()
                    .iter()
                    .find(|r| r.controller == Some(true))
                    .map(|r| r.uid.clone())
                    .unwrap_or_default()
            })
            .collect();
        let owned_by = |uid: String| controllers.iter().all(|c| *c == uid);
        let pods_owner = if everynode
            .as_ref()
            .is_some_and(|e| owned_by(uid_of(e.meta())))
        {
            Some(Owner::Everynode)
        } else if built_in
            .as_ref()
            .is_some_and(|b| owned_by(uid_of(b.meta())))
        {
            Some(Owner::BuiltIn)
        } else {
            None
        };
        let observed = Observed {
            built_in: built_in.is_some(),
            everynode: everynode.as_ref().map(|e| EverynodeSet {
                migrating: e.annotations().contains_key(MIGRATION_ANNOTATION),
            }),
            record: record.is_some(),
            pods_owner,
        };
        let uids = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        Ok((observed, uids))
    }

    /// Live pods of `selector`.
    async fn pods(
        &self,
        selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> anyhow::Result<Vec<Pod>> {
        let labels = convert::selector_string(selector)?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = api
            .list(&ListParams::default().labels(&labels))
            .await
            .with_context(|| format!("listing the pods of {labels} in {}", self.namespace))?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect())
    }

    async fn take(&self, step: Step) -> anyhow::Result<()> {
        match step {
            Step::CreateEverynode => {
                let built_in = self.built_in_api().get(&self.name).await?;
                let set = everynode_from(&built_in)?;
                match self
                    .everynode_api()
                    .create(&PostParams::default(), &set)
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => bail!(
                        "creating the everynode DaemonSet: {} (is the everynode.dev CRD \
                         installed? Install the chart, or `everynode crd | kubectl apply \
                         --server-side -f -`, and run the everynode controller)",
                        status.message
                    ),
                    Err(err) => return Err(err).context("creating the everynode DaemonSet"),
                }
            }
            Step::OrphanBuiltIn => {
                orphan_delete(&self.built_in_api(), &self.name).await?;
                self.wait("the apps/v1 set to be gone", || async {
                    Ok(get_opt(&self.built_in_api(), &self.name).await?.is_none())
                })
                .await?;
            }
            Step::AwaitAdoption(owner) => {
                self.wait(
                    "the pods to be adopted (is the controller running?)",
                    || async { Ok(self.observe().await?.0.pods_owner == Some(owner)) },
                )
                .await?;
            }
            Step::Release => {
                let patch = json!({
                    "metadata": {"annotations": {MIGRATION_ANNOTATION: null}},
                    "spec": {"frozen": null}
                });
                self.everynode_api()
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .context("unfreezing the everynode DaemonSet")?;
            }
            Step::SaveRecord => self.save_record().await?,
            Step::OrphanEverynode => {
                orphan_delete(&self.everynode_api(), &self.name).await?;
                self.wait("the everynode set to be gone", || async {
                    Ok(get_opt(&self.everynode_api(), &self.name).await?.is_none())
                })
                .await?;
            }
            Step::CreateBuiltIn => {
                let record = self.records().get(&record_name(&self.name)).await?;
                let manifest = record
                    .data
                    .as_ref()
                    .and_then(|d| d.get(RECORD_KEY))
                    .with_context(|| {
                        format!("configmap/{} has no {RECORD_KEY}", record.name_any())
                    })?;
                let set: apps::DaemonSet =
                    serde_json::from_str(manifest).context("reading the saved apps/v1 manifest")?;
                self.built_in_api()
                    .create(&PostParams::default(), &set)
                    .await
                    .context("creating the apps/v1 DaemonSet")?;
            }
            Step::RemoveRecord => {
                self.records()
                    .delete(&record_name(&self.name), &DeleteParams::default())
                    .await
                    .context("deleting the undo record")?;
            }
            Step::DeleteUnusedEverynode => {
                orphan_delete(&self.everynode_api(), &self.name).await?;
            }
            Step::Done => {}
        }
        Ok(())
    }

    /// Checks that the apps/v1 set can be created (server-side dry run), freezes the everynode
    /// set and saves the manifest.
    async fn save_record(&self) -> anyhow::Result<()> {
        let everynode = self.everynode_api().get(&self.name).await?;
        let (built_in, dropped) = built_in_from(&everynode)?;
        if !dropped.is_empty() {
            println!("   everynode-only fields dropped: {}", dropped.join(", "));
        }
        self.built_in_api()
            .create(
                &PostParams {
                    dry_run: true,
                    ..PostParams::default()
                },
                &built_in,
            )
            .await
            .context("the apps/v1 set would be refused (server-side dry run)")?;
        let freeze = json!({"spec": {"frozen": true}});
        self.everynode_api()
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(freeze))
            .await
            .context("freezing the everynode DaemonSet")?;
        let mut record = ConfigMap::default();
        record.metadata.name = Some(record_name(&self.name));
        record.metadata.namespace = Some(self.namespace.clone());
        record.data = Some([(RECORD_KEY.to_owned(), serde_json::to_string(&built_in)?)].into());
        self.records()
            .create(&PostParams::default(), &record)
            .await
            .context("saving the undo record")?;
        Ok(())
    }

    /// Polls `done` every half second until it holds or the timeout passes.
    async fn wait<F, Fut>(&self, what: &str, done: F) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        let started = Instant::now();
        while !done().await? {
            if started.elapsed() >= self.timeout {
                bail!(
                    "timed out after {:.0?} waiting for {what}; run the command again to resume, \
                     or with --undo to go back",
                    self.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }
}

/// The set's name from `daemonset/NAME`, `ds/NAME`, `daemonset.apps/NAME` or `NAME`.
pub fn set_name(arg: &str) -> Result<String, String> {
    let name = match arg.split_once('/') {
        None => arg,
        Some((
            "daemonset" | "daemonsets" | "ds" | "daemonset.apps" | "daemonset.everynode.dev",
            name,
        )) => name,
        Some((kind, _)) => {
            return Err(format!(
                "{kind:?} is not a DaemonSet: use daemonset/NAME (or just NAME)"
            ));
        }
    };
    if name.is_empty() {
        return Err("the DaemonSet's name is empty: use daemonset/NAME".to_owned());
    }
    Ok(name.to_owned())
}

async fn get_opt<K>(api: &Api<K>, name: &str) -> anyhow::Result<Option<K>>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(found) => Ok(found),
        // No everynode CRD: no everynode set.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {name}")),
    }
}

async fn orphan_delete<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err).with_context(|| format!("deleting {name} with --cascade=orphan")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_is_named_as_kubectl_names_it() {
        for arg in [
            "agent",
            "daemonset/agent",
            "ds/agent",
            "daemonset.apps/agent",
        ] {
            assert_eq!(set_name(arg).as_deref(), Ok("agent"), "{arg}");
        }
        assert!(
            set_name("deployment/agent")
                .unwrap_err()
                .contains("not a DaemonSet")
        );
        assert!(set_name("ds/").is_err());
    }
}
