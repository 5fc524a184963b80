//! The engine's check of every model an apply runs, before the apply writes anything.
//!
//! A remote engine (Spark) learns of a model's SQL only when a batch sends it; without this
//! check, a model the engine rejects would fail in its first batch, after the batches of the
//! models upstream of it had committed (into tables no environment points at, but written).
//!
//! Invariants:
//! - Runs after every input check and before the apply's lease, clones and batches: a model
//!   the engine rejects fails the apply with nothing written, naming the model's file and the
//!   line its query starts on, the engine's message under `Caused by:`.
//! - Models are checked in the plan's (topological) order, each over the inputs its first batch
//!   reads: an existing table at its pinned version; a table this apply builds as an empty
//!   relation of the columns the engine reported for its model (a seed's: declared, or
//!   inferred from its file as the load will); a restatement's new generation as the table it
//!   is cloned from. A model reading a table whose columns cannot be known ahead (a type that
//!   cannot be declared) is left to its batch, which checks it before writing its own rows.
//! - A time-range model must return its time column and a unique-key model its key columns:
//!   the batch could not place its rows otherwise.
//! - An engine that does not check ahead ([`crate::engine::Engine::analyze`] answers `None`,
//!   the local engine) costs nothing here.

use std::collections::BTreeMap;

use super::ApplyRun;
use super::catalog::Catalog;
use crate::engine::Input;
use crate::error::{Diagnostic, Error, Result};
use crate::names::TableId;
use crate::plan::{BackfillAction, Plan};
use crate::project::{Kind, ModelName};

/// What a check knows of a model's output ahead of its batches.
enum Known {
    /// Its columns (name, type in the engine's SQL).
    Columns(Vec<(String, String)>),
    /// Nothing usable: models reading it are left to their batches.
    Unknown,
}

/// Check every model `plan` computes on the engine (see the module invariants).
pub fn run(cx: &ApplyRun<'_>, plan: &Plan, catalog: &Catalog<'_>) -> Result<()> {
    let mut known: BTreeMap<ModelName, Known> = BTreeMap::new();
    for m in &plan.models {
        let Some(b) = &m.backfill else { continue };
        let Some(entry) = catalog.entries.get(&m.name) else {
            continue;
        };
        let rec = &entry.snapshot.model;
        if let Kind::Seed { path } = &rec.kind {
            let columns = crate::engine::seed_columns(&cx.config.root.join(path), &rec.columns)?;
            known.insert(m.name.clone(), typed(columns));
            continue;
        }
        if b.action == BackfillAction::LoadSeed {
            continue;
        }
        let Some(inputs) = inputs(cx, plan, catalog, &m.name, &known)? else {
            known.insert(m.name.clone(), Known::Unknown);
            continue;
        };
        let window = b
            .intervals
            .batches(b.interval_unit, b.batch_size.max(1))
            .first()
            .copied()
            .unwrap_or_else(|| b.interval_unit.last_complete(plan.execution_time));
        let sql = catalog.render(&m.name, window, entry.table.as_deref())?;
        let columns = match cx.engine.analyze(&inputs, &sql) {
            Ok(Some(columns)) => columns,
            // This engine checks models in their batches.
            Ok(None) => return Ok(()),
            Err(e) if e.is_transient() || matches!(e, Error::Bug(_)) => return Err(e),
            Err(e) => return Err(rejected(cx, &m.name, &rec.file, e)),
        };
        let names: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
        let required: &[String] = match &rec.kind {
            Kind::IncrementalByTimeRange { time_column, .. } => std::slice::from_ref(time_column),
            Kind::IncrementalByUniqueKey { unique_key, .. } => unique_key,
            _ => &[],
        };
        for c in required {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(c)) {
                return Err(Diagnostic::error(format!(
                    "the query of `{}` returns no column `{c}`, which its kind needs",
                    m.name
                ))
                .at(crate::project::model::query_location(
                    &cx.config.root,
                    std::path::Path::new(&rec.file),
                ))
                .note(format!("it returns: {}", names.join(", ")))
                .hint(format!(
                    "return `{c}` from the query, or change the model's kind"
                ))
                .into());
            }
        }
        known.insert(m.name.clone(), typed(columns));
    }
    Ok(())
}

fn typed(columns: crate::engine::Analyzed) -> Known {
    columns
        .into_iter()
        .map(|(c, t)| Some((c, t?)))
        .collect::<Option<Vec<_>>>()
        .map_or(Known::Unknown, Known::Columns)
}

/// The inputs the first batch of `name` reads, tables this apply builds standing in as empty
/// relations; `None` when one of them cannot be known ahead.
fn inputs(
    cx: &ApplyRun<'_>,
    plan: &Plan,
    catalog: &Catalog<'_>,
    name: &ModelName,
    known: &BTreeMap<ModelName, Known>,
) -> Result<Option<Vec<Input>>> {
    let mut out = Vec::new();
    let mut inputs = catalog.inputs_of(name)?;
    let Some(entry) = catalog.entries.get(name) else {
        return Ok(None);
    };
    if entry.snapshot.model.self_referencing
        && let Some(table) = &entry.table
    {
        let columns = &entry.snapshot.model.columns;
        inputs.push(super::job::own_output(name, table, entry.version, columns));
    }
    for input in inputs {
        let Input::Table {
            name: parent,
            version: None,
            ..
        } = &input
        else {
            out.push(input);
            continue;
        };
        // Not built yet: this apply builds it, or clones it from an earlier generation.
        if let Some(from) = clone_source(plan, parent)
            && cx.engine.table_info(&from)?.is_some()
        {
            out.push(Input::Table {
                name: parent.clone(),
                table: from,
                version: None,
            });
            continue;
        }
        match known.get(parent) {
            Some(Known::Columns(columns)) => out.push(Input::Empty {
                name: parent.clone(),
                columns: columns.clone(),
            }),
            // Columns unknown ahead, or a table neither built before nor by this apply (its
            // batch reports it).
            _ => return Ok(None),
        }
    }
    Ok(Some(out))
}

fn clone_source(plan: &Plan, name: &ModelName) -> Option<TableId> {
    plan.target.get(name).and_then(|t| t.clone_from.clone())
}

/// The engine's rejection of `name`'s query, at the model's file.
fn rejected(cx: &ApplyRun<'_>, name: &ModelName, file: &str, e: Error) -> Error {
    let location =
        crate::project::model::query_location(&cx.config.root, std::path::Path::new(file));
    let cause = e
        .diagnostics()
        .first()
        .and_then(|d| d.cause.as_deref().map(str::to_string))
        .unwrap_or_else(|| e.summary());
    Diagnostic::error(format!(
        "the engine rejects the query of `{name}`; nothing was written"
    ))
    .at(location)
    .caused_by(cause)
    .hint("the SQL must be one the engine accepts (Spark SQL for `[engine] kind = \"spark\"`); fix the model and plan again")
    .into()
}
