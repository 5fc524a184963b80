//! `tidemark plan`: compare the project with an environment and show what would change and be
//! computed; optionally save the plan for `apply`, or apply it at once.

use super::{apply_and_show, emit, load_with_state, parse_instant_arg, show_plan};
use crate::env::apply::Trigger;
use crate::error::{ExitStatus, Result};
use crate::plan::{self, Options, Plan};
use crate::settings::{self, PlanFormat, Settings};
use crate::state::StateStore;

/// Run `plan`.
pub fn run(ctx: &Settings, p: &settings::Plan, out: &mut dyn std::io::Write) -> Result<ExitStatus> {
    let args = &p.args;
    let (loaded, store, state) = load_with_state(ctx)?;
    let opts = Options {
        environment: p.environment.clone(),
        create_from: p.create_from.clone(),
        start: args
            .start
            .as_deref()
            .map(parse_instant_arg("--start"))
            .transpose()?,
        end: args
            .end
            .as_deref()
            .map(parse_instant_arg("--end"))
            .transpose()?,
        restate: args.restate_model.clone(),
        select: args.select_model.clone(),
        forward_only: args.forward_only,
        skip_backfill: args.skip_backfill,
        breaking: args.breaking.clone(),
        non_breaking: args.non_breaking.clone(),
        with_local_changes: args.with_local_changes,
        execution_time: ctx.execution_time,
        mode: plan::Mode::Local,
        late: super::source_logs(&loaded.project.config, &state, &p.environment)?,
        restate_late: args.restate_late,
        restate_below: std::collections::BTreeMap::new(),
    };
    let plan = plan::build(&loaded.project, &loaded.fingerprints, &state, &opts)?;
    if let Some(path) = &args.out {
        plan::file::save(&plan, path)?;
    }
    show_plan(&plan, args.format, out)?;
    if args.format != PlanFormat::Json {
        estimates(&plan, &store, ctx.exec.workers.get(), args.format, out)?;
    }
    if args.run_tests && !tests_pass(ctx, &loaded.project, &plan)? {
        return Ok(ExitStatus::Failure);
    }
    if args.apply {
        if !plan.has_work() {
            ctx.printer.note(&format!(
                "nothing to apply: `{}` is up to date",
                plan.environment
            ));
            return Ok(ExitStatus::Success);
        }
        return apply_and_show(
            ctx,
            &loaded.project.config,
            &store,
            &state,
            &plan,
            Trigger::Plan,
            None,
            out,
        );
    }
    let found = args.check && (plan.has_work() || plan.late_data.is_some());
    super::release((loaded, state, plan));
    Ok(ExitStatus::found(found))
}

/// Run the unit tests of the models `plan` adds or changes; report them on stderr. `false`: one
/// failed (nothing is applied).
fn tests_pass(ctx: &Settings, project: &crate::project::Project, plan: &Plan) -> Result<bool> {
    use crate::backfill::unit_tests;
    let (tests, problems) = crate::project::unit_tests::load_all(&project.config.root);
    if !problems.is_empty() {
        return Err(crate::error::Error::User(problems));
    }
    let changed: std::collections::BTreeSet<&crate::project::ModelName> = plan
        .models
        .iter()
        .filter(|m| !matches!(m.change, plan::Change::Removed | plan::Change::Unchanged))
        .map(|m| &m.name)
        .collect();
    let selected: Vec<_> = tests
        .iter()
        .filter(|t| changed.contains(&t.model))
        .collect();
    if selected.is_empty() {
        ctx.printer
            .note("unit tests: none of the changed models has a test");
        return Ok(true);
    }
    let outcomes = unit_tests::run_all(project, &selected, ctx.execution_time)?;
    for line in unit_tests::text(&outcomes)
        .lines()
        .filter(|l| !l.is_empty())
    {
        ctx.printer.note(line);
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if failed > 0 {
        ctx.printer.error(&crate::error::Error::from(
            crate::error::Diagnostic::error(format!(
                "{} of the changed models failed; nothing was applied",
                crate::printer::plural(failed as u64, "unit test", "unit tests")
            ))
            .hint("fix the model or the test, then plan again (`tidemark test MODEL` runs one model's tests)"),
        ));
    }
    Ok(failed == 0)
}

/// Print what the plan's backfills are expected to cost, from earlier applies' batches.
fn estimates(
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
    let progress = crate::state::progress::ProgressStore::new(store.storage());
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
