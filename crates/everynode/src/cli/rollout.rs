//! `everynode rollout status | history | undo | restart` for both kinds of set, and
//! `pause | resume | freeze | unfreeze` for everynode sets.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use everynode_api::UpdateStrategyType;
use everynode_api::labels::{CHANGE_CAUSE_ANNOTATION, CONTROLLER_REVISION_HASH};
use everynode_core::{SetView, Timestamp};
use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{ListParams, Patch};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use super::sets::{self, FoundSet, SetKind};
use super::style::Style;

/// Annotation `kubectl rollout restart` sets; the same one, so both tools agree.
const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Every pod is updated and available for the current generation.
    pub complete: bool,
    /// A kubectl-style sentence.
    pub message: String,
    /// `(updated, available, desired)` when the controller has seen the current generation.
    pub counts: Option<(i32, i32, i32)>,
    /// The rollout of the update revision failed (rollout safety): why.
    pub failed: Option<String>,
}

/// kubectl's DaemonSet rollout status, for both strategies (OnDelete waits for deletions).
pub fn progress(set: &SetView) -> Progress {
    let status = set.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or_default();
    if set.generation.is_some_and(|g| g > observed) {
        return Progress {
            complete: false,
            message: "Waiting for daemon set spec update to be observed...".to_owned(),
            counts: None,
            failed: None,
        };
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or_default();
    let available = status.number_available.unwrap_or_default();
    let counts = Some((updated, available, desired));
    if let Some(failure) = status
        .failure
        .as_ref()
        .filter(|f| status.update_revision.as_deref() == Some(f.revision.as_str()))
    {
        let message = format!(
            "daemon set \"{}\" rollout failed: {} ({}); failurePolicy {}",
            set.name, failure.message, failure.reason, failure.policy
        );
        return Progress {
            complete: false,
            message: message.clone(),
            counts,
            failed: Some(message),
        };
    }
    if let Some(aborted) = status.conditions.iter().flatten().find(|c| {
        c.type_ == everynode_core::status::PROGRESSING_CONDITION && c.reason == "RolloutAborted"
    }) {
        let message = format!("daemon set \"{}\" {}", set.name, aborted.message);
        return Progress {
            complete: false,
            message: message.clone(),
            counts,
            failed: Some(message),
        };
    }
    let name = &set.name;
    let on_delete =
        set.spec.effective_update_strategy().strategy_type() == Some(UpdateStrategyType::OnDelete);
    let held = status.conditions.iter().flatten().any(|c| {
        c.type_ == everynode_core::status::PROGRESSING_CONDITION && c.reason == "RolloutHeld"
    });
    let (complete, message) = if held {
        // As kubectl reports a partitioned StatefulSet.
        (
            true,
            format!(
                "partitioned roll out complete: {updated} new pods have been updated (the rest are held by partition or the node selector)..."
            ),
        )
    } else if updated < desired {
        let hint = if set.spec.is_frozen() {
            " (set frozen: `everynode rollout unfreeze` lets it go on)"
        } else if set.spec.is_paused() {
            " (rollout paused: `everynode rollout resume` lets it go on)"
        } else if on_delete {
            " (OnDelete: delete the old pods to update them)"
        } else {
            ""
        };
        (
            false,
            format!(
                "Waiting for daemon set \"{name}\" rollout to finish: {updated} out of {desired} new pods have been updated...{hint}"
            ),
        )
    } else if available < desired {
        (
            false,
            format!(
                "Waiting for daemon set \"{name}\" rollout to finish: {available} of {desired} updated pods are available..."
            ),
        )
    } else {
        (
            true,
            format!("daemon set \"{name}\" successfully rolled out"),
        )
    };
    Progress {
        complete,
        message,
        counts,
        failed: None,
    }
}

/// A progress bar: `[#######.....] 7/12 updated, 6 available`.
pub fn bar(updated: i32, available: i32, desired: i32, width: usize) -> String {
    let fraction = if desired > 0 {
        f64::from(available.min(updated).max(0)) / f64::from(desired)
    } else {
        1.0
    };
    // Truncation is intended: a cell is full only when its whole share is done.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let filled = ((fraction * width as f64) as usize).min(width);
    format!(
        "[{}{}] {updated}/{desired} updated, {available} available",
        "#".repeat(filled),
        ".".repeat(width - filled)
    )
}

/// `rollout status`: prints where the rollout stands; with `watch`, follows it until it
/// completes or `timeout` passes. Returns whether it completed.
pub async fn status(
    client: &Client,
    namespace: &str,
    name: &str,
    kind: Option<SetKind>,
    watch: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<bool> {
    let started = Instant::now();
    let terminal = std::io::stdout().is_terminal();
    let mut last = String::new();
    // The revision being rolled out when the watch began: an automatic rollback from it is a
    // failure even though the set then completes (on the stable revision).
    let mut watched: Option<String> = None;
    loop {
        let set = sets::find(client, namespace, name, kind).await?;
        let mut now = progress(&set.view);
        let status = set.view.status.as_ref();
        if watched.is_none() && now.counts.is_some() {
            watched = status.and_then(|s| s.update_revision.clone());
        }
        if let Some(rollback) = status.and_then(|s| s.rollback.as_ref())
            && watched.as_deref() == Some(rollback.rolled_back_from.as_str())
        {
            now.failed = Some(format!(
                "daemon set \"{name}\" rollout failed and was rolled back from {} to {}: {}",
                rollback.rolled_back_from, rollback.rollback_of, rollback.reason
            ));
        }
        if let Some(failed) = now.failed {
            if terminal && watch {
                println!();
            }
            bail!("{failed}");
        }
        let line = match (terminal && watch, now.counts) {
            (true, Some((u, a, d))) if !now.complete => {
                format!("{}  {}", bar(u, a, d, 30), now.message)
            }
            _ => now.message.clone(),
        };
        if line != last {
            let mut out = std::io::stdout().lock();
            if terminal && watch {
                // Rewrite the line in place.
                write!(out, "\r\x1b[2K{line}")?;
                if now.complete {
                    writeln!(out)?;
                }
            } else {
                writeln!(out, "{line}")?;
            }
            out.flush()?;
            last = line;
        }
        if now.complete || !watch {
            return Ok(now.complete);
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            if terminal {
                println!();
            }
            bail!(
                "timed out after {:.0?} waiting for the rollout of {} to finish",
                started.elapsed(),
                set.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The revisions a set controls, by revision number.
async fn revisions_of(client: &Client, set: &FoundSet) -> anyhow::Result<Vec<ControllerRevision>> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &set.view.namespace);
    let mut owned: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing ControllerRevisions in {}", set.view.namespace))?
        .items
        .into_iter()
        .filter(|rev| {
            rev.owner_references()
                .iter()
                .any(|r| r.controller == Some(true) && r.uid == set.view.uid)
        })
        .collect();
    owned.sort_by_key(|rev| (rev.revision, rev.name_any()));
    Ok(owned)
}

/// The template a revision records (`data.spec.template` without `$patch`).
pub fn revision_template(revision: &ControllerRevision) -> Option<Value> {
    let mut template = revision
        .data
        .as_ref()?
        .0
        .get("spec")?
        .get("template")?
        .clone();
    if let Some(object) = template.as_object_mut() {
        object.remove("$patch");
    }
    Some(template)
}

/// A revision's `controller-revision-hash`, or its name for revisions without the label.
fn revision_hash(revision: &ControllerRevision) -> String {
    revision
        .labels()
        .get(CONTROLLER_REVISION_HASH)
        .cloned()
        .unwrap_or_else(|| revision.name_any())
}

/// One row of `rollout history`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRow {
    /// `revision`.
    pub revision: i64,
    /// `controller-revision-hash`.
    pub hash: String,
    /// `kubernetes.io/change-cause`, or `<none>`.
    pub change_cause: String,
    /// Whether this is the set's current revision.
    pub current: bool,
}

/// The rows of `rollout history`, oldest first.
pub fn history_rows(
    revisions: &[ControllerRevision],
    current_hash: Option<&str>,
) -> Vec<HistoryRow> {
    revisions
        .iter()
        .map(|rev| {
            let hash = revision_hash(rev);
            HistoryRow {
                revision: rev.revision,
                current: current_hash == Some(hash.as_str()),
                hash,
                change_cause: rev
                    .annotations()
                    .get(CHANGE_CAUSE_ANNOTATION)
                    .cloned()
                    .unwrap_or_else(|| "<none>".to_owned()),
            }
        })
        .collect()
}

/// Renders `rollout history` as a kubectl-style table.
pub fn history_table(set: &str, rows: &[HistoryRow], style: Style) -> String {
    let mut out = format!("{set}\n");
    let hash_width = rows.iter().map(|r| r.hash.len()).max().unwrap_or(4).max(4);
    out.push_str(&format!(
        "{:<9} {:<hash_width$}  CHANGE-CAUSE\n",
        "REVISION", "HASH"
    ));
    for row in rows {
        let line = format!(
            "{:<9} {:<hash_width$}  {}{}",
            row.revision,
            row.hash,
            row.change_cause,
            if row.current { "  (current)" } else { "" }
        );
        if row.current {
            out.push_str(&style.bold(&line));
        } else {
            out.push_str(&line);
        }
        out.push('\n');
    }
    out
}

/// The hash of the set's current revision: the hash label of the pods' newest matching revision
/// is not needed — the revision whose template equals the set's template is current.
fn current_hash(set: &FoundSet, revisions: &[ControllerRevision]) -> Option<String> {
    revisions
        .iter()
        .rev()
        .find(|rev| {
            rev.data
                .as_ref()
                .is_some_and(|data| spec_digest(set).matches(&data.0))
        })
        .map(revision_hash)
}

/// The revision of the set's template and node overrides, to compare revisions' data with.
fn spec_digest(set: &FoundSet) -> everynode_core::revision::TemplateDigest {
    let spec = &set.view.spec;
    everynode_core::revision::TemplateDigest::of_spec(&spec.template, spec.overrides(), None)
}

/// `rollout history`: the table, or one revision's template as YAML.
pub async fn history(
    client: &Client,
    set: &FoundSet,
    revision: Option<i64>,
    style: Style,
) -> anyhow::Result<String> {
    let revisions = revisions_of(client, set).await?;
    if let Some(number) = revision {
        let Some(found) = revisions.iter().find(|r| r.revision == number) else {
            bail!(
                "{} has no revision {number}; its revisions: {}",
                set.display(),
                numbers(&revisions)
            );
        };
        let template = revision_template(found).with_context(|| {
            format!(
                "revision {number} ({}) records no template",
                found.name_any()
            )
        })?;
        let yaml = serde_yaml_ng::to_string(&json!({"template": template}))?;
        return Ok(format!("{} with revision #{number}\n{yaml}", set.display()));
    }
    let current = current_hash(set, &revisions);
    Ok(history_table(
        &set.display(),
        &history_rows(&revisions, current.as_deref()),
        style,
    ))
}

fn numbers(revisions: &[ControllerRevision]) -> String {
    let list: Vec<String> = revisions.iter().map(|r| r.revision.to_string()).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

/// `rollout undo`: sets the template to revision `to` (default: the one before the current).
pub async fn undo(client: &Client, set: &FoundSet, to: Option<i64>) -> anyhow::Result<String> {
    let revisions = revisions_of(client, set).await?;
    let current = current_hash(set, &revisions);
    let target = match to {
        Some(number) => revisions
            .iter()
            .find(|r| r.revision == number)
            .with_context(|| {
                format!(
                    "{} has no revision {number}; its revisions: {}",
                    set.display(),
                    numbers(&revisions)
                )
            })?,
        None => revisions
            .iter()
            .rev()
            .find(|r| current.as_deref() != Some(revision_hash(r).as_str()))
            .with_context(|| {
                format!("{} has no earlier revision to roll back to", set.display())
            })?,
    };
    let template = revision_template(target)
        .with_context(|| format!("revision {} records no template", target.revision))?;
    // A template that does not decode is refused here rather than by the apiserver.
    let _: k8s_openapi::api::core::v1::PodTemplateSpec = serde_json::from_value(template.clone())
        .with_context(|| {
        format!(
            "revision {} records an unreadable template",
            target.revision
        )
    })?;
    let data = target.data.as_ref().map(|d| &d.0);
    if data.is_some_and(|data| spec_digest(set).matches(data)) {
        return Ok(format!(
            "{} skipped rollback (current template already matches revision {})",
            set.display(),
            target.revision
        ));
    }
    // The whole template (and the node overrides) are replaced (a merge patch would keep fields
    // the revision does not have), under the set's resourceVersion.
    let overrides = data
        .and_then(|d| d.get("spec"))
        .and_then(|s| s.get("nodeOverrides"))
        .cloned();
    sets::replace_template(client, set, template, overrides).await?;
    Ok(format!(
        "{} rolled back to revision {}",
        set.display(),
        target.revision
    ))
}

/// `rollout restart`: a template annotation with the time, so every pod is replaced within the
/// update strategy.
pub async fn restart(client: &Client, set: &FoundSet, now: Timestamp) -> anyhow::Result<String> {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT_ANNOTATION: now.to_string()
    }}}}});
    sets::patch(client, set, &Patch::Merge(patch)).await?;
    Ok(format!("{} restarted", set.display()))
}

