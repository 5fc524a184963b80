//! Carrying out a plan: every batch in dependency order on the engine, then the state changes
//! that make the result visible, committed by the caller in one atomic state commit.
//!
//! Invariants:
//! - Nothing here changes an environment: [`execute`] only writes physical tables (new
//!   versions, new generations) and returns the [`Action`]s of the environment swap. A failure
//!   at any point leaves every environment exactly as it was.
//! - Every input is read at a version fixed before the first batch (the environment's pins, a
//!   table's latest version when it is not pinned, a Delta source's latest version) or, for a
//!   table this apply writes, at the version this apply wrote.
//! - A batch's transaction id is its table and window; its transaction version is the state
//!   commit the plan was made from plus one. Re-running the same plan after a crash therefore
//!   skips batches whose commit landed; a later plan recomputes (idempotently, as an overwrite).
//! - Input checks (sources, the engine's check of every model, [`precheck`]) all come before
//!   the first write of an apply: its lease, clones, progress records and batches.

pub mod audit;
pub mod batches;
pub mod canary;
pub mod catalog;
mod clones;
pub mod display;
pub mod estimate;
pub mod gates;
pub mod job;
mod lease;
pub mod lineage;
mod precheck;
mod prepare;
mod review;
pub mod scheduler;
mod track;
pub mod unit_tests;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::engine::Engine;
use crate::error::{Diagnostic, Error, Result};
use crate::interval::format_ts;
use crate::plan::Plan;
use crate::project::{Config, ModelName, SourceFormat};
use crate::state::progress::{self, BatchRecord, ProgressStore, Status};
use crate::state::{Action, Snapshot, State, StateStore, TableId};
use batches::Batch;
use display::EventLine;
pub use display::ProgressMode;
use scheduler::{Event, Stop};
use track::Tracker;

/// What one model's batches wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelRun {
    pub name: String,
    /// Physical table.
    pub table: Option<TableId>,
    /// Batches complete (in this run or an earlier attempt of the same apply).
    pub batches: u64,
    /// Batches whose commit had landed before (an interrupted earlier attempt).
    pub already_committed: u64,
    /// Batches that failed.
    pub failed: u64,
    /// Batches that did not run (stopped early, or upstream failed).
    pub not_run: u64,
    /// Rows written.
    pub rows: u64,
    /// Rows outside their batch's window (not written).
    pub dropped: u64,
    /// Bytes of the written partitions.
    pub bytes: u64,
    /// Seconds spent in batches (summed over workers).
    pub seconds: f64,
    /// Failed non-blocking audits: (audit, offending rows).
    pub warnings: Vec<(String, u64)>,
    /// Delta version of the table afterwards.
    pub table_version: Option<u64>,
}

/// What an apply did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The apply's id (its progress records).
    pub apply_id: String,
    /// Per model, in plan order.
    pub models: Vec<ModelRun>,
    /// Delta sources and the versions read.
    pub source_versions: BTreeMap<ModelName, u64>,
}

/// How batches are run: the limits and policies of `--workers`, `--retries`, `--canary`, ...
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Worker threads.
    pub workers: std::num::NonZeroUsize,
    /// Extra attempts for transient failures.
    pub retries: u32,
    /// First batches of each directly modified, added or restated model run before the rest.
    pub canary: usize,
    /// `--canary-gate`: the canary models' gates are checked on their canary batches.
    pub canary_gate: bool,
    /// `--accept MODEL:GATE`: canary-gate violations accepted.
    pub accept: Vec<String>,
    /// `--reason`: why.
    pub reason: Option<String>,
    /// Failed batches after which no new batch starts.
    pub max_failures: std::num::NonZeroUsize,
    /// Newest windows first.
    pub newest_first: bool,
    /// Time box: no batch starts after it is spent.
    pub max_duration: Option<Duration>,
    /// Concurrent batches reading one external source.
    pub max_source_reads: Option<std::num::NonZeroUsize>,
    /// How progress is shown.
    pub progress: ProgressMode,
    /// `--lineage FILE`: OpenLineage events are also appended there.
    pub lineage_file: Option<std::path::PathBuf>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            workers: std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN),
            retries: 3,
            canary: 1,
            canary_gate: false,
            accept: Vec::new(),
            reason: None,
            max_failures: std::num::NonZeroUsize::MIN,
            newest_first: false,
            max_duration: None,
            max_source_reads: None,
            progress: ProgressMode::Auto,
            lineage_file: None,
        }
    }
}

