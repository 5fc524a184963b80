//! The canary review: once the canary batches of a directly modified or restated model have
//! run, their partitions are compared with the same partitions of the model's previous
//! version (the table the environment reads now) before anything fans out; with
//! `--canary-gate`, the model's promotion gates are checked on them too.
//!
//! Invariants:
//! - Both sides read only the canary partitions (their files alone), each at a fixed version:
//!   the previous side at the environment's pin, the canary side at its latest commit once
//!   the model's canary batches completed, which holds every one of them (a batch of the model
//!   that ran besides, needed by another model's canary, wrote other partitions).
//! - The diff never stops an apply; a failure to compute it is a warning. The gate check fails
//!   closed: a gate that cannot be evaluated stops the fan-out like a violation.
//! - Rows come from per-partition counts and checksums (identical partitions are flagged);
//!   a column's changed share is measured by key when the model has a grain (rows matched on
//!   it whose value differs), otherwise as the share of the canary's values with no
//!   counterpart in the previous version (a multiset difference); matched by key, floating-point
//!   values within a relative 1e-9 of each other are unchanged (a recomputation that sums in
//!   another order differs in the last bits). Sums are of numeric columns
//!   outside the key; by key they come from the same full join when it holds each row of
//!   either side exactly once (its per-side row counts equal the partitions' rows), otherwise
//!   they are read apart. When every partition is identical under the same columns, nothing is
//!   compared: no column changed, every row matched its twin, and the sums are read once.
//! - A side's columns are those of its table (planned, not read); a side without rows in the
//!   canary partitions compares nothing.
//! - The canary side's rows and checksums come from what its batches measured as they wrote
//!   (the same figures a read-back gives) when every canary batch of the model did; otherwise
//!   they are read. The previous side is always read.
//! - Output is deterministic: partitions and columns in order, numbers formatted one way;
//!   several models' diffs are computed at once ([`super::review`]), and printed in model
//!   order.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;

use super::ApplyRun;
use super::batches::Batch;
use super::catalog::Catalog;
use super::gates::{self, GateReport, Side};
use crate::engine::{Checksum, Engine, Input, partition_key};
use crate::error::{Error, Result};
use crate::plan::{Change, Plan};
use crate::project::ModelName;
use crate::project::model::{GateCall, Kind};
use crate::state::{AcceptedGate, TableId};

/// One model the review compares.
#[derive(Debug, Clone)]
pub struct Subject {
    model: ModelName,
    change: &'static str,
    previous: Side,
    table: TableId,
    partitions: BTreeSet<String>,
    /// The canary batches (ids) whose windows make `partitions`.
    batches: Vec<usize>,
    key: Vec<String>,
    gates: Vec<GateCall>,
}

impl Subject {
    /// The model compared.
    pub fn model(&self) -> &ModelName {
        &self.model
    }

    /// Its canary batches (ids).
    pub fn batches(&self) -> &[usize] {
        &self.batches
    }

    /// A subject of `model` with canary batches `batches` (and nothing else), for tests.
    #[cfg(test)]
    pub(super) fn with_batches(model: &str, batches: Vec<usize>) -> Subject {
        let model = ModelName::parse(model).unwrap_or_else(|e| panic!("{model}: {e}"));
        let table = TableId::new(&model, "ab", 0);
        Subject {
            change: "restated",
            previous: Side {
                table: table.clone(),
                version: 0,
            },
            table,
            model,
            partitions: BTreeSet::new(),
            batches,
            key: Vec::new(),
            gates: Vec::new(),
        }
    }
}

