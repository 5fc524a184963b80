//! Which physical table each model of a plan's target uses.
//!
//! Invariants:
//! - A model keeps the table its environment (or the environment its definitions come from, or
//!   the base) already uses for the same snapshot, including a later generation; otherwise it
//!   uses generation 0 of its version.
//! - A restated model whose table already holds data gets a new generation, so that no
//!   environment ever sees data change under it: incremental tables start as a zero-copy clone
//!   of the current one (`clone_from`) in which only the restated intervals are recomputed;
//!   FULL and SEED tables are rewritten whole anyway, so their new generation starts empty.

use std::collections::BTreeMap;

use super::Target;
use crate::interval::IntervalSet;
use crate::project::ModelName;
use crate::state::{Environment, Snapshot, State, TableId};

/// The target of every snapshot; `envs` in order of preference.
pub fn targets(
    state: &State,
    snapshots: &BTreeMap<ModelName, impl std::ops::Deref<Target = Snapshot>>,
    envs: &[&Environment],
    restated: &BTreeMap<ModelName, IntervalSet>,
) -> BTreeMap<ModelName, Target> {
    snapshots
        .iter()
        .map(|(name, s)| {
            let current = s.table_id().map(|gen0| {
                envs.iter()
                    .find_map(|e| {
                        e.models
                            .get(name)
                            .filter(|m| m.snapshot == s.id)
                            .and_then(|m| m.table.clone())
                    })
                    .unwrap_or(gen0)
            });
            let known = |t: &TableId| state.tables.get(t.as_str());
            let has_data = |t: &TableId| known(t).is_some_and(|pt| !pt.intervals.is_empty());
            let (table, generation, clone_from) = match current {
                Some(t) if restated.contains_key(name) && has_data(&t) => {
                    let next = state
                        .tables
                        .values()
                        .filter(|pt| pt.name == *name && pt.version == s.version)
                        .map(|pt| pt.generation + 1)
                        .max()
                        .unwrap_or(1);
                    let clone = s.model.kind.is_incremental().then_some(t);
                    (Some(TableId::new(name, &s.version, next)), next, clone)
                }
                Some(t) => {
                    let generation = known(&t).map_or(0, |pt| pt.generation);
                    (Some(t), generation, None)
                }
                None => (None, 0, None),
            };
            (
                name.clone(),
                Target {
                    snapshot: s.id.clone(),
                    table,
                    generation,
                    clone_from,
                },
            )
        })
        .collect()
}
