//! `tidemark run [ENV]`: compute the intervals that became complete since the last run (and
//! refresh FULL models whose schedule came due) for the environment's deployed models, then
//! advance its pins in one commit.
//!
//! It never waits for anything: a backfill being built in another environment writes other
//! tables (or other intervals of shared ones) and commits nothing to this environment until it
//! is promoted, so the two do not block each other.

use super::apply::apply;
use super::load;
use super::query::unknown_env;
use crate::cli::{Context, note, progress};
use crate::error::Result;
use crate::plan::{self, Options};
use crate::state::StateStore;

/// Run `run`.
pub fn run(ctx: &Context, env: &str, out: &mut dyn std::io::Write) -> Result<u8> {
    let loaded = load(ctx)?;
    let store = StateStore::open(&loaded.project.config.warehouse)?;
    let state = store.read()?;
    if state.environment(env).is_none() {
        return Err(unknown_env(&state, env));
    }
    let mut opts = Options::new(env, ctx.execution_time);
    opts.deployed = Some(env.to_string());
    opts.catch_up = true;
    let plan = plan::build(&loaded.project, &loaded.fingerprints, &state, &opts)?;
    if plan.models.iter().all(|m| m.backfill.is_none()) {
        note(
            ctx,
            &format!(
                "nothing to run: `{env}` is complete up to {}",
                plan.execution_time
            ),
        );
        return Ok(0);
    }
    for m in &plan.models {
        if let Some(text) = plan::render::backfill_text(m) {
            progress(ctx, &format!("{}: {text}", m.name));
        }
    }
    apply(
        ctx,
        &loaded.project.config,
        &store,
        &state,
        &plan,
        out,
        "run",
        None,
    )?;
    Ok(0)
}
