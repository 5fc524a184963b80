//! `tidemark promote ENV [--to prod]`: make the target environment point at ENV's snapshots
//! in one atomic state commit.
//!
//! The promotion is a plan for the target whose definitions come from ENV: snapshots the target
//! already has are untouched, ENV's tables are reused as they are (no copies), and whatever ENV
//! lacks of the target's range (e.g. the days the target's `run` added while ENV was built) is
//! computed first, in ENV's tables, where no reader of the target can see it. Pins never move
//! backwards for a table both environments share.

use std::collections::BTreeMap;

use super::apply::apply;
use super::load;
use super::plan::show;
use super::query::unknown_env;
use crate::cli::{Context, PlanFormat, note};
use crate::error::{Diagnostic, Result};
use crate::interval::IntervalSet;
use crate::plan::{self, Options, Plan};
use crate::project::ModelName;
use crate::state::{State, StateStore};

/// Arguments of `promote`.
pub struct Promote<'a> {
    /// The environment to promote.
    pub env: &'a str,
    /// The environment that will point at its snapshots.
    pub to: &'a str,
    /// Only show the plan.
    pub check: bool,
    /// Promote even if the target would lose intervals it has.
    pub allow_gaps: bool,
    /// Output format of the plan.
    pub format: PlanFormat,
}

/// Run `promote`.
pub fn run(ctx: &Context, args: &Promote<'_>, out: &mut dyn std::io::Write) -> Result<u8> {
    let loaded = load(ctx)?;
    let store = StateStore::open(&loaded.project.config.warehouse)?;
    let state = store.read()?;
    if state.environment(args.env).is_none() {
        return Err(unknown_env(&state, args.env));
    }
    if args.env == args.to {
        return Err(
            Diagnostic::error(format!("cannot promote `{}` to itself", args.env))
                .hint("name another target with --to")
                .into(),
        );
    }
    let mut opts = Options::new(args.to, ctx.execution_time);
    opts.create_from = args.env.to_string();
    opts.deployed = Some(args.env.to_string());
    let plan = plan::build(&loaded.project, &loaded.fingerprints, &state, &opts)?;
    show(&plan, args.format, out)?;
    let gaps = gaps(&plan, &state);
    for (name, g) in &gaps {
        note(
            ctx,
            &format!(
                "{name}: `{}` has {} that `{}` would not have after the promotion",
                args.to,
                plan::render::windows(g),
                args.env
            ),
        );
    }
    if args.check {
        return Ok(if plan.has_work() { 1 } else { 0 });
    }
    if !gaps.is_empty() && !args.allow_gaps {
        return Err(Diagnostic::error(format!(
            "promoting `{}` would leave gaps in `{}` ({} model(s))",
            args.env,
            args.to,
            gaps.len()
        ))
        .hint("compute them in the environment first (e.g. plan it without --start/--end), or pass --allow-gaps")
        .into());
    }
    if !plan.has_work() {
        note(
            ctx,
            &format!(
                "nothing to promote: `{}` already points at `{}`'s snapshots",
                args.to, args.env
            ),
        );
        return Ok(0);
    }
    apply(
        ctx,
        &loaded.project.config,
        &store,
        &state,
        &plan,
        out,
        "promote",
        None,
    )?;
    Ok(0)
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
            .snapshots
            .iter()
            .find(|s| s.id == t.snapshot)
            .or_else(|| state.snapshots.get(&t.snapshot))
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