impl ExecOptions {
    fn settings(&self, started: Instant) -> scheduler::Settings {
        scheduler::Settings {
            workers: self.workers,
            retries: self.retries,
            max_failures: self.max_failures,
            newest_first: self.newest_first,
            deadline: self.max_duration.map(|d| started + d),
            max_source_reads: self.max_source_reads,
            backoff: Duration::from_millis(500),
        }
    }
}

/// What started an apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `plan --apply`.
    Plan,
    /// `apply PLAN.json`.
    Apply,
    /// `apply --resume ID`.
    Resume,
    /// `run`.
    Run,
    /// `promote`.
    Promote,
}

impl Trigger {
    /// The command as the user typed it (recorded in the progress table and the state log).
    pub fn command(self) -> &'static str {
        match self {
            Trigger::Plan => "plan --apply",
            Trigger::Apply => "apply",
            Trigger::Resume => "apply --resume",
            Trigger::Run => "run",
            Trigger::Promote => "promote",
        }
    }
}

/// Which apply this is.
#[derive(Debug, Clone)]
pub struct Apply {
    /// Id (a new one, or the one being resumed).
    pub id: crate::names::ApplyId,
    /// The command that runs it.
    pub trigger: Trigger,
}

/// Everything an execution needs.
pub struct ApplyRun<'a> {
    /// The engine.
    pub engine: &'a (dyn Engine + Sync),
    /// The project configuration (sources, seeds and audits live relative to its root).
    pub config: &'a Config,
    /// The state the plan is checked against.
    pub state: &'a State,
    /// "Now" for commit times.
    pub now: DateTime<Utc>,
    /// When this run started.
    pub started: Instant,
    /// Where progress lines go.
    pub log: &'a (dyn Fn(&str) + Sync),
    /// Limits and policies.
    pub options: &'a ExecOptions,
    /// The progress table.
    pub progress: &'a ProgressStore<'a>,
    /// The state (for the apply's lease on the tables it reuses).
    pub store: &'a StateStore,
    /// This apply.
    pub apply: &'a Apply,
    /// Set on SIGINT/SIGTERM: no new batch starts.
    pub interrupt: &'a AtomicBool,
}

/// Refuse a plan that no longer fits the state.
pub fn check_fresh(plan: &Plan, state: &State, config: &Config) -> Result<()> {
    if plan.project != config.name {
        return Err(Diagnostic::error(format!(
            "the plan is for project `{}`, not `{}`",
            plan.project, config.name
        ))
        .hint("apply it from the project it was made in")
        .into());
    }
    let found = state.environment(&plan.environment).map(|e| e.revision);
    if found != plan.environment_revision {
        let shown = |r: Option<u64>| r.map_or("absent".to_string(), |r| format!("revision {r}"));
        return Err(Diagnostic::error(format!(
            "the plan is stale: environment `{}` was {} when planned and is {} now",
            plan.environment,
            shown(plan.environment_revision),
            shown(found)
        ))
        .hint("someone applied, ran or promoted meanwhile; make the plan again and review it")
        .into());
    }
    Ok(())
}

