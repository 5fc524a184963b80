//! Apply a plan to its environment: execute every batch ([`crate::backfill`]), then move the
//! environment in one atomic state commit.
//!
//! Invariants:
//! - Nothing is visible in the environment before the final commit; that commit names the
//!   revision the plan was made against, so a concurrent change makes it fail, never merge.
//! - The loser of such a race is told which commit moved the environment and what to do for
//!   the command that started it ([`Trigger`]).
//! - The first SIGINT/SIGTERM stops new batches; the second ends the process at once. Either
//!   way an interrupted apply continues with `apply --resume`.

use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::backfill::Trigger;
use crate::backfill::{self, Apply, ExecOptions, Report};
use crate::error::{Diagnostic, Error, Result};
use crate::names::ApplyId;
use crate::plan::Plan;
use crate::printer::Printer;
use crate::project::Config;
use crate::state::progress::{self, ProgressStore};
use crate::state::store::conflict_error;
use crate::state::{Conflict, State, StateStore};

/// Set by SIGINT/SIGTERM while batches run: no new batch starts.
static INTERRUPT: AtomicBool = AtomicBool::new(false);

/// Stop gracefully on the first SIGINT/SIGTERM (no new batch starts; running batches finish);
/// exit at once on the second. Installed once per process, before the first batch.
fn install_interrupt(printer: Printer) {
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
                            printer.note(
                                "stopping now; batches that were running are recomputed on resume",
                            );
                            // Work running on a remote engine stops with us.
                            crate::engine::interrupt_running();
                            // The conventional status of a process ended by SIGINT.
                            std::process::exit(130);
                        }
                        printer.note(
                            "stopping: no new batch starts, running batches finish (signal again to stop at once)",
                        );
                    }
                });
            });
    });
}

/// One apply of a plan to its environment.
pub struct Request<'a> {
    /// The project's configuration.
    pub config: &'a Config,
    /// The state store.
    pub store: &'a StateStore,
    /// The state the plan was checked against.
    pub state: &'a State,
    /// The plan.
    pub plan: &'a Plan,
    /// How batches run.
    pub exec: &'a ExecOptions,
    /// Where progress goes.
    pub printer: Printer,
    /// What started it.
    pub trigger: Trigger,
    /// The apply being resumed, if any.
    pub resume: Option<&'a ApplyId>,
}

/// What an apply did.
#[derive(Debug)]
pub struct Applied {
    /// Per model totals.
    pub report: Report,
    /// The environment's revision after the commit.
    pub revision: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Execute the plan's batches and commit the environment change in one state commit.
pub fn apply(r: &Request<'_>) -> Result<Applied> {
    let (store, plan, command) = (r.store, r.plan, r.trigger.command());
    let engine = crate::engine::open(r.config)?;
    // The batches write tables into the warehouse before the first state write: the
    // conditional-write probe goes first.
    store.storage().check_writable()?;
    engine.preflight()?;
    let log = |line: &str| r.printer.line(line);
    let now = chrono::Utc::now();
    let apply_id = Apply {
        id: r
            .resume
            .cloned()
            .unwrap_or_else(|| ApplyId::new(now, &plan.plan_id)),
        trigger: r.trigger,
    };
    let progress_store = ProgressStore::new(store.storage());
    install_interrupt(r.printer);
    let started = std::time::Instant::now();
    let cx = backfill::ApplyRun {
        engine: engine.as_ref(),
        config: r.config,
        state: r.state,
        now,
        started,
        log: &log,
        options: r.exec,
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
            return Err(moved(store, &name, found, r.trigger));
        }
        Err(c) => return Err(conflict_error(&c)),
    };
    let revision = after
        .environment(&plan.environment)
        .map(|e| e.revision)
        .unwrap_or_default();
    let seconds = started.elapsed().as_secs_f64();
    let moved_to = format!("`{}` is now at revision {revision}", plan.environment);
    let _ = progress_store.finish(
        &apply_id.id,
        &progress::Outcome {
            format: progress::PROGRESS_FORMAT.to_string(),
            outcome: progress::ApplyOutcome::Complete,
            finished: chrono::Utc::now(),
            seconds,
            revision: Some(revision),
            message: moved_to.clone(),
        },
    );
    if r.exec.progress.is_json() {
        backfill::display::EventLine {
            outcome: Some("complete".into()),
            message: Some(moved_to),
            models: Some(report.models.clone()),
            seconds: Some(seconds),
            ..backfill::display::EventLine::new("summary", &apply_id.id)
        }
        .emit();
    }
    Ok(Applied {
        report,
        revision,
        seconds,
    })
}

/// The error for an environment that another writer moved while this command computed: which
/// commit moved it, and what to do for this command.
fn moved(store: &StateStore, env: &str, found: Option<u64>, trigger: Trigger) -> Error {
    let command = trigger.command();
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
    let hint = match trigger {
        Trigger::Run => format!(
            "run `tidemark run {env}` again: it continues from the new revision; windows this run wrote are recomputed, never duplicated"
        ),
        Trigger::Promote => format!(
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
