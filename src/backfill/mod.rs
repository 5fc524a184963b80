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

pub mod audit;
pub mod batches;
pub mod catalog;
pub mod progress;
pub mod scheduler;

use std::collections::BTreeMap;
use std::time::Instant as Clock;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::engine::{BatchJob, BatchReport, Engine, Input, WriteMode};
use crate::error::{Diagnostic, Error, Result};
use crate::interval::{Interval, format_ts};
use crate::plan::{BackfillAction, Plan, PlanModel};
use crate::project::{Config, Kind, ModelName, SourceFormat};
use crate::state::{Action, Snapshot, State};
use catalog::{Catalog, Entry};

/// What one model's batches wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelRun {
    /// Model.
    pub name: String,
    /// Physical table.
    pub table: Option<String>,
    /// Batches run.
    pub batches: u64,
    /// Batches whose commit had landed before (an interrupted earlier attempt).
    pub already_committed: u64,
    /// Rows written.
    pub rows: u64,
    /// Rows outside their batch's window (not written).
    pub dropped: u64,
    /// Bytes of the written partitions.
    pub bytes: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Failed non-blocking audits: (audit, offending rows).
    pub warnings: Vec<(String, u64)>,
    /// Delta version of the table afterwards.
    pub table_version: Option<u64>,
}

/// What an apply did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Per model, in execution order.
    pub models: Vec<ModelRun>,
    /// Delta sources and the versions read.
    pub source_versions: BTreeMap<ModelName, u64>,
}

/// Everything an execution needs.
pub struct Context<'a> {
    /// The engine.
    pub engine: &'a dyn Engine,
    /// The project configuration (sources, seeds and audits live relative to its root).
    pub config: &'a Config,
    /// The state the plan is checked against.
    pub state: &'a State,
    /// "Now" for commit times.
    pub now: DateTime<Utc>,
    /// Where progress lines go.
    pub log: &'a dyn Fn(&str),
}

