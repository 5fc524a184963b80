//! `tidemark apply PLAN.json` and `tidemark plan --apply`: run a plan's batches, then move the
//! environment in one atomic state commit.

use std::path::Path;

use super::{emit, load};
use crate::backfill::{self, Report, human_bytes};
use crate::cli::{Context, progress};
use crate::engine::LocalEngine;
use crate::error::{Diagnostic, Error, Result, io_error};
use crate::plan::{PLAN_FORMAT, Plan};
use crate::project::{Config, Warehouse};
use crate::state::{State, StateStore};

/// Run `apply FILE`.
pub fn run(ctx: &Context, file: &Path, out: &mut dyn std::io::Write) -> Result<u8> {
    let loaded = load(ctx)?;
    let plan = read_plan(file)?;
    let store = StateStore::open(&loaded.project.config.warehouse)?;
    let state = store.read()?;
    apply(ctx, &loaded.project.config, &store, &state, &plan, out)?;
    Ok(0)
}

/// Read a saved plan, refusing truncated or foreign files.
pub fn read_plan(file: &Path) -> Result<Plan> {
    let text =
        std::fs::read_to_string(file).map_err(|e| Error::from(io_error("read", file, &e)))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::from(
            Diagnostic::error(format!("{} is not a plan file: {e}", file.display()))
                .hint("save a plan with `tidemark plan ENV --out FILE`; the file may be truncated"),
        )
    })?;
    let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
    if format != PLAN_FORMAT {
        return Err(Diagnostic::error(format!(
            "{} has format `{format}`, expected `{PLAN_FORMAT}`",
            file.display()
        ))
        .hint("make the plan again with this version of tidemark")
        .into());
    }
    let plan: Plan = serde_json::from_value(value).map_err(|e| {
        Error::from(Diagnostic::error(format!(
            "{} is not a valid plan: {e}",
            file.display()
        )))
    })?;
    if crate::plan::plan_id(&plan)? != plan.plan_id {
        return Err(Diagnostic::error(format!(
            "{} was modified after it was made (its plan_id does not match its contents)",
            file.display()
        ))
        .hint("apply only plans exactly as `tidemark plan --out` wrote them")
        .into());
    }
    Ok(plan)
}

/// The engine for the project's warehouse.
pub fn engine(config: &Config) -> Result<LocalEngine> {
    match &config.warehouse {
        Warehouse::Local(root) => LocalEngine::new(root),
        Warehouse::ObjectStore(url) => Err(Diagnostic::error(format!(
            "the warehouse `{url}` is on an object store, which this build cannot write to"
        ))
        .hint("use a local warehouse directory")
        .into()),
    }
}

/// Execute `plan` and commit the environment change.
pub fn apply(
    ctx: &Context,
    config: &Config,
    store: &StateStore,
    state: &State,
    plan: &Plan,
    out: &mut dyn std::io::Write,
) -> Result<Report> {
    let engine = engine(config)?;
    let log = |line: &str| progress(ctx, line);
    let cx = backfill::Context {
        engine: &engine,
        config,
        state,
        now: chrono::Utc::now(),
        log: &log,
    };
    let started = std::time::Instant::now();
    let (report, actions) = backfill::execute(&cx, plan)?;
    let message = format!("apply plan {} to {}", plan.plan_id, plan.environment);
    let after = store.transact(&message, |_| Ok(actions.clone()))?;
    let revision = after
        .environment(&plan.environment)
        .map(|e| e.revision)
        .unwrap_or_default();
    emit(
        out,
        &summary(
            &report,
            &plan.environment,
            revision,
            started.elapsed().as_secs_f64(),
        ),
    )?;
    Ok(report)
}

/// The end-of-apply table.
pub fn summary(report: &Report, env: &str, revision: u64, seconds: f64) -> String {
    let mut s = String::new();
    if !report.models.is_empty() {
        let w = report
            .models
            .iter()
            .map(|m| m.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        s.push_str(&format!(
            "{:<w$}  {:>7}  {:>10}  {:>10}  {:>7}\n",
            "model", "batches", "rows", "bytes", "seconds"
        ));
        for m in &report.models {
            s.push_str(&format!(
                "{:<w$}  {:>7}  {:>10}  {:>10}  {:>7.2}\n",
                m.name,
                m.batches,
                m.rows,
                human_bytes(m.bytes),
                m.seconds
            ));
        }
        let rows: u64 = report.models.iter().map(|m| m.rows).sum();
        let batches: u64 = report.models.iter().map(|m| m.batches).sum();
        s.push_str(&format!(
            "{batches} batch(es), {rows} row(s) in {seconds:.2} s\n"
        ));
        for m in &report.models {
            if m.dropped > 0 {
                s.push_str(&format!(
                    "warning: {} returned {} row(s) outside its windows; they were not written\n",
                    m.name, m.dropped
                ));
            }
            for (a, n) in &m.warnings {
                s.push_str(&format!(
                    "warning: non-blocking audit {a} of {} found {n} row(s)\n",
                    m.name
                ));
            }
        }
    }
    s.push_str(&format!("`{env}` is now at revision {revision}\n"));
    s
}