/// Run every batch of `plan`. Returns the report and the state changes to commit.
pub fn execute(cx: &ApplyRun<'_>, plan: &Plan) -> Result<(Report, Vec<Action>)> {
    check_fresh(plan, cx.state, cx.config)?;
    lease::check_not_deleted(cx, plan)?;
    let snapshots = prepare::target_snapshots(plan, cx.state)?;
    // Checked before anything is written (the lease, tables cloned, progress recorded).
    let mut source_versions = BTreeMap::new();
    for (name, s) in &cx.config.sources {
        if !s.path.contains("://") && !std::path::Path::new(&s.path).exists() {
            return Err(Diagnostic::error(format!(
                "the source `{name}` reads {}, which does not exist",
                s.declared_path
            ))
            .hint(format!(
                "fix `path` under [sources.\"{name}\"] in tidemark.toml, or create the data first"
            ))
            .into());
        }
        if s.format == SourceFormat::Delta {
            source_versions.insert(name.clone(), cx.engine.source_version(&s.path)?);
        }
    }
    // Reading the tables before the lease can meet a janitor deleting them (see `lease`).
    let (mut catalog, jobs, graph) = prepare::prepare(cx, plan, snapshots, source_versions)
        .map_err(|e| lease::explain(cx, plan, e))?;
    // From here on, janitor cannot delete what the plan reuses.
    let leased = lease::take(cx, plan)?;
    let limits: BTreeMap<ModelName, usize> = graph
        .1
        .iter()
        .map(|w| (w.name.clone(), w.concurrency))
        .collect();
    let batches = graph.0;

    // Progress: the apply's description, and what earlier attempts completed.
    let info = prepare::apply_info(cx, plan, &batches)?;
    let plan_json = serde_json::to_vec_pretty(plan)
        .map_err(|e| Error::Bug(format!("serializing the plan: {e}")))?;
    cx.progress.begin(&info, &plan_json)?;
    let earlier = cx.progress.records(&cx.apply.id)?;
    let mut done: Vec<Option<job::BatchOut>> = Vec::with_capacity(batches.len());
    for b in &batches {
        let rec = earlier.get(&b.id).filter(|r| {
            r.status == Some(Status::Complete)
                && r.model == b.model.as_str()
                && r.start == format_ts(b.window.start)
                && r.end == format_ts(b.window.end)
        });
        done.push(rec.map(record_out));
    }
    for out in done.iter().flatten() {
        if let (Some(t), v) = (&out.table, out.report.table_version) {
            catalog.set_version(t, v);
        }
    }
    let skipped = done.iter().filter(|d| d.is_some()).count();
    if skipped > 0 {
        let text = format!(
            "resuming apply {}: {skipped} of {} already complete",
            cx.apply.id,
            crate::printer::plural(batches.len() as u64, "batch", "batches")
        );
        let event = EventLine {
            message: Some(text.clone()),
            ..EventLine::new("resumed", &cx.apply.id)
        };
        display::tell(cx, &text, event);
    }
    let report_source_versions = catalog.source_versions.clone();
    let subjects = canary::subjects(plan, &catalog, &batches, cx);
    let catalog = Mutex::new(catalog);
    let attempts: Vec<u32> = batches
        .iter()
        .map(|b| earlier.get(&b.id).map_or(0, |r| r.attempts))
        .collect();
    let done_flags: Vec<bool> = done.iter().map(Option::is_some).collect();
    let lineage_config = crate::project::config::LineageConfig {
        file: cx
            .options
            .lineage_file
            .clone()
            .or_else(|| cx.config.lineage.file.clone()),
        ..cx.config.lineage.clone()
    };
    let lineage = lineage::Lineage::new(
        &lineage_config,
        &cx.config.name,
        &plan.environment,
        cx.apply.id.as_str(),
        plan.models
            .iter()
            .map(|m| (m.name.to_string(), m.fingerprint.clone()))
            .collect(),
        cx.log,
    );
    if let Some(l) = &lineage {
        l.apply("START", None);
    }
    let tracker = Tracker::new(cx, &batches, attempts, &done_flags, lineage.as_ref());
    let settings = cx.options.settings(cx.started);
    // A batch's transaction version is the plan's state commit plus one: a re-run of the same
    // plan recognises its commits; a later plan recomputes (idempotently, as an overwrite).
    let txn_version = i64::try_from(plan.state_seq).unwrap_or(i64::MAX - 1) + 1;
    // Side work for workers with no batch to start (the first batches compute alone, the last
    // ones wait for each other): the new generations are cloned in order (a batch first makes
    // or waits for those it needs), and each canary diff is computed as soon as the model's
    // canary batches completed; the review prints the diffs once every canary completed.
    let tell = |text: &str, e: EventLine| {
        tracker.note(text);
        tracker.emit(e);
    };
    let clones = clones::Clones::new(cx, &catalog, &tell, plan, &batches, &done_flags);
    let early = review::Early::new(&subjects, &done_flags);
    let work = |b: &Batch, _attempt: u32| {
        clones.before(&b.model)?;
        job::run(cx, &catalog, &jobs, b, txn_version)
    };
    let on = |e: Event<'_, job::BatchOut>| {
        let completed = match &e {
            Event::Completed { batch, .. } => Some(batch.id),
            _ => None,
        };
        tracker.event(e);
        if let Some(id) = completed {
            early.completed(id);
        }
    };
    let review = || review::review(cx, &early, &tracker);
    let idle = || clones.next() || early.next(cx, &tracker);
    let finished = scheduler::run(
        &batches,
        done,
        &limits,
        &settings,
        cx.interrupt,
        &work,
        &on,
        &review,
        &idle,
    );
    // A run that completed has made every clone (one with no batch left to run makes them now).
    let failed = incomplete(cx, &batches, &finished).or_else(|| clones.all().err());
    let catalog = catalog
        .into_inner()
        .map_err(|_| Error::Bug("the catalog lock is poisoned".into()))?;
    let report = Report {
        apply_id: cx.apply.id.to_string(),
        models: model_runs(plan, &batches, &finished.results, &tracker),
        source_versions: report_source_versions,
    };
    tracker.close();
    if let Some(l) = lineage {
        match &failed {
            None => l.apply("COMPLETE", None),
            Some(e) if cx.interrupt.load(std::sync::atomic::Ordering::SeqCst) => {
                l.apply("ABORT", Some(&first_line(e)))
            }
            Some(e) => l.apply("FAIL", Some(&first_line(e))),
        }
        l.close();
    }
    if let Some(err) = failed {
        if cx.options.progress.is_json() {
            EventLine {
                outcome: Some("incomplete".into()),
                message: Some(first_line(&err)),
                models: Some(report.models.clone()),
                ..EventLine::new("summary", &cx.apply.id)
            }
            .emit();
        }
        return Err(err);
    }
    let versions: BTreeMap<TableId, u64> = catalog
        .entries
        .values()
        .filter_map(|e| Some((e.table.clone()?, e.version?)))
        .collect();
    let mut actions =
        crate::plan::completed_actions(plan, cx.state, cx.now, &versions, &report.source_versions)?;
    if leased {
        actions.push(lease::release(cx));
    }
    Ok((report, actions))
}

