//! One batch of an apply: from the batch graph's node to an engine job and back to a result.
//!
//! Invariants:
//! - The job is built under the catalog lock from the versions current at that moment; every
//!   upstream batch it depends on has completed, and the catalog's version of a table only
//!   moves forward, so the job reads all of its parents' overlapping windows.
//! - A batch whose blocking audit fails is a failure (not transient): the engine audits the rows
//!   before committing them, so nothing is written, the batch is never COMPLETE, and the
//!   environment never points at it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::batches::{Batch, ModelWork};
use super::catalog::Catalog;
use super::{ApplyRun, audit, check_seed, context_error};
use crate::engine::{AuditJob, BatchJob, BatchReport, Input, WriteMode};
use crate::error::{Diagnostic, Error, Result};
use crate::interval::{Interval, format_ts};
use crate::plan::{BackfillAction, PlanModel};
use crate::project::{Kind, ModelName};

/// What a completed batch produced.
#[derive(Debug, Clone, Default)]
pub struct BatchOut {
    /// The engine's report (default for a view check).
    pub report: BatchReport,
    /// Physical table (`None` for views).
    pub table: Option<crate::names::TableId>,
    /// Inputs read and their versions.
    pub inputs: BTreeMap<String, Option<u64>>,
    /// Failed non-blocking audits: (audit, offending rows).
    pub warnings: Vec<(String, u64)>,
    /// Datasets read, with their versions (lineage).
    pub datasets: Vec<super::lineage::Dataset>,
    /// The table written, at the version written (lineage).
    pub output: Option<super::lineage::Dataset>,
}

/// Everything fixed per model for its batches.
pub struct ModelJob {
    /// How the batches are computed.
    pub action: BackfillAction,
    /// Rendered audits.
    pub audits: Vec<AuditJob>,
}

/// The windows a model's work is cut into, and whether they are time slices.
pub fn work_of(m: &PlanModel, kind: &Kind, self_ref: bool, now: Interval) -> Option<ModelWork> {
    let b = m.backfill.as_ref()?;
    let unit = b.interval_unit;
    let windowed = matches!(
        (kind, b.action),
        (
            Kind::IncrementalByTimeRange { .. } | Kind::IncrementalByUniqueKey { .. },
            BackfillAction::Compute
        )
    );
    let windows = if windowed {
        b.intervals.batches(unit, b.batch_size.max(1))
    } else {
        vec![b.intervals.span().unwrap_or(now)]
    };
    let (sequential, concurrency) = match kind {
        Kind::IncrementalByTimeRange {
            batch_concurrency, ..
        } => (
            self_ref,
            batch_concurrency.map_or(usize::MAX, |c| c as usize),
        ),
        Kind::IncrementalByUniqueKey { .. } => (true, 1),
        _ => (self_ref, usize::MAX),
    };
    Some(ModelWork {
        name: m.name.clone(),
        windows,
        windowed,
        sequential,
        concurrency: if sequential { 1 } else { concurrency },
        // Only time slices have a fan-out to protect; a whole-table batch is all of its work.
        canary: windowed
            && (m.restated
                || matches!(
                    m.change,
                    crate::plan::Change::Added | crate::plan::Change::DirectlyModified
                )),
    })
}

