//! The steps of a migration, from what the cluster shows (pure): each run of the command
//! observes, takes the next step, and observes again, so a run that stopped anywhere resumes.

/// What the command sees of the two sets, their pods and the undo record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The apps/v1 set exists.
    pub built_in: bool,
    /// The everynode set, if it exists.
    pub everynode: Option<EverynodeSet>,
    /// The undo record (a ConfigMap holding the apps/v1 manifest) exists.
    pub record: bool,
    /// Who controls every live pod of the selector (`None`: some pods have no controller, or
    /// the two sets share them).
    pub pods_owner: Option<Owner>,
}

/// The everynode set of the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EverynodeSet {
    /// It carries the migration annotation: created by a migration not finished yet.
    pub migrating: bool,
}

/// The controller of a set's pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The everynode set.
    Everynode,
    /// The apps/v1 set.
    BuiltIn,
}

/// Which way the command goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// apps/v1 → everynode.
    Forward,
    /// everynode → apps/v1 (`--undo`).
    Undo,
}

/// One step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create the everynode set from the apps/v1 one, frozen and marked as migrating.
    CreateEverynode,
    /// Delete the apps/v1 set with `--cascade=orphan`: its pods and revisions stay.
    OrphanBuiltIn,
    /// Wait until `Owner` controls every pod.
    AwaitAdoption(Owner),
    /// Unfreeze the everynode set and drop the migration mark.
    Release,
    /// Freeze the everynode set and save the apps/v1 manifest in the undo record.
    SaveRecord,
    /// Delete the everynode set with `--cascade=orphan`.
    OrphanEverynode,
    /// Create the apps/v1 set from the undo record.
    CreateBuiltIn,
    /// Delete the undo record.
    RemoveRecord,
    /// Delete an everynode set a migration created but never got pods from (undo of a
    /// migration stopped after its first step).
    DeleteUnusedEverynode,
    /// Nothing left to do.
    Done,
}

/// The next step, or why there is none.
pub fn next_step(direction: Direction, o: &Observed) -> Result<Step, String> {
    match direction {
        Direction::Forward => next_forward(o),
        Direction::Undo => next_undo(o),
    }
}

fn next_forward(o: &Observed) -> Result<Step, String> {
    if o.record {
        return Err(
            "an undo is in progress (its record exists): finish it with `everynode migrate --undo`"
                .to_owned(),
        );
    }
    Ok(match (o.built_in, o.everynode) {
        (false, None) => return Err("there is no DaemonSet of this name to migrate".to_owned()),
        (true, None) => Step::CreateEverynode,
        (true, Some(e)) if e.migrating => Step::OrphanBuiltIn,
        (true, Some(_)) => {
            return Err(
                "an everynode DaemonSet and an apps/v1 DaemonSet of this name both exist and no \
                 migration is in progress; delete one of them first"
                    .to_owned(),
            );
        }
        (false, Some(e)) if !e.migrating => Step::Done,
        (false, Some(_)) if o.pods_owner == Some(Owner::Everynode) => Step::Release,
        (false, Some(_)) => Step::AwaitAdoption(Owner::Everynode),
    })
}

fn next_undo(o: &Observed) -> Result<Step, String> {
    Ok(match (o.record, o.built_in, o.everynode) {
        (false, true, Some(e)) if e.migrating => Step::DeleteUnusedEverynode,
        (false, true, Some(_)) => {
            return Err(
                "an everynode DaemonSet and an apps/v1 DaemonSet of this name both exist and no \
                 migration is in progress; delete one of them first"
                    .to_owned(),
            );
        }
        (false, true, None) => Step::Done,
        (false, false, Some(_)) => Step::SaveRecord,
        (false, false, None) => return Err("there is no DaemonSet of this name".to_owned()),
        (true, _, Some(_)) => Step::OrphanEverynode,
        (true, false, None) => Step::CreateBuiltIn,
        (true, true, None) if o.pods_owner == Some(Owner::BuiltIn) => Step::RemoveRecord,
        (true, true, None) => Step::AwaitAdoption(Owner::BuiltIn),
    })
}

