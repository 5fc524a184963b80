//! `tidemark apply PLAN.json` and `tidemark plan --apply`: run a plan's batches, then move the
//! environment in one atomic state commit.

use std::path::Path;

use super::{emit, load};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backfill::progress::{self, ProgressStore};
use crate::backfill::{self, ApplyId, Report, human_bytes};
use crate::cli::{Context, progress};
use crate::engine::LocalEngine;
use crate::error::{Diagnostic, Error, Result, io_error};
use crate::plan::{PLAN_FORMAT, Plan};
use crate::project::{Config, Warehouse};
use crate::state::store::conflict_error;
use crate::state::{Conflict, State, StateStore};

/// Run `apply FILE` or `apply --resume ID`.
pub fn run(
    ctx: &Context,
    file: Option<&Path>,
    resume: Option<&str>,
    out: &mut dyn std::io::Write,
) -> Result<u8> {
    let loaded = load(ctx)?;
    let store = StateStore::open(&loaded.project.config.warehouse)?;
    let (plan, id) = match (file, resume) {
        (_, Some(id)) => {
            let progress = ProgressStore::new(store.storage());
            let bytes = progress.plan(id)?.ok_or_else(|| {
                let known = progress.list().unwrap_or_default();
                Error::from(
                    Diagnostic::error(format!("no apply with id `{id}`")).hint(
                        crate::error::did_you_mean(id, known.iter().map(String::as_str))
                            .unwrap_or_else(|| "`tidemark log` lists the applies".to_string()),
                    ),
                )
            })?;
            (
                parse_plan(&bytes, &format!("the plan of apply {id}"))?,
                Some(id),
            )
        }
        (Some(file), None) => {
            let bytes = std::fs::read(file).map_err(|e| Error::from(io_error("read", file, &e)))?;
            (parse_plan(&bytes, &file.display().to_string())?, None)
        }
        (None, None) => {
            return Err(Diagnostic::error("nothing to apply")
                .hint("give a plan file (`tidemark plan ENV --out FILE`) or `--resume APPLY_ID`")
                .into());
        }
    };
    let state = store.read()?;
    let command = if id.is_some() {
        "apply --resume"
    } else {
        "apply"
    };
    apply(
        ctx,
        &loaded.project.config,
        &store,
        &state,
        &plan,
        out,
        command,
        id,
    )?;
    Ok(0)
}

/// Read a saved plan, refusing truncated or foreign files.
pub fn read_plan(file: &Path) -> Result<Plan> {
    let bytes = std::fs::read(file).map_err(|e| Error::from(io_error("read", file, &e)))?;
    parse_plan(&bytes, &file.display().to_string())
}

/// Parse a saved plan (`what` names it in messages).
pub fn parse_plan(bytes: &[u8], what: &str) -> Result<Plan> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        Error::from(
            Diagnostic::error(format!("{what} is not a plan file: {e}"))
                .hint("save a plan with `tidemark plan ENV --out FILE`; the file may be truncated"),
        )
    })?;
    let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
    if format != PLAN_FORMAT {
        return Err(Diagnostic::error(format!(
            "{} has format `{format}`, expected `{PLAN_FORMAT}`",
            what
        ))
        .hint("make the plan again with this version of tidemark")
        .into());
    }
    let plan: Plan = serde_json::from_value(value).map_err(|e| {
        Error::from(Diagnostic::error(format!(
            "{} is not a valid plan: {e}",
            what
        )))
    })?;
    if crate::plan::plan_id(&plan)? != plan.plan_id {
        return Err(Diagnostic::error(format!(
            "{} was modified after it was made (its plan_id does not match its contents)",
            what
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

/// Set by SIGINT/SIGTERM while batches run: no new batch starts.
static INTERRUPT: AtomicBool = AtomicBool::new(false);

/// Stop gracefully on the first SIGINT/SIGTERM (no new batch starts; running batches finish);
/// exit at once on the second. Installed once per process, before the first batch.
fn install_interrupt() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("tidemark-signals".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let mut term = tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::terminate(),
                    )
                    .ok();
                    loop {
                        let got = match term.as_mut() {
                            Some(t) => tokio::select! {
                                _ = tokio::signal::ctrl_c() => true,
                                _ = t.recv() => true,
                            },
                            None => tokio::signal::ctrl_c().await.is_ok(),
                        };
                        if !got {
                            return;
                        }
                        if INTERRUPT.swap(true, Ordering::SeqCst) {
                            eprintln!("stopping now; batches that were running are recomputed on resume");
                            std::process::exit(130);
                        }
                        eprintln!(
                            "stopping: no new batch starts, running batches finish (signal again to stop at once)"
                        );
                    }
                });
            });
    });
}

