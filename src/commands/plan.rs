//! `tidemark plan`: compare the project with an environment and show what would change and be
//! computed; optionally save the plan for `apply`.

use std::path::Path;

use super::{emit, load};
use crate::cli::{Context, PlanArgs, PlanFormat};
use crate::error::{Error, Result, io_error};
use crate::plan::{self, Options, Plan};
use crate::state::StateStore;

/// Run `plan`.
pub fn run(ctx: &Context, args: &PlanArgs, out: &mut dyn std::io::Write) -> Result<u8> {
    let loaded = load(ctx)?;
    let store = StateStore::open(&loaded.project.config.warehouse)?;
    let state = store.read()?;
    let opts = Options {
        environment: args.environment.to_ascii_lowercase(),
        create_from: args.create_from.to_ascii_lowercase(),
        start: args
            .start
            .as_deref()
            .map(parse_arg("--start"))
            .transpose()?,
        end: args.end.as_deref().map(parse_arg("--end")).transpose()?,
        restate: args.restate_model.clone(),
        select: args.select_model.clone(),
        forward_only: args.forward_only,
        skip_backfill: args.skip_backfill,
        breaking: args.breaking.clone(),
        non_breaking: args.non_breaking.clone(),
        with_local_changes: args.with_local_changes,
        execution_time: ctx.execution_time,
        offline: false,
        deployed: None,
        catch_up: false,
    };
    let plan = plan::build(&loaded.project, &loaded.fingerprints, &state, &opts)?;
    if let Some(path) = &args.out {
        save(&plan, path)?;
    }
    show(&plan, args.format, out)?;
    if args.format != PlanFormat::Json {
        estimates(&plan, &store, ctx.exec.workers, args.format, out)?;
    }
    if args.apply {
        if plan.has_work() {
            super::apply::apply(
                ctx,
                &loaded.project.config,
                &store,
                &state,
                &plan,
                out,
                "plan --apply",
                None,
            )?;
        } else {
            crate::cli::note(
                ctx,
                &format!("nothing to apply: `{}` is up to date", plan.environment),
            );
        }
        return Ok(0);
    }
    Ok(if args.check && plan.has_work() { 1 } else { 0 })
}

/// Print what the plan's backfills are expected to cost, from earlier applies' batches.
pub fn estimates(
    plan: &Plan,
    store: &StateStore,
    workers: usize,
    format: PlanFormat,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    use crate::backfill::estimate;
    let models = estimate::computed(plan);
    if models.is_empty() {
        return Ok(());
    }
    let progress = crate::backfill::progress::ProgressStore::new(store.storage());
    let history = estimate::history(&progress, &models)?;
    let text = estimate::render(
        &estimate::estimates(plan, &history),
        workers,
        format == PlanFormat::Markdown,
    );
    if text.is_empty() {
        return Ok(());
    }
    emit(out, &text)
}

/// Print a plan in the chosen format.
pub fn show(plan: &Plan, format: PlanFormat, out: &mut dyn std::io::Write) -> Result<()> {
    let text = match format {
        PlanFormat::Text => plan::render::text(plan),
        PlanFormat::Markdown => plan::render::markdown(plan),
        PlanFormat::Json => json(plan)?,
    };
    emit(out, &text)
}

fn json(plan: &Plan) -> Result<String> {
    let mut s = serde_json::to_string_pretty(plan)
        .map_err(|e| Error::Bug(format!("cannot serialize the plan: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// Write the plan's JSON to `path` atomically (a temporary file renamed into place).
fn save(plan: &Plan, path: &Path) -> Result<()> {
    let text = json(plan)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::from(io_error("write", &tmp, &e)))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::from(io_error("write", path, &e)))
}

/// Parse `--start`/`--end`.
pub fn parse_arg(flag: &'static str) -> impl Fn(&str) -> Result<crate::interval::Instant> {
    move |s| {
        crate::interval::parse_instant(s).map_err(|r| {
            Error::from(crate::error::Diagnostic::error(format!(
                "invalid {flag}: {r}"
            )))
        })
    }
}