/// Run one batch (one attempt).
pub fn run(
    cx: &ApplyRun<'_>,
    catalog: &Mutex<Catalog<'_>>,
    jobs: &BTreeMap<ModelName, ModelJob>,
    b: &Batch,
    txn_version: i64,
) -> Result<BatchOut> {
    let mj = jobs
        .get(&b.model)
        .ok_or_else(|| Error::Bug(format!("no job for {}", b.model)))?;
    let name = &b.model;
    let lock = || {
        catalog
            .lock()
            .map_err(|_| Error::Bug("the catalog lock is poisoned".into()))
    };
    let (entry, inputs, sql, table) = {
        let cat = lock()?;
        let entry = cat
            .entries
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Bug(format!("{name} is not in the plan's target")))?;
        let Some(table) = entry.table.clone() else {
            // A view: nothing is stored, but check now that it reads what it should.
            let inputs = cat.inputs(std::slice::from_ref(name))?;
            drop(cat);
            cx.engine
                .query(&inputs, &format!("SELECT * FROM {name} LIMIT 0"))
                .map_err(|e| context_error(e, &format!("the view {name} does not run")))?;
            return Ok(BatchOut {
                datasets: datasets_of(cx, &inputs),
                inputs: versions_of(&inputs),
                ..BatchOut::default()
            });
        };
        let inputs = cat.inputs_of(name)?;
        let sql = match entry.snapshot.model.kind {
            Kind::Seed { .. } => String::new(),
            _ => cat.render(name, b.window, Some(&table))?,
        };
        (entry, inputs, sql, table)
    };
    let rec = &entry.snapshot.model;
    let write = match &rec.kind {
        Kind::IncrementalByTimeRange {
            time_column,
            format,
            ..
        } if mj.action == BackfillAction::Compute => WriteMode::TimeRange {
            time_column: time_column.clone(),
            format: format.clone(),
            unit: rec.interval_unit,
            window: b.window,
        },
        Kind::IncrementalByUniqueKey { unique_key, .. } => WriteMode::UniqueKey {
            key: unique_key.clone(),
        },
        Kind::Seed { path } => {
            let file = cx.config.root.join(path);
            check_seed(&file, &entry.snapshot)?;
            WriteMode::Seed {
                path: file,
                columns: rec.columns.clone(),
            }
        }
        _ => WriteMode::Full,
    };
    let mut inputs = inputs;
    if rec.self_referencing {
        // Its own previous output: the latest version (this apply's earlier batches
        // included), or before the first batch an empty relation of the declared columns.
        let latest = cx.engine.table_info(&table)?.map(|i| i.version);
        inputs.push(own_output(name, &table, latest, &rec.columns));
    }
    let window_id = if b.windowed || matches!(write, WriteMode::UniqueKey { .. }) {
        format!("{}/{}", format_ts(b.window.start), format_ts(b.window.end))
    } else {
        "all".to_string()
    };
    let job = BatchJob {
        model: name.clone(),
        table: table.clone(),
        sql,
        inputs,
        write,
        txn: (format!("tidemark:{table}:{window_id}"), txn_version),
        audits: mj.audits.clone(),
    };
    let report = cx
        .engine
        .run_batch(&job)
        .map_err(|e| context_error(e, &format!("{name} batch {} failed", b.window)))?;
    let mut warnings = Vec::new();
    for a in report.audits.iter().filter(|a| a.failures > 0) {
        if a.blocking {
            return Err(Diagnostic::error(format!(
                "audit `{}` failed for `{name}` in {}: {}; the batch was not written",
                a.name,
                b.window,
                crate::printer::plural(a.failures, "offending row", "offending rows")
            ))
            .hint("no environment changed; fix the model or its data, then resume (batches already complete are skipped)")
            .into());
        }
        warnings.push((a.name.clone(), a.failures));
    }
    lock()?.set_version(&table, report.table_version);
    let output = cx
        .engine
        .table_uri(&table)
        .ok()
        .map(|location| super::lineage::Dataset {
            location,
            version: Some(report.table_version),
        });
    Ok(BatchOut {
        datasets: datasets_of(cx, &job.inputs),
        output,
        inputs: versions_of(&job.inputs),
        report,
        table: Some(table),
        warnings,
    })
}

/// A self-referencing model's input of its own output: its table at `version`, or (`None`:
/// before its first batch) an empty relation of its declared columns.
pub fn own_output(
    name: &ModelName,
    table: &crate::names::TableId,
    version: Option<u64>,
    columns: &[(String, String)],
) -> Input {
    match version {
        Some(v) => Input::Table {
            name: name.clone(),
            table: table.clone(),
            version: Some(v),
        },
        None => Input::Empty {
            name: name.clone(),
            columns: columns.to_vec(),
        },
    }
}