/// The models with canary batches that have a previous version to compare with.
pub fn subjects(
    plan: &Plan,
    catalog: &Catalog<'_>,
    batches: &[Batch],
    cx: &ApplyRun<'_>,
) -> Vec<Subject> {
    let mut out = Vec::new();
    for m in &plan.models {
        let change = match m.change {
            Change::DirectlyModified => "directly modified",
            _ if m.restated => "restated",
            _ => continue,
        };
        let (Some(entry), Some(backfill)) = (catalog.entries.get(&m.name), &m.backfill) else {
            continue;
        };
        let model = &entry.snapshot.model;
        if !matches!(model.kind, Kind::IncrementalByTimeRange { .. }) {
            continue;
        }
        let Some(table) = entry.table.clone() else {
            continue;
        };
        let canaries = || {
            batches
                .iter()
                .filter(|b| b.canary && b.model == m.name && b.windowed)
        };
        let partitions: BTreeSet<String> = canaries()
            .flat_map(|b| {
                let unit = backfill.interval_unit;
                let mut keys = Vec::new();
                let mut t = unit.floor(b.window.start);
                while t < b.window.end {
                    keys.push(partition_key(unit, t));
                    t = unit.next(t);
                }
                keys
            })
            .collect();
        if partitions.is_empty() {
            continue;
        }
        let previous = [
            Some(plan.environment.as_str()),
            plan.base_environment.as_deref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|e| cx.state.environment(e))
        .find_map(|env| Side::of(env, &m.name));
        let Some(previous) = previous else {
            continue;
        };
        out.push(Subject {
            model: m.name.clone(),
            change,
            previous,
            table,
            partitions,
            batches: canaries().map(|b| b.id).collect(),
            key: model.grain.iter().map(|k| k.to_ascii_lowercase()).collect(),
            gates: model.gates.clone(),
        });
    }
    out
}

/// Rows of one canary partition on both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionRows {
    /// The partition.
    pub partition: String,
    /// Rows in the previous version.
    pub previous: u64,
    /// Rows in the canary.
    pub canary: u64,
    /// Same rows (checksums equal).
    pub identical: bool,
}

/// One column compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnDiff {
    /// The column.
    pub column: String,
    /// `compared`, `key`, `added`, `removed` or `retyped`.
    pub status: &'static str,
    /// Rows whose value changed (by key), or canary values without a counterpart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<u64>,
    /// `changed` in percent of the rows compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_pct: Option<f64>,
    /// Sum in the previous version (numeric columns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum_previous: Option<f64>,
    /// Sum in the canary (numeric columns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum_canary: Option<f64>,
}

/// The canary of one model against its previous version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryDiff {
    /// The model.
    pub model: ModelName,
    /// `directly modified` or `restated`.
    pub change: String,
    /// The previous version's table and version.
    pub previous_table: String,
    /// Its Delta version.
    pub previous_version: u64,
    /// Per partition.
    pub partitions: Vec<PartitionRows>,
    /// Rows of the previous version in the canary partitions.
    pub rows_previous: u64,
    /// Rows of the canary.
    pub rows_canary: u64,
    /// Columns rows are matched on (the model's grain; empty: none).
    pub key: Vec<String>,
    /// Rows matched on the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
    /// Per column, in the canary's order, removed ones last.
    pub columns: Vec<ColumnDiff>,
}

const PREVIOUS: &str = "tidemark_canary.previous";
/// Relative difference under which two floating-point values of a key compare as unchanged.
const FLOAT_TOLERANCE: f64 = 1e-9;
const CANARY: &str = "tidemark_canary.canary";

/// Scalar parts of a diff (each an aggregate over one source: one row), run as one query.
#[derive(Default)]
struct Parts {
    /// `(SELECT … FROM …)` per part, its columns aliased in one numbering.
    sql: Vec<String>,
    /// Columns so far.
    width: usize,
}

impl Parts {
    /// Add `SELECT select FROM from`; returns the position of its first value.
    fn add(&mut self, select: Vec<String>, from: &str) -> usize {
        let at = self.width;
        if select.is_empty() {
            return at;
        }
        let cols: Vec<String> = select
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{e} AS v{}", at + i))
            .collect();
        self.width += select.len();
        self.sql.push(format!(
            "(SELECT {} FROM {from}) AS p{}",
            cols.join(", "),
            self.sql.len()
        ));
        at
    }