/// Execute `plan` and commit the environment change. `resume` continues an earlier apply.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    ctx: &Context,
    config: &Config,
    store: &StateStore,
    state: &State,
    plan: &Plan,
    out: &mut dyn std::io::Write,
    command: &str,
    resume: Option<&str>,
) -> Result<Report> {
    let engine = engine(config)?;
    let log = |line: &str| progress(ctx, line);
    let now = chrono::Utc::now();
    let apply_id = ApplyId {
        id: resume.map_or_else(
            || progress::new_apply_id(now, &plan.plan_id),
            str::to_string,
        ),
        command: command.to_string(),
    };
    let progress_store = ProgressStore::new(store.storage());
    install_interrupt();
    let started = std::time::Instant::now();
    let cx = backfill::Context {
        engine: &engine,
        config,
        state,
        now,
        started,
        log: &log,
        options: &ctx.exec,
        progress: &progress_store,
        store,
        apply: &apply_id,
        interrupt: &INTERRUPT,
    };
    let (report, actions) = backfill::execute(&cx, plan)?;
    let message = format!(
        "{command}: plan {} to {} (apply {})",
        plan.plan_id, plan.environment, apply_id.id
    );
    let after = match store.try_transact(&message, |_| Ok(actions.clone()))? {
        Ok(after) => after,
        Err(Conflict::Environment { name, found, .. }) => {
            return Err(moved(store, &name, found, command));
        }
        Err(c) => return Err(conflict_error(&c)),
    };
    let revision = after
        .environment(&plan.environment)
        .map(|e| e.revision)
        .unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    let _ = progress_store.finish(
        &apply_id.id,
        &progress::Outcome {
            format: progress::PROGRESS_FORMAT.to_string(),
            outcome: "complete".to_string(),
            finished: chrono::Utc::now(),
            seconds,
            revision: Some(revision),
            message: format!("`{}` is now at revision {revision}", plan.environment),
        },
    );
    if ctx.exec.progress.is_json() {
        backfill::display::EventLine {
            outcome: Some("complete".into()),
            message: Some(format!(
                "`{}` is now at revision {revision}",
                plan.environment
            )),
            models: Some(report.models.clone()),
            seconds: Some(seconds),
            ..backfill::display::EventLine::new("summary", &apply_id.id)
        }
        .emit();
    }
    emit(out, &summary(&report, &plan.environment, revision, seconds))?;
    Ok(report)
}

/// The error for an environment that another writer moved while this command computed: which
/// commit moved it, and what to do for this command.
fn moved(store: &StateStore, env: &str, found: Option<u64>, command: &str) -> Error {
    let state = store.read().ok();
    let last = state.as_ref().and_then(|s| {
        s.history
            .iter()
            .rev()
            .find(|h| h.environment == env)
            .map(|h| h.seq)
    });
    let by = last
        .and_then(|seq| store.commits(seq, seq).ok()?.into_iter().next())
        .map(|c| {
            format!(
                " by state commit {} at {} (`{}`)",
                c.seq,
                c.at.format("%Y-%m-%dT%H:%M:%SZ"),
                c.message
            )
        })
        .unwrap_or_default();
    let now = found.map_or("deleted".to_string(), |r| format!("at revision {r}"));
    let hint = match command {
        "run" => format!(
            "run `tidemark run {env}` again: it continues from the new revision; windows this run wrote are recomputed, never duplicated"
        ),
        "promote" => format!(
            "look at what `{env}` holds now (`tidemark env show {env}`) and promote again if it is still wanted"
        ),
        _ => format!(
            "make the plan again against the new revision of `{env}` and review it; windows this apply wrote are recomputed, never duplicated"
        ),
    };
    Error::from(
        Diagnostic::error(format!(
            "`{env}` changed while this {command} was computing: it is now {now}{by}, so this {command} did not move it"
        ))
        .hint(hint),
    )
}

/// The end-of-apply table.
pub fn summary(report: &Report, env: &str, revision: u64, seconds: f64) -> String {
    let mut s = String::new();
    if !report.models.is_empty() {
        let w = super::name_width(report.models.iter().map(|m| m.name.as_str()));
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
