//! `tidemark promote ENV [--to prod]`: make the target environment point at ENV's snapshots
//! in one atomic state commit. What a promotion computes and refuses is
//! [`crate::env::promote`]'s.

use super::{apply_and_show, load, show_plan};
use crate::env::apply::Trigger;
use crate::env::promote::{gaps, plan as promotion};
use crate::error::{Diagnostic, ExitStatus, Result};
use crate::printer::plural;
use crate::settings::{PlanFormat, Promote, Settings};
use crate::state::StateStore;

/// Run `promote`.
pub fn run(ctx: &Settings, args: &Promote, out: &mut dyn std::io::Write) -> Result<ExitStatus> {
    let loaded = load(ctx)?;
    let store = StateStore::open_with(
        &loaded.project.config.warehouse,
        &loaded.project.config.storage,
    )?;
    let state = store.read()?;
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
    let mut gates =
        crate::env::gates::evaluate(engine.as_ref(), &state, &plan, &loaded.project.config.root)?;
    let accepted = crate::env::gates::accept(
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
            gates: &'a crate::env::gates::GateReport,
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
            super::emit(out, &gate_text(&gates, args.format == PlanFormat::Markdown))?;
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

/// The gates' verdict: a table of violations (model, gate, window, expected, found), or that
/// every gate passed; and what reading the figures cost.
fn gate_text(r: &crate::env::gates::GateReport, markdown: bool) -> String {
    let gates: usize = r.checked.values().map(Vec::len).sum();
    let mut s = if markdown {
        "\n#### Promotion gates\n\n".to_string()
    } else {
        "\nPromotion gates:\n".to_string()
    };
    if r.violations.is_empty() {
        s.push_str(&format!(
            "{} of {} passed\n",
            plural(gates as u64, "gate", "gates"),
            plural(r.checked.len() as u64, "model", "models")
        ));
    } else if markdown {
        s.push_str("| Model | Gate | Window | Expected | Found | |\n|---|---|---|---|---|---|\n");
        for v in &r.violations {
            s.push_str(&format!(
                "| `{}` | `{}` | {} | {} | {} | {} |\n",
                v.model,
                v.gate,
                v.window,
                v.expected,
                v.found,
                if v.accepted {
                    "accepted"
                } else {
                    "**violated**"
                }
            ));
        }
    } else {
        let w = |f: &dyn Fn(&crate::env::gates::Violation) -> String, h: &str| {
            r.violations
                .iter()
                .map(|v| f(v).chars().count())
                .max()
                .unwrap_or(0)
                .max(h.len())
        };
        let (wm, wg, ww, we) = (
            w(&|v| v.model.to_string(), "model"),
            w(&|v| v.gate.clone(), "gate"),
            w(&|v| v.window.clone(), "window"),
            w(&|v| v.expected.clone(), "expected"),
        );
        s.push_str(&format!(
            "  {:wm$}  {:wg$}  {:ww$}  {:we$}  found\n",
            "model", "gate", "window", "expected"
        ));
        for v in &r.violations {
            s.push_str(&format!(
                "  {:wm$}  {:wg$}  {:ww$}  {:we$}  {}{}\n",
                v.model.as_str(),
                v.gate,
                v.window,
                v.expected,
                v.found,
                if v.accepted { "  (accepted)" } else { "" }
            ));
        }
    }
    s.push_str(&format!(
        "{}cost: {} and {} read\n",
        if markdown { "\n" } else { "" },
        plural(
            r.partitions_read,
            "partition's figures",
            "partitions' figures"
        ),
        plural(r.queries, "aggregate query", "aggregate queries")
    ));
    s
}