/// A COMPLETE record as the result of its batch.
fn record_out(r: &BatchRecord) -> job::BatchOut {
    job::BatchOut {
        report: crate::engine::BatchReport {
            rows: r.rows,
            dropped: r.dropped,
            bytes: r.bytes,
            checksum: r.checksum.clone().unwrap_or_default(),
            table_version: r.table_version.unwrap_or_default(),
            already_committed: true,
            audits: Vec::new(),
            partitions: None,
        },
        table: r.table.clone(),
        inputs: r.inputs.clone(),
        warnings: r.warnings.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        datasets: Vec::new(),
        output: None,
    }
}

/// Per model, in plan order: what its batches did.
fn model_runs(
    plan: &Plan,
    batches: &[Batch],
    results: &[Option<std::result::Result<job::BatchOut, Error>>],
    tracker: &Tracker<'_, '_>,
) -> Vec<ModelRun> {
    let seconds = tracker.seconds();
    let mut runs: Vec<ModelRun> = Vec::new();
    let mut index: BTreeMap<&ModelName, usize> = BTreeMap::new();
    for m in plan.models.iter().filter(|m| m.backfill.is_some()) {
        index.insert(&m.name, runs.len());
        runs.push(ModelRun {
            name: m.name.to_string(),
            ..ModelRun::default()
        });
    }
    for b in batches {
        let Some(&i) = index.get(&b.model) else {
            continue;
        };
        let run = &mut runs[i];
        run.seconds += seconds.get(b.id).copied().unwrap_or(0.0);
        match &results[b.id] {
            Some(Ok(out)) => {
                run.batches += 1;
                run.table.clone_from(&out.table);
                if out.table.is_some() {
                    let v = out.report.table_version;
                    run.table_version = Some(run.table_version.map_or(v, |x| x.max(v)));
                }
                run.already_committed += u64::from(out.report.already_committed);
                run.rows += out.report.rows;
                run.dropped += out.report.dropped;
                run.bytes += out.report.bytes;
                run.warnings.extend(out.warnings.iter().cloned());
            }
            Some(Err(_)) => run.failed += 1,
            None => run.not_run += 1,
        }
    }
    runs
}

