//! The state changes a plan makes once it has been carried out.
//!
//! Invariant: the environment is written with the revision the plan was made from, so applying a
//! stale plan fails instead of overwriting someone else's change.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::Plan;
use crate::error::Result;
use crate::interval::IntervalSet;
use crate::names::EnvName;
use crate::project::ModelName;
use crate::state::{State, TableId};

/// The state changes that applying `plan` makes once every batch in it has been computed:
/// record the new snapshots and tables, mark the backfilled intervals complete, and point the
/// environment at its new snapshots (checked against the revision the plan was made from).
///
/// `versions` holds the Delta version each physical table is pinned at afterwards, and
/// `source_versions` the versions of Delta sources that were read.
pub fn completed_actions(
    plan: &Plan,
    state: &State,
    now: DateTime<Utc>,
    versions: &BTreeMap<TableId, u64>,
    source_versions: &BTreeMap<ModelName, u64>,
) -> Result<Vec<crate::state::Action>> {
    use crate::state::{Action, EnvModel, Environment, PhysicalTable};
    // A plan file can be edited outside tidemark: its environment is checked like a typed one.
    let name = EnvName::from_user(&plan.environment)?;
    let mut actions: Vec<Action> = plan
        .snapshots
        .iter()
        .map(|s| Action::PutSnapshot {
            snapshot: Box::new(s.clone()),
        })
        .collect();
    for t in plan.target.values() {
        let Some(table) = &t.table else { continue };
        if let Some(s) = plan.snapshot(state, &t.snapshot) {
            actions.push(Action::PutTable {
                table: PhysicalTable {
                    id: table.clone(),
                    name: s.name.clone(),
                    version: s.version.clone(),
                    generation: t.generation,
                    interval_unit: s.model.interval_unit,
                    intervals: IntervalSet::new(),
                    created_at: now,
                },
            });
        }
    }
    for t in plan.target.values() {
        if let (Some(table), Some(from)) = (&t.table, &t.clone_from) {
            actions.push(Action::AddIntervals {
                table: table.clone(),
                intervals: state.intervals(from),
            });
        }
    }
    for m in &plan.models {
        if let (Some(b), Some(t)) = (&m.backfill, plan.target.get(&m.name))
            && let Some(table) = &t.table
        {
            actions.push(Action::AddIntervals {
                table: table.clone(),
                intervals: b.intervals.clone(),
            });
        }
    }
    actions.push(Action::PutEnvironment {
        environment: Box::new(Environment {
            name,
            revision: 0,
            plan_id: plan.plan_id.clone(),
            models: plan
                .target
                .iter()
                .map(|(n, t)| {
                    (
                        n.clone(),
                        EnvModel {
                            snapshot: t.snapshot.clone(),
                            table: t.table.clone(),
                            table_version: t.table.as_ref().and_then(|t| versions.get(t).copied()),
                        },
                    )
                })
                .collect(),
            created_at: now,
            updated_at: now,
            expires_at: plan
                .ttl_seconds
                .and_then(|s| chrono::Duration::try_seconds(i64::try_from(s).ok()?))
                .map(|d| now + d),
            source_versions: source_versions.clone(),
            late_since: late_since(plan, state),
            accepted_gates: plan.accepted_gates.clone(),
        }),
        expected_revision: plan.environment_revision,
    });
    Ok(actions)
}

/// What late-data detection keeps reading from after `plan` (see [`Environment::late_since`]):
/// for each source whose late data the plan found but does not restate, the version it was
/// found after; nothing for the rest, which the environment has now read.
fn late_since(plan: &Plan, state: &State) -> BTreeMap<ModelName, u64> {
    let Some(late) = &plan.late_data else {
        return BTreeMap::new();
    };
    let before = state.environment(&plan.environment).map(|e| &e.late_since);
    late.sources
        .iter()
        .filter(|s| !late.restated || s.untracked.is_some())
        .map(|s| {
            let since = before
                .and_then(|b| b.get(&s.source).copied())
                .unwrap_or(s.since_version);
            (s.source.clone(), since.min(s.since_version))
        })
        .collect()
}