/// A rollout hold `rollout pause|resume|freeze|unfreeze` sets or clears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// `spec.paused`.
    Paused,
    /// `spec.frozen`.
    Frozen,
}

impl Hold {
    fn field(self) -> &'static str {
        match self {
            Self::Paused => "paused",
            Self::Frozen => "frozen",
        }
    }
}

/// Sets (`on`) or clears `spec.paused` / `spec.frozen` of an everynode set.
pub async fn hold(client: &Client, set: &FoundSet, hold: Hold, on: bool) -> anyhow::Result<String> {
    if set.kind != SetKind::Everynode {
        bail!(
            "{} has no spec.{}: pause and freeze are everynode rollout controls; run the set as an \
             everynode.dev DaemonSet (change its apiVersion to everynode.dev/v1alpha1)",
            set.display(),
            hold.field()
        );
    }
    let value = if on { json!(true) } else { Value::Null };
    let patch = json!({"spec": {hold.field(): value}});
    sets::patch(client, set, &Patch::Merge(patch)).await?;
    let verb = match (hold, on) {
        (Hold::Paused, true) => "paused",
        (Hold::Paused, false) => "resumed",
        (Hold::Frozen, true) => "frozen",
        (Hold::Frozen, false) => "unfrozen",
    };
    Ok(format!("{} {verb}", set.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use everynode_api::DaemonSetStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::apimachinery::pkg::runtime::RawExtension;

    fn view(generation: i64, observed: i64, desired: i32, updated: i32, available: i32) -> SetView {
        let set: everynode_api::DaemonSet = serde_json::from_value(json!({
            "apiVersion": "everynode.dev/v1alpha1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "ops", "uid": "u", "generation": generation},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                             "spec": {"containers": [{"name": "c", "image": "agent:v1"}]}}
            }
        }))
        .unwrap();
        let mut view = SetView::from_daemon_set(&set).unwrap();
        view.status = Some(DaemonSetStatus {
            observed_generation: Some(observed),
            desired_number_scheduled: desired,
            updated_number_scheduled: Some(updated),
            number_available: Some(available),
            ..DaemonSetStatus::default()
        });
        view
    }

    #[test]
    fn progress_reads_like_kubectl_rollout_status() {
        assert_eq!(
            progress(&view(3, 2, 5, 5, 5)).message,
            "Waiting for daemon set spec update to be observed..."
        );
        let waiting = progress(&view(3, 3, 5, 2, 2));
        assert!(!waiting.complete);
        assert_eq!(
            waiting.message,
            "Waiting for daemon set \"agent\" rollout to finish: 2 out of 5 new pods have been updated..."
        );
        assert_eq!(
            progress(&view(3, 3, 5, 5, 4)).message,
            "Waiting for daemon set \"agent\" rollout to finish: 4 of 5 updated pods are available..."
        );
        let done = progress(&view(3, 3, 5, 5, 5));
        assert!(done.complete);
        assert_eq!(done.message, "daemon set \"agent\" successfully rolled out");
    }

    #[test]
    fn the_bar_fills_with_available_updated_pods() {
        assert_eq!(bar(5, 2, 10, 10), "[##........] 5/10 updated, 2 available");
        assert_eq!(bar(10, 10, 10, 4), "[####] 10/10 updated, 10 available");
        assert_eq!(bar(0, 0, 0, 4), "[####] 0/0 updated, 0 available");
    }

    fn revision(number: i64, hash: &str, cause: Option<&str>) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(format!("agent-{hash}")),
                labels: Some([(CONTROLLER_REVISION_HASH.to_owned(), hash.to_owned())].into()),
                annotations: cause
                    .map(|c| [(CHANGE_CAUSE_ANNOTATION.to_owned(), c.to_owned())].into()),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(
                json!({"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"app": "agent"}}}}}),
            )),
            revision: number,
        }
    }

    #[test]
    fn history_lists_revisions_with_their_cause_and_marks_the_current_one() {
        let revisions = [
            revision(1, "aaa", None),
            revision(2, "bbb", Some("image v2")),
        ];
        let rows = history_rows(&revisions, Some("bbb"));
        let table = history_table("daemonset.everynode.dev/agent", &rows, Style::plain());
        assert_eq!(
            table,
            "daemonset.everynode.dev/agent\nREVISION  HASH  CHANGE-CAUSE\n1         aaa   <none>\n2         bbb   image v2  (current)\n"
        );
    }

    #[test]
    fn a_revision_template_drops_the_replace_directive() {
        let template = revision_template(&revision(1, "aaa", None)).unwrap();
        assert_eq!(template, json!({"metadata": {"labels": {"app": "agent"}}}));
    }
}
