//! Promotion: a plan for the target environment whose definitions come from the promoted one.
//!
//! Invariants:
//! - Snapshots the target already has are untouched; the promoted environment's tables are
//!   reused as they are (no copies); whatever it lacks of the target's range is computed first,
//!   in its own tables, where no reader of the target can see it.
//! - Pins never move backwards for a table both environments share.
//! - A promotion that would leave the target without intervals it has now ([`gaps`]) is
//!   refused unless the user allows it.

use std::collections::BTreeMap;

use crate::error::{Diagnostic, Result};
use crate::interval::IntervalSet;
use crate::names::EnvName;
use crate::plan::{self, Options, Plan};
use crate::project::{ModelName, Project};
use crate::state::State;

/// The plan that points `to` at `env`'s snapshots.
pub fn plan(
    project: &Project,
    fingerprints: &BTreeMap<ModelName, crate::fingerprint::Fingerprint>,
    state: &State,
    env: &EnvName,
    to: &EnvName,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Plan> {
    state.environment_or_error(env)?;
    if env == to {
        return Err(
            Diagnostic::error(format!("cannot promote `{env}` to itself"))
                .hint("name another target with `--to`")
                .into(),
        );
    }
    plan::build(
        project,
        fingerprints,
        state,
        &Options::promote(env, to, now),
    )
}

/// Per model, the intervals the target has now and would not have afterwards (even after the
/// plan's backfill).
pub fn gaps(plan: &Plan, state: &State) -> BTreeMap<ModelName, IntervalSet> {
    let Some(current) = state.environment(&plan.environment) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (name, t) in &plan.target {
        let (Some(now), Some(new)) = (
            current.models.get(name).and_then(|m| m.table.as_ref()),
            t.table.as_ref(),
        ) else {
            continue;
        };
        let incremental = plan
            .snapshot(state, &t.snapshot)
            .is_some_and(|s| s.model.kind.is_incremental());
        if now == new || !incremental {
            continue;
        }
        let mut after = state.intervals(new);
        if let Some(from) = &t.clone_from {
            after = after.union(&state.intervals(from));
        }
        if let Some(b) = plan
            .models
            .iter()
            .find(|m| &m.name == name)
            .and_then(|m| m.backfill.as_ref())
        {
            after = after.union(&b.intervals);
        }
        let lost = state.intervals(now).subtract(&after);
        if !lost.is_empty() {
            out.insert(name.clone(), lost);
        }
    }
    out
}
