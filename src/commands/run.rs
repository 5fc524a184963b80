//! `tidemark run [ENV]`: compute the intervals that became complete since the last run (and
//! refresh FULL models whose schedule came due) for the environment's deployed models, then
//! advance its pins in one commit.
//!
//! It never waits for anything: a backfill being built in another environment writes other
//! tables (or other intervals of shared ones) and commits nothing to this environment until it
//! is promoted, so the two do not block each other.

use super::{apply_and_show, load_with_state};
use crate::env::apply::Trigger;
use crate::error::{ExitStatus, Result};
use crate::names::EnvName;
use crate::plan::{self, Options};
use crate::settings::Settings;

/// Run `run`.
pub fn run(
    ctx: &Settings,
    env: &EnvName,
    restate_late: bool,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    let (loaded, store, state) = load_with_state(ctx)?;
    state.environment_or_error(env)?;
    let config = &loaded.project.config;
    let opts = Options {
        late: super::source_logs(config, &state, env)?,
        restate_late: restate_late || config.run_restate_late,
        ..Options::run(env, ctx.execution_time)
    };
    let plan = plan::build(&loaded.project, &loaded.fingerprints, &state, &opts)?;
    if let Some(late) = &plan.late_data {
        for s in &late.sources {
            let what = if late.restated && s.untracked.is_none() {
                "restating"
            } else {
                "not restated (`--restate-late` or `[run] restate_late = true` restates it)"
            };
            ctx.printer.warning(&format!(
                "late or corrected data in `{}` (versions {:?}): {}; {what}",
                s.source,
                s.versions,
                crate::plan::render::windows(&s.windows)
            ));
        }
    }
    if plan.models.iter().all(|m| m.backfill.is_none()) {
        ctx.printer.note(&format!(
            "nothing to run: `{env}` is complete up to {}",
            crate::interval::format_ts(plan.execution_time)
        ));
        return Ok(ExitStatus::Success);
    }
    for m in &plan.models {
        if let Some(text) = plan::render::backfill_text(m) {
            ctx.printer.line(&format!("{}: {text}", m.name));
        }
    }
    apply_and_show(
        ctx,
        &loaded.project.config,
        &store,
        &state,
        &plan,
        Trigger::Run,
        None,
        out,
    )
}