    /// Every part's values in order (nothing to run: none).
    fn run(&self, q: &dyn Fn(&str) -> Result<Vec<RecordBatch>>) -> Result<Vec<Option<f64>>> {
        if self.sql.is_empty() {
            return Ok(Vec::new());
        }
        let b = q(&format!("SELECT * FROM {}", self.sql.join(" CROSS JOIN ")))?;
        Ok(gates::row_numbers(&b))
    }
}

/// `s`'s table at its latest commit, which holds every canary batch.
fn canary_side(engine: &dyn Engine, s: &Subject) -> Result<Side> {
    let version = engine
        .table_info(&s.table)?
        .map(|i| i.version)
        .ok_or_else(|| Error::Bug(format!("the canary table {} has no version", s.table)))?;
    Ok(Side {
        table: s.table.clone(),
        version,
    })
}

/// Compare `s`'s canary with its previous version (see the module invariants).
/// `measured`: the canary side's rows and checksum per partition as its batches measured them
/// while writing, when every canary batch of `s` did (otherwise the canary side is read).
pub fn diff(
    engine: &dyn Engine,
    s: &Subject,
    measured: Option<BTreeMap<String, Checksum>>,
) -> Result<CanaryDiff> {
    let canary = canary_side(engine, s)?;
    let only = Some(&s.partitions);
    let old = engine.partition_stats(&s.previous.table, s.previous.version, only, true)?;
    let new = match measured {
        Some(m) => m,
        None => engine.partition_stats(&canary.table, canary.version, only, true)?,
    };
    let partitions: Vec<PartitionRows> = s
        .partitions
        .iter()
        .map(|k| PartitionRows {
            partition: k.clone(),
            previous: old.get(k).map_or(0, |c| c.rows),
            canary: new.get(k).map_or(0, |c| c.rows),
            identical: old.get(k) == new.get(k),
        })
        .collect();
    let input = |name: &str, side: &Side| -> Result<Input> {
        Ok(Input::Partitions {
            name: ModelName::parse(name).map_err(|r| Error::Bug(format!("{name}: {r}")))?,
            table: side.table.clone(),
            version: side.version,
            keys: s.partitions.clone(),
        })
    };
    let inputs = vec![input(PREVIOUS, &s.previous)?, input(CANARY, &canary)?];
    let q = |sql: &str| engine.query(&inputs, sql);
    let rows_previous = partitions.iter().map(|p| p.previous).sum();
    let rows_canary: u64 = partitions.iter().map(|p| p.canary).sum();
    // Each side's columns, planned without reading; a side without rows compares nothing.
    let schemas = engine.schemas(&inputs, &[PREVIOUS, CANARY])?;
    let schema = |i: usize, rows: u64| schemas.get(i).cloned().flatten().filter(|_| rows > 0);
    let (old_schema, new_schema) = (schema(0, rows_previous), schema(1, rows_canary));
    let old_cols = columns(old_schema.as_ref());
    let new_cols = columns(new_schema.as_ref());
    let keyed = !s.key.is_empty()
        && s.key
            .iter()
            .all(|k| old_cols.contains_key(k) && new_cols.contains_key(k));
    let compared: Vec<&String> = new_cols
        .iter()
        .filter(|(c, t)| old_cols.get(*c) == Some(t) && !(keyed && s.key.contains(c)))
        .map(|(c, _)| c)
        .collect();
    // Every partition identical (rows and checksum) under the same columns: the same rows, so
    // nothing changed, every row has its twin and both sides have the same sums; the comparing
    // queries are skipped (a restatement that changed nothing costs no joins).
    let same = old_cols == new_cols && partitions.iter().all(|p| p.identical);
    // Values are compared only with columns on both sides and something changed.
    let compare = !(same || old_cols.is_empty() || new_cols.is_empty());
    // What is measured, as scalar parts run in one query (one planning, one session): the
    // changed values (one joined part by key, or one multiset difference per column) and the
    // sums of numeric columns outside the key, per side.
    let mut parts = Parts::default();
    let summed = |cols: &BTreeMap<String, DataType>| -> Vec<String> {
        cols.iter()
            .filter(|(c, t)| t.is_numeric() && !s.key.contains(c))
            .map(|(c, _)| c.clone())
            .collect()
    };
    let (old_summed, new_summed) = (summed(&old_cols), summed(&new_cols));
    let sum_of = |alias: &str, cols: &[String]| -> Vec<String> {
        cols.iter()
            .map(|c| format!("SUM(CAST({alias}{c} AS DOUBLE))"))
            .collect()
    };
    // By key: one full join gives the matched rows, the changed values and — when it holds
    // each row of either side exactly once (the key is unique on both) — both sides' sums, so
    // each side is read once.
    let joined = if !(compare && keyed) {
        None
    } else {
        let on = s
            .key
            .iter()
            .map(|k| format!("o.{k} = n.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let both = "o.tidemark_o IS NOT NULL AND n.tidemark_n IS NOT NULL";
        let mut select = vec![format!(
            "CAST(SUM(CASE WHEN {both} THEN 1 ELSE 0 END) AS BIGINT)"
        )];
        select.extend(compared.iter().map(|c| {
            // Floating-point values recomputed in another order differ in their last bits:
            // within FLOAT_TOLERANCE (relative) they count as unchanged.
            let near = if new_cols.get(*c).is_some_and(DataType::is_floating) {
                format!(
                    " OR ABS(o.{c} - n.{c}) <= {FLOAT_TOLERANCE:e} * GREATEST(ABS(o.{c}), ABS(n.{c}))"
                )
            } else {
                String::new()
            };
            format!(
                "CAST(SUM(CASE WHEN NOT ({both}) THEN 0 WHEN o.{c} = n.{c} OR (o.{c} IS NULL AND n.{c} IS NULL){near} THEN 0 ELSE 1 END) AS BIGINT)"
            )
        }));
        select.push("CAST(COUNT(o.tidemark_o) AS BIGINT)".to_string());
        select.push("CAST(COUNT(n.tidemark_n) AS BIGINT)".to_string());
        select.extend(sum_of("o.", &old_summed));
        select.extend(sum_of("n.", &new_summed));
        Some(parts.add(
            select,
            &format!(
                "(SELECT *, 1 AS tidemark_o FROM {PREVIOUS}) AS o \
                 FULL JOIN (SELECT *, 1 AS tidemark_n FROM {CANARY}) AS n ON {on}"
            ),
        ))
    };
    if compare && !keyed {
        // Without a key: one multiset difference per column.
        for c in &compared {
            parts.add(
                vec!["CAST(SUM(CASE WHEN d > 0 THEN d ELSE 0 END) AS BIGINT)".to_string()],
                &format!(
                    "(SELECT v, SUM(s) AS d FROM (SELECT {c} AS v, 1 AS s FROM {CANARY} \
                     UNION ALL SELECT {c} AS v, -1 AS s FROM {PREVIOUS}) AS u GROUP BY v) AS g"
                ),
            );
        }
    }
    // Sums read on their own (positions of each side's first): without the join, or (below)
    // when it repeated rows. Identical sides have the same sums: the previous side's are read.
    let separate = |parts: &mut Parts| {
        let old = parts.add(sum_of("", &old_summed), PREVIOUS);
        let new = if same {
            old
        } else {
            parts.add(sum_of("", &new_summed), CANARY)
        };
        (old, new)
    };
    let mut sums_at = joined.is_none().then(|| separate(&mut parts));
    let mut values = parts.run(&q)?;
    let value = |values: &[Option<f64>], at: usize| values.get(at).copied().flatten();
    let count = |values: &[Option<f64>], at: usize| value(values, at).unwrap_or(0.0) as u64;
    // Every partition identical: nothing changed, every row matched its twin.
    let mut changed: BTreeMap<&String, u64> = BTreeMap::new();
    let mut matched = None;
    if same {
        changed.extend(compared.iter().map(|c| (*c, 0)));
        matched = keyed.then_some(rows_canary);
    } else if let Some(at) = joined {
        matched = Some(count(&values, at));
        for (i, c) in compared.iter().enumerate() {
            changed.insert(c, count(&values, at + 1 + i));
        }
        let seen = at + 1 + compared.len();
        if count(&values, seen) == rows_previous && count(&values, seen + 1) == rows_canary {
            sums_at = Some((seen + 2, seen + 2 + old_summed.len()));
        } else {
            // A key repeated on a side: the join repeated rows, so the sums are read apart.
            let mut apart = Parts::default();
            sums_at = Some(separate(&mut apart));
            values = apart.run(&q)?;
        }
    } else if compare {
        for (i, c) in compared.iter().enumerate() {
            changed.insert(c, count(&values, i));
        }
    }
    let (old_at, new_at) = sums_at.unwrap_or_default();
    let side_sums = |cols: &[String], at: usize| -> BTreeMap<String, Option<f64>> {
        cols.iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), value(&values, at + i)))
            .collect()
    };
    let old_sums = side_sums(&old_summed, old_at);
    let new_sums = side_sums(&new_summed, new_at);
    let base = matched.unwrap_or(rows_canary);
    let mut out: Vec<ColumnDiff> = Vec::new();
    for (c, t) in order(new_schema.as_ref(), &new_cols) {
        let status = match old_cols.get(&c) {
            _ if keyed && s.key.contains(&c) => "key",
            None => "added",
            Some(o) if *o != t => "retyped",
            Some(_) => "compared",
        };
        let n = changed.get(&c).copied();
        out.push(ColumnDiff {
            changed_pct: n.map(|n| percent(n, base)),
            changed: n,
            sum_previous: old_sums.get(&c).copied().flatten(),
            sum_canary: new_sums.get(&c).copied().flatten(),
            status,
            column: c,
        });
    }
    for c in old_cols.keys().filter(|c| !new_cols.contains_key(*c)) {
        out.push(ColumnDiff {
            column: c.clone(),
            status: "removed",
            changed: None,
            changed_pct: None,
            sum_previous: old_sums.get(c).copied().flatten(),
            sum_canary: None,
        });
    }
    Ok(CanaryDiff {
        model: s.model.clone(),
        change: s.change.to_string(),
        previous_table: s.previous.table.to_string(),
        previous_version: s.previous.version,
        partitions,
        rows_previous,
        rows_canary,
        key: if keyed { s.key.clone() } else { Vec::new() },
        matched,
        columns: out,
    })
}