/// The snapshot of every model in the plan's target.
fn target_snapshots(plan: &Plan, state: &State) -> Result<BTreeMap<ModelName, Snapshot>> {
    let new: BTreeMap<&str, &Snapshot> =
        plan.snapshots.iter().map(|s| (s.id.as_str(), s)).collect();
    plan.target
        .iter()
        .map(|(name, t)| {
            let s = new
                .get(t.snapshot.as_str())
                .copied()
                .or_else(|| state.snapshots.get(&t.snapshot))
                .ok_or_else(|| {
                    Error::from(
                        Diagnostic::error(format!(
                            "the plan refers to snapshot {} of {name}, which the state no longer has",
                            t.snapshot
                        ))
                        .hint("the janitor removed it; make the plan again"),
                    )
                })?;
            Ok((name.clone(), s.clone()))
        })
        .collect()
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

/// The pins a plan starts from: for each table, the newest version any of the environments
/// involved (target, base, the one definitions come from) pins, so a pin never moves back.
fn initial_pins(plan: &Plan, state: &State) -> BTreeMap<String, u64> {
    let mut pins: BTreeMap<String, u64> = BTreeMap::new();
    for env in [
        plan.base_environment.as_deref(),
        Some(plan.environment.as_str()),
        plan.definitions_from.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(|e| state.environment(e))
    {
        for m in env.models.values() {
            if let (Some(t), Some(v)) = (&m.table, m.table_version) {
                let pin = pins.entry(t.clone()).or_insert(v);
                *pin = (*pin).max(v);
            }
        }
    }
    pins
}

/// Run every batch of `plan`. Returns the report and the state changes to commit.
pub fn execute(cx: &Context<'_>, plan: &Plan) -> Result<(Report, Vec<Action>)> {
    check_fresh(plan, cx.state, cx.config)?;
    let snapshots = target_snapshots(plan, cx.state)?;
    let pins = initial_pins(plan, cx.state);
    let mut entries = BTreeMap::new();
    for (name, s) in snapshots {
        let table = plan.target.get(&name).and_then(|t| t.table.clone());
        let version = match &table {
            Some(t) => match pins.get(t) {
                Some(v) => Some(*v),
                None => cx.engine.table_info(t)?.map(|i| i.version),
            },
            None => None,
        };
        entries.insert(
            name,
            Entry {
                snapshot: s,
                table,
                version,
            },
        );
    }
    let mut source_versions = BTreeMap::new();
    for (name, s) in &cx.config.sources {
        if s.format == SourceFormat::Delta {
            source_versions.insert(name.clone(), cx.engine.source_version(&s.path)?);
        }
    }
    // New generations of restated tables start as zero-copy clones of the current table.
    for (name, t) in &plan.target {
        if let (Some(table), Some(from)) = (&t.table, &t.clone_from) {
            let Some(latest) = cx.engine.table_info(from)?.map(|i| i.version) else {
                continue;
            };
            let v = cx.engine.clone_table(from, latest, table)?;
            (cx.log)(&format!(
                "{name}: new generation {table} cloned from {from} at version {latest} (no data copied)"
            ));
            if let Some(e) = entries.get_mut(name) {
                e.version = Some(v);
            }
        }
    }
    let mut catalog = Catalog::new(
        entries,
        &cx.config.sources,
        source_versions,
        plan_time(plan)?,
    );
    let mut report = Report {
        source_versions: catalog.source_versions.clone(),
        ..Report::default()
    };
    let txn_version = i64::try_from(plan.state_seq).unwrap_or(i64::MAX - 1) + 1;
    for m in &plan.models {
        let Some(b) = &m.backfill else { continue };
        let run = run_model(cx, &mut catalog, m, b.action, txn_version)?;
        report.models.push(run);
    }
    let versions: BTreeMap<String, u64> = catalog
        .entries
        .values()
        .filter_map(|e| Some((e.table.clone()?, e.version?)))
        .collect();
    let actions =
        crate::plan::completed_actions(plan, cx.state, cx.now, &versions, &report.source_versions);
    Ok((report, actions))
}

fn plan_time(plan: &Plan) -> Result<DateTime<Utc>> {
    crate::interval::parse_instant(&plan.execution_time)
        .map(|i| i.at)
        .map_err(|e| {
            Error::from(Diagnostic::error(format!(
                "the plan's execution_time is invalid: {e}"
            )))
        })
}

fn run_model(
    cx: &Context<'_>,
    catalog: &mut Catalog<'_>,
    m: &PlanModel,
    action: BackfillAction,
    txn_version: i64,
) -> Result<ModelRun> {
    let started = Clock::now();
    let entry = catalog
        .entries
        .get(&m.name)
        .cloned()
        .ok_or_else(|| Error::Bug(format!("{} is not in the plan's target", m.name)))?;
    let rec = &entry.snapshot.model;
    let mut run = ModelRun {
        name: m.name.to_string(),
        table: entry.table.clone(),
        ..ModelRun::default()
    };
    let Some(table) = entry.table.clone() else {
        // A view: nothing is stored, but check now that it reads what it should.
        let inputs = catalog.inputs(std::slice::from_ref(&m.name))?;
        cx.engine
            .query(&inputs, &format!("SELECT * FROM {} LIMIT 0", m.name))
            .map_err(|e| context_error(e, &format!("the view {} does not run", m.name)))?;
        (cx.log)(&format!("{}: view checked", m.name));
        run.seconds = started.elapsed().as_secs_f64();
        return Ok(run);
    };
    let audits = rec
        .audits
        .iter()
        .map(|a| audit::render(a, &cx.config.root))
        .collect::<Result<Vec<_>>>()?;
    let unit = rec.interval_unit;
    let b = m
        .backfill
        .as_ref()
        .ok_or_else(|| Error::Bug("no backfill".into()))?;
    let windows: Vec<Interval> = match (&rec.kind, action) {
        (
            Kind::IncrementalByTimeRange { .. } | Kind::IncrementalByUniqueKey { .. },
            BackfillAction::Compute,
        ) => b.intervals.batches(unit, b.batch_size.max(1)),
        _ => vec![
            b.intervals
                .span()
                .unwrap_or_else(|| unit.last_complete(catalog.execution_time)),
        ],
    };
    let total = windows.len();
    for (i, window) in windows.into_iter().enumerate() {
        let write = match &rec.kind {
            Kind::IncrementalByTimeRange {
                time_column,
                format,
                ..
            } if action == BackfillAction::Compute => WriteMode::TimeRange {
                time_column: time_column.clone(),
                format: format.clone(),
                unit,
                window,
            },
            Kind::IncrementalByUniqueKey { unique_key, .. } => WriteMode::UniqueKey {
                key: unique_key.clone(),
            },
            Kind::Seed { path } => {
                let file = cx.config.root.join(path);
                check_seed(&file, &entry.snapshot)?;
                WriteMode::Seed { path: file }
            }
            _ => WriteMode::Full,
        };
        let mut inputs = catalog.inputs_of(&m.name)?;
        if rec.self_referencing {
            // Its own previous output: the latest version (this apply's earlier batches
            // included), or before the first batch an empty relation of the declared columns.
            inputs.push(match cx.engine.table_info(&table)?.map(|i| i.version) {
                Some(v) => Input::Table {
                    name: m.name.clone(),
                    table: table.clone(),
                    version: Some(v),
                },
                None => Input::View {
                    name: m.name.clone(),
                    sql: empty_relation(&rec.columns),
                },
            });
        }
        let sql = match write {
            WriteMode::Seed { .. } => String::new(),
            _ => catalog.render(&m.name, window, Some(&table))?,
        };
        let window_id = match write {
            WriteMode::TimeRange { .. } | WriteMode::UniqueKey { .. } => {
                format!("{}/{}", format_ts(window.start), format_ts(window.end))
            }
            _ => "all".to_string(),
        };
        let job = BatchJob {
            model: m.name.clone(),
            table: table.clone(),
            sql,
            inputs,
            write,
            txn: (format!("tidemark:{table}:{window_id}"), txn_version),
            audits: audits.clone(),
        };
        let batch_started = Clock::now();
        let r = cx
            .engine
            .run_batch(&job)
            .map_err(|e| context_error(e, &format!("{} batch {window} failed", m.name)))?;
        catalog.set_version(&table, r.table_version);
        log_batch(
            cx,
            m,
            i + 1,
            total,
            window,
            &r,
            batch_started.elapsed().as_secs_f64(),
        );
        add(&mut run, &r);
        let failed: Vec<_> = r.audits.iter().filter(|a| a.failures > 0).collect();
        for a in &failed {
            if a.blocking {
                return Err(Diagnostic::error(format!(
                    "audit {} failed for {} in {window}: {} offending row(s)",
                    a.name, m.name, a.failures
                ))
                .hint("no environment changed; fix the model or its data and run the same command again (batches already written are skipped)")
                .into());
            }
            run.warnings.push((a.name.clone(), a.failures));
        }
    }
    run.table_version = catalog.entries.get(&m.name).and_then(|e| e.version);
    run.seconds = started.elapsed().as_secs_f64();
    Ok(run)
}

/// `SELECT CAST(NULL AS type) AS "column", ... WHERE false`: no rows, the declared schema.
/// Types were validated by the SQL parser at load; names are quoted.
fn empty_relation(columns: &[(String, String)]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|(c, t)| format!("CAST(NULL AS {t}) AS \"{}\"", c.replace('"', "\"\"")))
        .collect();
    format!("SELECT {} WHERE false", cols.join(", "))
}

fn add(run: &mut ModelRun, r: &BatchReport) {
    run.batches += 1;
    run.already_committed += u64::from(r.already_committed);
    run.rows += r.rows;
    run.dropped += r.dropped;
    run.bytes += r.bytes;
}

fn log_batch(
    cx: &Context<'_>,
    m: &PlanModel,
    i: usize,
    total: usize,
    window: Interval,
    r: &BatchReport,
    seconds: f64,
) {
    let mut line = format!(
        "{} [{i}/{total}] {window}: {} rows, {}, version {} ({seconds:.2} s)",
        m.name,
        r.rows,
        human_bytes(r.bytes),
        r.table_version
    );
    if r.already_committed {
        line.push_str(", already committed by an earlier attempt");
    }
    if r.dropped > 0 {
        line.push_str(&format!(
            ", {} row(s) outside the window not written",
            r.dropped
        ));
    }
    for a in r.audits.iter().filter(|a| a.failures > 0) {
        line.push_str(&format!(
            ", audit {} {}: {} row(s)",
            a.name,
            if a.blocking { "FAILED" } else { "warned" },
            a.failures
        ));
    }
    (cx.log)(&line);
}

/// `12.3 MiB`.
pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn check_seed(file: &std::path::Path, s: &Snapshot) -> Result<()> {
    let bytes =
        std::fs::read(file).map_err(|e| Error::from(crate::error::io_error("read", file, &e)))?;
    let hash = blake3::hash(&bytes).to_hex().to_string();
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
    match e {
        Error::User(mut d) => {
            if let Some(first) = d.first_mut() {
                first.message = format!("{what}: {}", first.message);
            }
            Error::User(d)
        }
        bug => bug,
    }
}
