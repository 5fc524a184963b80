//! `tidemark promote ENV [--to prod]`: make the target environment point at ENV's snapshots
//! in one atomic state commit. What a promotion computes and refuses is
//! [`crate::env::promote`]'s.

use super::{apply_and_show, load_with_state, show_plan};
use crate::env::apply::Trigger;
use crate::env::promote::{gaps, plan as promotion};
use crate::error::{Diagnostic, ExitStatus, Result};
use crate::printer::plural;
use crate::settings::{PlanFormat, Promote, Settings};

/// Run `promote`.
pub fn run(ctx: &Settings, args: &Promote, out: &mut dyn std::io::Write) -> Result<ExitStatus> {
    let (loaded, store, state) = load_with_state(ctx)?;
    let plan = promotion(
        &loaded.project,
        &loaded.fingerprints,
        &state,
        &args.env,
        &args.to,
        ctx.execution_time,
    )?;
    let mut plan = plan;
    let engine = crate::engine::open(&loaded.project.config)?;
    let mut gates = crate::backfill::gates::evaluate(
        engine.as_ref(),
        &state,
        &plan,
        &loaded.project.config.root,
    )?;
    let accepted = crate::backfill::gates::accept(
        &mut gates,
        &args.accept,
        &crate::state::progress::current_user(),
        args.reason.as_deref(),
    )?;
    if !accepted.is_empty() {
        plan.accepted_gates = accepted;
        plan.plan_id = crate::plan::plan_id(&plan)?;
    }
    if args.format == PlanFormat::Json && !gates.checked.is_empty() {
        #[derive(serde::Serialize)]
        struct WithGates<'a> {
            plan: &'a crate::plan::Plan,
            gates: &'a crate::backfill::gates::GateReport,
        }
        super::emit_json(
            out,
            &WithGates {
                plan: &plan,
                gates: &gates,
            },
        )?;
    } else {
        show_plan(&plan, args.format, out)?;
        if !gates.checked.is_empty() {
            super::emit(
                out,
                &crate::backfill::gates::table(
                    &gates,
                    "Promotion gates",
                    args.format == PlanFormat::Markdown,
                ),
            )?;
        }
    }
    let gaps = gaps(&plan, &state);
    for (name, g) in &gaps {
        ctx.printer.note(&format!(
            "{name}: `{}` has {} that `{}` would not have after the promotion",
            args.to,
            crate::plan::render::windows(g),
            args.env
        ));
    }
    if args.check {
        return Ok(ExitStatus::found(plan.has_work() || gates.blocking() > 0));
    }
    if gates.blocking() > 0 {
        ctx.printer.error(&crate::error::Error::from(Diagnostic::error(format!(
            "promotion gates refuse `{}`: {} not accepted; nothing was promoted",
            args.env,
            plural(gates.blocking() as u64, "violation", "violations")
        ))
        .hint(format!(
            "fix the data in `{}`, or accept what is right with `--accept MODEL:GATE --reason \"…\"`",
            args.env
        ))));
        return Ok(ExitStatus::Failure);
    }
    if !gaps.is_empty() && !args.allow_gaps {
        return Err(Diagnostic::error(format!(
            "promoting `{}` would leave gaps in `{}` ({})",
            args.env,
            args.to,
            plural(gaps.len() as u64, "model", "models")
        ))
        .hint("compute them in the environment first (e.g. plan it without `--start`/`--end`), or pass `--allow-gaps`")
        .into());
    }
    if !plan.has_work() {
        ctx.printer.note(&format!(
            "nothing to promote: `{}` already points at `{}`'s snapshots",
            args.to, args.env
        ));
        return Ok(ExitStatus::Success);
    }
    apply_and_show(
        ctx,
        &loaded.project.config,
        &store,
        &state,
        &plan,
        Trigger::Promote,
        None,
        out,
    )
}