/// Check `s`'s gates on its canary partitions into `report`.
pub fn check_gates(
    engine: &dyn Engine,
    root: &std::path::Path,
    s: &Subject,
    report: &mut GateReport,
) -> Result<()> {
    if s.gates.is_empty() {
        return Ok(());
    }
    let canary = canary_side(engine, s)?;
    gates::check_model(
        engine,
        root,
        &s.model,
        &s.gates,
        &s.previous,
        &canary,
        Some(&s.partitions),
        report,
    )
}

/// The review's verdict on the gates: accepted violations and whether the rest may start.
pub struct Verdict {
    /// Every gate checked.
    pub report: GateReport,
    /// What `--accept` accepted.
    pub accepted: Vec<AcceptedGate>,
}

/// Run every subject's gates and apply `--accept`.
pub fn gate(cx: &ApplyRun<'_>, subjects: &[Subject]) -> Result<Verdict> {
    let mut report = GateReport {
        format: "tidemark.gates/v1",
        ..GateReport::default()
    };
    for s in subjects {
        check_gates(cx.engine, &cx.config.root, s, &mut report)?;
    }
    let accepted = gates::accept(
        &mut report,
        &cx.options.accept,
        &crate::state::progress::current_user(),
        cx.options.reason.as_deref(),
    )?;
    Ok(Verdict { report, accepted })
}

