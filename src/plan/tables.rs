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
use crate::state::{Environment, Snapshot, State, table_id};

/// The target of every snapshot; `envs` in order of preference.
pub fn targets(
    state: &State,
    snapshots: &BTreeMap<ModelName, Snapshot>,
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
            let has_data = |t: &String| {
                state
                    .tables
                    .get(t)
                    .is_some_and(|pt| !pt.intervals.is_empty())
            };
            let (table, clone_from) = match current {
                Some(t) if restated.contains_key(name) && has_data(&t) => {
                    let next = state
                        .tables
                        .values()
                        .filter(|pt| pt.name == *name && pt.version == s.version)
                        .map(|pt| pt.generation + 1)
                        .max()
                        .unwrap_or(1);
                    let clone = s.model.kind.is_incremental().then_some(t);
                    (Some(table_id(name, &s.version, next)), clone)
                }
                other => (other, None),
            };
            (
                name.clone(),
                Target {
                    snapshot: s.id.clone(),
                    table,
                    clone_from,
                },
            )
        })
        .collect()
}

/// The generation encoded in a table id (`…__g2` → 2).
pub fn generation_of(table: &str) -> u32 {
    table
        .rsplit_once("__g")
        .and_then(|(_, g)| g.parse().ok())
        .unwrap_or(0)
}