/// What `step` leaves, as far as the next step cares (for `--dry-run`).
pub fn after(step: Step, o: &Observed) -> Observed {
    let mut next = *o;
    match step {
        Step::CreateEverynode => next.everynode = Some(EverynodeSet { migrating: true }),
        Step::OrphanBuiltIn => (next.built_in, next.pods_owner) = (false, None),
        Step::AwaitAdoption(owner) => next.pods_owner = Some(owner),
        Step::Release => next.everynode = Some(EverynodeSet { migrating: false }),
        Step::SaveRecord => next.record = true,
        Step::OrphanEverynode => (next.everynode, next.pods_owner) = (None, None),
        Step::CreateBuiltIn => next.built_in = true,
        Step::RemoveRecord => next.record = false,
        Step::DeleteUnusedEverynode => next.everynode = None,
        Step::Done => {}
    }
    next
}

/// The steps from `o` to the end (at most ten; a loop would be a bug).
pub fn all_steps(direction: Direction, o: &Observed) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut now = *o;
    for _ in 0..10 {
        let step = next_step(direction, &now)?;
        if step == Step::Done {
            return Ok(steps);
        }
        steps.push(step);
        now = after(step, &now);
    }
    Err(format!("the migration does not end: {steps:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Observed = Observed {
        built_in: true,
        everynode: None,
        record: false,
        pods_owner: Some(Owner::BuiltIn),
    };

    #[test]
    fn a_migration_creates_frozen_orphans_waits_for_adoption_and_releases() {
        assert_eq!(
            all_steps(Direction::Forward, &START).unwrap(),
            [
                Step::CreateEverynode,
                Step::OrphanBuiltIn,
                Step::AwaitAdoption(Owner::Everynode),
                Step::Release
            ]
        );
    }

    #[test]
    fn a_stopped_migration_resumes_where_it_stopped() {
        let orphaned = Observed {
            built_in: false,
            everynode: Some(EverynodeSet { migrating: true }),
            record: false,
            pods_owner: None,
        };
        assert_eq!(
            all_steps(Direction::Forward, &orphaned).unwrap(),
            [Step::AwaitAdoption(Owner::Everynode), Step::Release]
        );
        let done = after(Step::Release, &orphaned);
        assert_eq!(all_steps(Direction::Forward, &done).unwrap(), []);
    }

    #[test]
    fn undo_saves_the_manifest_before_it_orphans_the_everynode_set() {
        let migrated = Observed {
            built_in: false,
            everynode: Some(EverynodeSet { migrating: false }),
            record: false,
            pods_owner: Some(Owner::Everynode),
        };
        assert_eq!(
            all_steps(Direction::Undo, &migrated).unwrap(),
            [
                Step::SaveRecord,
                Step::OrphanEverynode,
                Step::CreateBuiltIn,
                Step::AwaitAdoption(Owner::BuiltIn),
                Step::RemoveRecord
            ]
        );
        // A migration stopped after its first step: the unused everynode set goes.
        let started = after(Step::CreateEverynode, &START);
        assert_eq!(
            all_steps(Direction::Undo, &started).unwrap(),
            [Step::DeleteUnusedEverynode]
        );
        // Mid-migration (pods orphaned): undo goes back all the same.
        let orphaned = after(Step::OrphanBuiltIn, &started);
        assert_eq!(
            all_steps(Direction::Undo, &orphaned).unwrap()[..3],
            [Step::SaveRecord, Step::OrphanEverynode, Step::CreateBuiltIn]
        );
    }

    #[test]
    fn states_that_are_no_migration_are_refused_with_what_to_do() {
        let both = Observed {
            everynode: Some(EverynodeSet { migrating: false }),
            ..START
        };
        for direction in [Direction::Forward, Direction::Undo] {
            assert!(
                next_step(direction, &both)
                    .unwrap_err()
                    .contains("delete one of them first")
            );
        }
        let undoing = Observed {
            record: true,
            ..START
        };
        assert!(
            next_step(Direction::Forward, &undoing)
                .unwrap_err()
                .contains("--undo")
        );
        let nothing = Observed {
            built_in: false,
            pods_owner: None,
            ..START
        };
        assert!(next_step(Direction::Forward, &nothing).is_err());
    }
}