/// The diff as text, for the terminal or a log.
pub fn text(d: &CanaryDiff) -> String {
    let parts = &d.partitions;
    let mut s = format!(
        "canary diff of {} ({}) against its previous version ({} at version {}), {}:\n",
        d.model,
        d.change,
        d.previous_table,
        d.previous_version,
        crate::printer::plural(parts.len() as u64, "partition", "partitions")
    );
    s.push_str(&format!(
        "  rows: {} → {} ({})\n",
        d.rows_previous,
        d.rows_canary,
        change_text(d.rows_previous as f64, d.rows_canary as f64)
    ));
    // In order, at most 10 (a long canary's full list is in the JSON event).
    for p in parts.iter().take(10) {
        s.push_str(&format!(
            "    {}  {} → {}{}\n",
            p.partition,
            p.previous,
            p.canary,
            if p.identical { "  identical" } else { "" }
        ));
    }
    if parts.len() > 10 {
        s.push_str(&format!(
            "    … and {} more (all in the JSON event)\n",
            parts.len() - 10
        ));
    }
    match d.matched {
        Some(m) => s.push_str(&format!(
            "  matched on {}: {m} rows; {} only in the canary, {} only in the previous version\n",
            d.key.join(", "),
            d.rows_canary.saturating_sub(m),
            d.rows_previous.saturating_sub(m)
        )),
        None => s.push_str(
            "  no grain: a changed value is one without a counterpart in the previous version\n",
        ),
    }
    let width = d
        .columns
        .iter()
        .map(|c| c.column.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    for c in &d.columns {
        let what = match (c.status, c.changed, c.changed_pct) {
            ("compared", Some(n), Some(p)) => format!("{p:.1}% changed ({n})"),
            (status, _, _) => status.to_string(),
        };
        let sum = match (c.sum_previous, c.sum_canary) {
            (None, None) => String::new(),
            (o, n) => format!(
                "  sum {} → {}{}",
                gates::num(o),
                gates::num(n),
                match (o, n) {
                    (Some(o), Some(n)) => format!(" ({})", change_text(o, n)),
                    _ => String::new(),
                }
            ),
        };
        s.push_str(&format!("  {:width$}  {what}{sum}\n", c.column));
    }
    s
}

/// The change from `o` to `n`; sums within [`FLOAT_TOLERANCE`] of each other (floating-point
/// sums added in another order) are unchanged.
fn change_text(o: f64, n: f64) -> String {
    if o == n || (n - o).abs() <= FLOAT_TOLERANCE * o.abs().max(n.abs()) {
        "unchanged".into()
    } else if o == 0.0 {
        "new".into()
    } else {
        format!("{:+.1}%", (n - o) / o.abs() * 100.0)
    }
}

fn percent(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        (n as f64 * 1000.0 / of as f64).round() / 10.0
    }
}