/// The stored datasets `inputs` read (tables and sources), for lineage.
fn datasets_of(cx: &ApplyRun<'_>, inputs: &[Input]) -> Vec<super::lineage::Dataset> {
    inputs
        .iter()
        .filter_map(|i| match i {
            Input::Table { table, version, .. } => Some(super::lineage::Dataset {
                location: cx.engine.table_uri(table).ok()?,
                version: *version,
            }),
            Input::Partitions { table, version, .. } => Some(super::lineage::Dataset {
                location: cx.engine.table_uri(table).ok()?,
                version: Some(*version),
            }),
            Input::Source { path, version, .. } => Some(super::lineage::Dataset {
                location: path.clone(),
                version: *version,
            }),
            Input::View { .. } | Input::Empty { .. } => None,
        })
        .collect()
}

fn versions_of(inputs: &[Input]) -> BTreeMap<String, Option<u64>> {
    inputs
        .iter()
        .map(|i| {
            let v = match i {
                Input::Table { version, .. } | Input::Source { version, .. } => *version,
                Input::Partitions { version, .. } => Some(*version),
                Input::View { .. } | Input::Empty { .. } => None,
            };
            (i.name().to_string(), v)
        })
        .collect()
}

/// The custom audits the backfilled models call: `audits/*.sql`, and inline `AUDIT` blocks of
/// model files, read only when an audit is not found in `audits/` — first in the calling
/// models' own files, then (an inline audit of another model) in every model file. The project
/// load checked them all; an apply does not re-read the whole project for nothing.
fn audit_defs(
    cx: &ApplyRun<'_>,
    catalog: &Catalog<'_>,
    models: &[PlanModel],
) -> Result<BTreeMap<String, crate::project::audit_files::AuditDef>> {
    use crate::project::audit_files::load_all;
    let (root, dialect) = (&cx.config.root, cx.config.dialect());
    let callers: Vec<&crate::state::ModelRecord> = models
        .iter()
        .filter(|m| m.backfill.is_some())
        .filter_map(|m| catalog.entries.get(&m.name).map(|e| &e.snapshot.model))
        .collect();
    let missing = |defs: &BTreeMap<String, crate::project::audit_files::AuditDef>| {
        callers.iter().any(|r| {
            r.audits.iter().any(|a| {
                !crate::project::model::is_builtin_audit(&a.name) && !defs.contains_key(&a.name)
            })
        })
    };
    let attempt = |files: &[(std::path::PathBuf, String)]| {
        let (defs, problems) = load_all(root, dialect, files);
        if problems.is_empty() {
            Ok(defs)
        } else {
            Err(Error::User(problems))
        }
    };
    let defs = attempt(&[])?;
    if !missing(&defs) {
        return Ok(defs);
    }
    let own: Vec<(std::path::PathBuf, String)> = callers
        .iter()
        .filter_map(|r| {
            std::fs::read_to_string(root.join(&r.file))
                .ok()
                .map(|t| (std::path::PathBuf::from(&r.file), t))
        })
        .collect();
    let defs = attempt(&own)?;
    if !missing(&defs) {
        return Ok(defs);
    }
    attempt(&crate::project::model_sources(cx.config))
}

/// Render every model's audits once.
pub fn model_jobs(
    cx: &ApplyRun<'_>,
    catalog: &Catalog<'_>,
    models: &[PlanModel],
) -> Result<BTreeMap<ModelName, ModelJob>> {
    let defs = audit_defs(cx, catalog, models)?;
    let mut out = BTreeMap::new();
    for m in models {
        let Some(b) = &m.backfill else { continue };
        let e = catalog
            .entries
            .get(&m.name)
            .ok_or_else(|| Error::Bug(format!("{} is not in the plan's target", m.name)))?;
        let audits = e
            .snapshot
            .model
            .audits
            .iter()
            .map(|a| audit::render(a, &defs))
            .collect::<Result<Vec<_>>>()?;
        out.insert(
            m.name.clone(),
            ModelJob {
                action: b.action,
                audits,
            },
        );
    }
    Ok(out)
}