/// The error for an apply that did not complete: what failed, why it stopped, how to resume.
fn incomplete(
    cx: &ApplyRun<'_>,
    batches: &[Batch],
    finished: &scheduler::Finished<job::BatchOut>,
) -> Option<Error> {
    let failed: Vec<(&Batch, &Error)> = batches
        .iter()
        .filter_map(|b| match &finished.results[b.id] {
            Some(Err(e)) => Some((b, e)),
            _ => None,
        })
        .collect();
    let complete = finished
        .results
        .iter()
        .filter(|r| matches!(r, Some(Ok(_))))
        .count();
    if failed.is_empty() && finished.stopped.is_none() && complete == batches.len() {
        return None;
    }
    let why = match finished.stopped {
        Some(Stop::Canary) => "a canary batch failed, so the rest did not start".to_string(),
        Some(Stop::CanaryReview) => {
            "the canary batches violate their model's gates (`--canary-gate`), so the rest did not start"
                .to_string()
        }
        Some(Stop::Failures) => format!(
            "the circuit breaker tripped after {}",
            crate::printer::plural(failed.len() as u64, "failed batch", "failed batches")
        ),
        Some(Stop::Deadline) => "the time box (--max-duration) was spent".to_string(),
        Some(Stop::Interrupted) => "interrupted".to_string(),
        None => format!(
            "{} failed",
            crate::printer::plural(failed.len() as u64, "batch", "batches")
        ),
    };
    let outcome = if failed.is_empty() {
        progress::ApplyOutcome::Paused
    } else {
        progress::ApplyOutcome::Failed
    };
    let message = format!(
        "apply {} {}: {why}; {complete} of {} complete",
        cx.apply.id,
        outcome.as_str(),
        crate::printer::plural(batches.len() as u64, "batch", "batches")
    );
    let _ = cx.progress.finish(
        &cx.apply.id,
        &progress::Outcome {
            format: progress::PROGRESS_FORMAT.to_string(),
            outcome,
            finished: chrono::Utc::now(),
            seconds: cx.started.elapsed().as_secs_f64(),
            revision: None,
            message: message.clone(),
        },
    );
    let mut d = Diagnostic::error(message);
    for (b, e) in failed.iter().take(5) {
        d = d.note(format!("{} {}: {}", b.model, b.window, first_line(e)));
    }
    if failed.len() > 5 {
        d = d.note(format!("... and {} more", failed.len() - 5));
    }
    if finished.stopped == Some(Stop::CanaryReview) {
        return Some(Error::from(d.hint(format!(
            "no environment changed; fix the model and plan again, or accept what is right with `tidemark apply --resume {} --canary-gate --accept MODEL:GATE --reason \"…\"`",
            cx.apply.id
        ))));
    }
    Some(Error::from(d.hint(format!(
        "no environment changed; see `tidemark progress {}`, fix what failed, then `tidemark apply --resume {}` (complete batches are skipped)",
        cx.apply.id, cx.apply.id
    ))))
}

fn first_line(e: &Error) -> String {
    e.summary()
}

/// Refuse a seed whose file changed since the plan recorded its hash (read through a small
/// buffer), so that only reviewed rows are loaded.
fn check_seed(file: &std::path::Path, s: &Snapshot) -> Result<()> {
    let hash = crate::project::seed::hash_file(file)
        .map_err(|e| Error::from(crate::error::io_error("read", file, &e)))?;
    if s.model.seed_hash.as_deref().is_some_and(|h| h != hash) {
        return Err(Diagnostic::error(format!(
            "the seed file {} changed since {} was planned",
            file.display(),
            s.name
        ))
        .hint("make the plan again so that the new seed is reviewed")
        .into());
    }
    Ok(())
}

/// Prefix an engine error with what was being done.
fn context_error(e: Error, what: &str) -> Error {
    let mut first = true;
    e.map_diagnostics(|mut d| {
        if std::mem::take(&mut first) {
            d.message = format!("{what}: {}", d.message);
        }
        d
    })
}

/// `f` of each of `items` on up to `threads` threads taking them from one queue, in `items`'
/// order; `None` for an item whose call panicked.
pub(crate) fn in_parallel<T: Sync, R: Send>(
    threads: usize,
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<Option<R>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.iter().map(|i| Some(f(i))).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return out;
                        };
                        out.push((i, f(item)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    let mut got = done.into_iter().peekable();
    (0..items.len())
        .map(|i| got.next_if(|(j, _)| *j == i).map(|(_, r)| r))
        .collect()
}