/// Column name (lower case) → type (`None`: no columns).
fn columns(schema: Option<&SchemaRef>) -> BTreeMap<String, DataType> {
    schema
        .map(|s| {
            s.fields()
                .iter()
                .map(|f| (f.name().to_ascii_lowercase(), f.data_type().clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// `cols` in the order of `schema`.
fn order(schema: Option<&SchemaRef>, cols: &BTreeMap<String, DataType>) -> Vec<(String, DataType)> {
    match schema {
        Some(s) => s
            .fields()
            .iter()
            .map(|f| f.name().to_ascii_lowercase())
            .filter_map(|c| Some((c.clone(), cols.get(&c)?.clone())))
            .collect(),
        None => cols.iter().map(|(c, t)| (c.clone(), t.clone())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_to_a_tenth_of_a_percent_and_nothing_is_zero() {
        assert_eq!(percent(1, 3), 33.3);
        assert_eq!(percent(0, 0), 0.0);
        assert_eq!(change_text(100.0, 70.0), "-30.0%");
        assert_eq!(change_text(0.0, 5.0), "new");
        assert_eq!(change_text(5.0, 5.0), "unchanged");
        // Float sums added in another order; a real change of one in a billion is not.
        assert_eq!(change_text(0.1 + 0.2 + 0.3, 0.3 + 0.2 + 0.1), "unchanged");
        assert_eq!(change_text(1e9, 1e9 + 2.0), "+0.0%");
    }
}
