//! Promotion gates: before `promote` swaps the target's pointers, every promoted model's gates
//! compare its data in the promoted environment with the data it replaces in the target; with
//! `--canary-gate`, the same gates compare a backfill's canary partitions with the previous
//! version's.
//!
//! Invariants:
//! - Only models whose table (or pinned version) differs between the two environments are
//!   checked, each side at its environment's pinned version; a model new to the target has
//!   nothing to compare with and passes.
//! - Row counts, missing partitions and `unchanged` come from per-partition row counts and
//!   checksums (one read of each side's files, the same figures `reconcile` proves); only the
//!   partitions that differ are reported. Column sums, NULL fractions, `unchanged` over new
//!   columns and custom gates read only the partitions that differ (their files alone; all of
//!   an unpartitioned table), one query per side, so unchanged partitions neither hide nor
//!   dilute a change.
//! - The same checks serve the canary gate, over the canary's partitions only.
//! - A violation is accepted only by an explicit `--accept MODEL:GATE`; an acceptance that
//!   matches no violation is an error (a typo must not pass silently).
//! - Output is sorted by model, gate, then window.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::array::{Array, Float64Array, Int64Array};
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;

use crate::engine::{Checksum, Engine, Input};
use crate::error::{Diagnostic, Error, Result};
use crate::plan::Plan;
use crate::project::ModelName;
use crate::project::model::GateCall;
use crate::state::{AcceptedGate, State, TableId};

/// One gate's verdict on one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// The model.
    pub model: ModelName,
    /// The gate as declared.
    pub gate: String,
    /// The partition (`2024-01-03`), or `all` for the whole table.
    pub window: String,
    /// What the gate allows.
    pub expected: String,
    /// What the promotion would publish.
    pub found: String,
    /// Accepted with `--accept`.
    pub accepted: bool,
}

/// Every gate checked and every violation found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GateReport {
    /// Format tag.
    pub format: &'static str,
    /// Gates checked: model → gates.
    pub checked: BTreeMap<ModelName, Vec<String>>,
    /// Violations, accepted ones included.
    pub violations: Vec<Violation>,
    /// Partitions whose figures were read (both sides), and aggregate queries run.
    pub partitions_read: u64,
    /// Aggregate queries run.
    pub queries: u64,
}

impl GateReport {
    /// Violations not accepted.
    pub fn blocking(&self) -> usize {
        self.violations.iter().filter(|v| !v.accepted).count()
    }
}

/// One side of a comparison: a table at a version.
#[derive(Debug, Clone)]
pub struct Side {
    /// The physical table.
    pub table: TableId,
    /// Its Delta version.
    pub version: u64,
}

impl Side {
    /// `model`'s table in `env` at its pin (`None`: no table, or not built).
    pub fn of(env: &crate::state::Environment, model: &ModelName) -> Option<Side> {
        let m = env.models.get(model)?;
        Some(Side {
            table: m.table.clone()?,
            version: m.table_version?,
        })
    }
}

/// Evaluate the gates of every model `plan` promotes (see the module invariants).
pub fn evaluate(
    engine: &dyn Engine,
    state: &State,
    plan: &Plan,
    root: &std::path::Path,
) -> Result<GateReport> {
    let mut report = GateReport {
        format: "tidemark.gates/v1",
        ..GateReport::default()
    };
    let (Some(target), Some(from)) = (
        state.environment(&plan.environment),
        plan.definitions_from
            .as_deref()
            .and_then(|e| state.environment(e)),
    ) else {
        return Ok(report);
    };
    for (name, t) in &plan.target {
        let Some(snapshot) = plan.snapshot(state, &t.snapshot) else {
            continue;
        };
        let gates = &snapshot.model.gates;
        if gates.is_empty() {
            continue;
        }
        let (Some(old), Some(new)) = (Side::of(target, name), Side::of(from, name)) else {
            continue;
        };
        if old.table == new.table && old.version == new.version {
            continue;
        }
        check_model(engine, root, name, gates, &old, &new, None, &mut report)?;
    }
    report
        .violations
        .sort_by(|a, b| (&a.model, &a.gate, &a.window).cmp(&(&b.model, &b.gate, &b.window)));
    Ok(report)
}

/// Check `gates` of `name`, comparing `new` with `old` (`only`: just those partitions of
/// each; `None`: every partition, the aggregates over those that differ), into `report`.
#[allow(clippy::too_many_arguments)]
pub fn check_model(
    engine: &dyn Engine,
    root: &std::path::Path,
    name: &ModelName,
    gates: &[GateCall],
    old: &Side,
    new: &Side,
    only: Option<&BTreeSet<String>>,
    report: &mut GateReport,
) -> Result<()> {
    report
        .checked
        .insert(name.clone(), gates.iter().map(GateCall::text).collect());
    let mut cmp = Comparison::new(engine, old, new, root, only.cloned());
    for gate in gates {
        let found = cmp.check(gate)?;
        report.violations.extend(
            found
                .into_iter()
                .map(|(window, expected, found)| Violation {
                    model: name.clone(),
                    gate: gate.text(),
                    window,
                    expected,
                    found,
                    accepted: false,
                }),
        );
    }
    report.partitions_read += cmp.partitions_read;
    report.queries += cmp.queries;
    report
        .violations
        .sort_by(|a, b| (&a.model, &a.gate, &a.window).cmp(&(&b.model, &b.gate, &b.window)));
    Ok(())
}

/// Mark the violations `accept` (`MODEL:GATE`, the gate by name) names as accepted; returns
/// what was accepted, by whom and why, for the environment history and the apply log.
pub fn accept(
    report: &mut GateReport,
    accept: &[String],
    by: &str,
    reason: Option<&str>,
) -> Result<Vec<AcceptedGate>> {
    let mut out: BTreeMap<(ModelName, String), u64> = BTreeMap::new();
    for a in accept {
        let Some((model, gate)) = a.split_once(':') else {
            return Err(
                Diagnostic::error(format!("`--accept {a}` must name MODEL:GATE"))
                    .hint("e.g. `--accept sushi.orders:row_count_change`")
                    .into(),
            );
        };
        let model = ModelName::parse(model)
            .map_err(|r| Error::from(Diagnostic::error(format!("`--accept {a}`: {r}"))))?;
        let gate = gate.trim().to_ascii_lowercase();
        let mut any = false;
        for v in &mut report.violations {
            let name = v.gate.split('(').next().unwrap_or_default();
            if v.model == model && name == gate {
                v.accepted = true;
                any = true;
                *out.entry((model.clone(), v.gate.clone())).or_default() += 1;
            }
        }
        if !any {
            return Err(Diagnostic::error(format!(
                "`--accept {a}` matches no violation of this promotion"
            ))
            .hint("accept only what `promote --check` lists as violated")
            .into());
        }
    }
    if !out.is_empty() && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(Diagnostic::error("accepting gate violations needs a reason")
            .hint("add `--reason \"…\"`: it is recorded with the acceptance in the environment history")
            .into());
    }
    Ok(out
        .into_iter()
        .map(|((model, gate), violations)| AcceptedGate {
            model,
            gate,
            violations,
            by: by.to_string(),
            reason: reason.unwrap_or_default().trim().to_string(),
        })
        .collect())
}

/// The figures of one model's two sides, read once and shared by its gates.
struct Comparison<'a> {
    engine: &'a dyn Engine,
    root: &'a std::path::Path,
    old: &'a Side,
    new: &'a Side,
    /// Partitions read, when not all.
    only: Option<BTreeSet<String>>,
    stats: Option<(Partitions, Partitions)>,
    /// Partitions the queries read (`None`: all), once known.
    scope: Option<Option<BTreeSet<String>>>,
    partitions_read: u64,
    queries: u64,
}

/// Violations of one gate: window, expected, found.
type Found = Vec<(String, String, String)>;

/// Rows and checksum per partition key of one side.
type Partitions = BTreeMap<String, Checksum>;

impl<'a> Comparison<'a> {
    fn new(
        engine: &'a dyn Engine,
        old: &'a Side,
        new: &'a Side,
        root: &'a std::path::Path,
        only: Option<BTreeSet<String>>,
    ) -> Comparison<'a> {
        Comparison {
            engine,
            root,
            old,
            new,
            only,
            stats: None,
            scope: None,
            partitions_read: 0,
            queries: 0,
        }
    }

    fn stats(&mut self) -> Result<&(Partitions, Partitions)> {
        if self.stats.is_none() {
            let old = self.engine.partition_stats(
                &self.old.table,
                self.old.version,
                self.only.as_ref(),
                true,
            )?;
            let new = self.engine.partition_stats(
                &self.new.table,
                self.new.version,
                self.only.as_ref(),
                true,
            )?;
            self.partitions_read += (old.len() + new.len()) as u64;
            self.stats = Some((old, new));
        }
        Ok(self.stats.get_or_insert_with(Default::default))
    }

    /// The partitions queries read: those asked for, or else those whose rows differ between
    /// the sides (`None`: every one, for an unpartitioned table).
    fn scope(&mut self) -> Result<Option<BTreeSet<String>>> {
        if let Some(s) = &self.scope {
            return Ok(s.clone());
        }
        let scope = match &self.only {
            Some(keys) => Some(keys.clone()),
            None => {
                let (old, new) = self.stats()?;
                let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
                if keys.iter().all(|k| k.as_str() == "all") {
                    None
                } else {
                    Some(
                        keys.into_iter()
                            .filter(|k| old.get(*k) != new.get(*k))
                            .cloned()
                            .collect(),
                    )
                }
            }
        };
        self.scope = Some(scope.clone());
        Ok(scope)
    }

    /// How the windows a query read are reported.
    fn scope_label(&mut self) -> Result<String> {
        Ok(match self.scope()? {
            None => "all".into(),
            Some(keys) => match (keys.first(), keys.last(), keys.len()) {
                (Some(a), _, 1) => a.clone(),
                (Some(a), Some(b), n) => format!("{a} … {b} ({n} partitions)"),
                _ => "none".into(),
            },
        })
    }

    fn check(&mut self, gate: &GateCall) -> Result<Found> {
        match gate.name.as_str() {
            "row_count_change" => self.row_count(gate.number("max_pct")),
            "no_missing_partitions" => {
                let (old, new) = self.stats()?;
                Ok(old
                    .iter()
                    .filter(|(k, _)| !new.contains_key(*k))
                    .map(|(k, c)| {
                        (
                            k.clone(),
                            format!("present ({} rows)", c.rows),
                            "missing".to_string(),
                        )
                    })
                    .collect())
            }
            "unchanged" => self.unchanged(),
            "column_sum_change" => {
                let column = gate.args.get("column").cloned().unwrap_or_default();
                let sum = format!("SUM(CAST({column} AS DOUBLE))");
                let (o, n) = (self.aggregate(true, &sum)?, self.aggregate(false, &sum)?);
                let max = gate.number("max_pct");
                Ok(match pct(o, n) {
                    Some(p) if p.abs() <= max => Vec::new(),
                    p => vec![(
                        self.scope_label()?,
                        format!("sum of `{column}` within ±{max}% of {}", num(o)),
                        format!(
                            "{}{}",
                            num(n),
                            p.map(|p| format!(" ({p:+.1}%)")).unwrap_or_default()
                        ),
                    )],
                })
            }
            "null_fraction_change" => {
                let column = gate.args.get("column").cloned().unwrap_or_default();
                let nulls = format!(
                    "CAST(COUNT(*) - COUNT({column}) AS DOUBLE) * 100.0 / CAST(GREATEST(COUNT(*), 1) AS DOUBLE)"
                );
                let (o, n) = (
                    self.aggregate(true, &nulls)?.unwrap_or(0.0),
                    self.aggregate(false, &nulls)?.unwrap_or(0.0),
                );
                let max = gate.number("max_points");
                Ok(if (n - o).abs() <= max {
                    Vec::new()
                } else {
                    vec![(
                        self.scope_label()?,
                        format!("NULLs in `{column}` within ±{max} points of {o:.1}%"),
                        format!("{n:.1}% ({:+.1} points)", n - o),
                    )]
                })
            }
            _ if gate.is_custom() => self.custom(gate),
            other => Err(Error::Bug(format!("gate `{other}` passed the load check"))),
        }
    }

    fn row_count(&mut self, max: f64) -> Result<Found> {
        // The total: the whole table, or the partitions asked for.
        let total = if self.only.is_some() { "total" } else { "all" };
        let (old, new) = self.stats()?;
        let mut out = Vec::new();
        for (k, o) in old {
            let n = new.get(k).map_or(0, |c| c.rows);
            if new.get(k) == Some(o) {
                continue;
            }
            if let Some(p) = pct(Some(o.rows as f64), Some(n as f64))
                && p.abs() <= max
            {
                continue;
            }
            out.push((
                k.clone(),
                format!("within ±{max}% of {} rows", o.rows),
                format!("{n} rows ({})", pct_text(o.rows, n)),
            ));
        }
        let (o, n): (u64, u64) = (
            old.values().map(|c| c.rows).sum(),
            new.values().map(|c| c.rows).sum(),
        );
        let partitions = old.keys().chain(new.keys()).collect::<BTreeSet<_>>().len();
        if partitions > 1
            && pct(Some(o as f64), Some(n as f64)).is_none_or(|p| p.abs() > max)
            && o != n
        {
            out.push((
                total.into(),
                format!("within ±{max}% of {o} rows"),
                format!("{n} rows ({})", pct_text(o, n)),
            ));
        }
        Ok(out)
    }

    /// The target's rows, over its own columns, are exactly what the promotion publishes.
    fn unchanged(&mut self) -> Result<Found> {
        let old_cols = self.columns(true)?;
        let new_cols = self.columns(false)?;
        if old_cols == new_cols {
            let (old, new) = self.stats()?;
            let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            return Ok(keys
                .into_iter()
                .filter(|k| old.get(*k) != new.get(*k))
                .map(|k| {
                    let rows = |m: &Partitions| {
                        m.get(k).map_or("absent".to_string(), |c| {
                            format!("{} rows, {}", c.rows, c.hex())
                        })
                    };
                    (k.clone(), rows(old), rows(new))
                })
                .collect());
        }
        // New columns (a non-breaking change): the target's columns must not move.
        let missing: Vec<&String> = old_cols.iter().filter(|c| !new_cols.contains(c)).collect();
        if !missing.is_empty() {
            return Ok(vec![(
                "all".into(),
                format!("columns {}", old_cols.join(", ")),
                format!(
                    "without {}",
                    missing
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )]);
        }
        let cols = old_cols.join(", ");
        let differ = format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM (SELECT {cols} FROM {NEW} EXCEPT ALL SELECT {cols} FROM {OLD}) AS a"
        );
        let differ_back = format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM (SELECT {cols} FROM {OLD} EXCEPT ALL SELECT {cols} FROM {NEW}) AS a"
        );
        let added = self.both(&differ)?;
        let removed = self.both(&differ_back)?;
        Ok(if added == Some(0.0) && removed == Some(0.0) {
            Vec::new()
        } else {
            vec![(
                self.scope_label()?,
                format!("the same rows over {cols}"),
                format!("{} rows added, {} removed", num(added), num(removed)),
            )]
        })
    }

    /// A custom gate: its query, `@this_env` standing for the promoted table and
    /// `@target_env` for the target's, returns the offending rows.
    fn custom(&mut self, gate: &GateCall) -> Result<Found> {
        let rel = crate::project::model::gates_custom_path(&gate.name);
        let path = self.root.join(&rel);
        let sql = std::fs::read_to_string(&path).map_err(|e| {
            Error::from(
                crate::error::io_error("read", &rel, &e)
                    .hint("the gate's file was there when the project loaded; was it moved since?"),
            )
        })?;
        let sql = sql
            .trim()
            .trim_end_matches(';')
            .replace("@this_env", NEW)
            .replace("@target_env", OLD);
        let sql = crate::sql::lower_unquoted(&sql);
        let batches = self
            .engine
            .query(
                &self.inputs()?,
                &format!("SELECT COUNT(*) AS n FROM ({sql}) AS g"),
            )
            .map_err(|e| {
                e.map_diagnostics(|d| Diagnostic {
                    message: format!("custom gate `{}` does not run: {}", gate.name, d.message),
                    ..d
                })
            })?;
        self.queries += 1;
        let n = first_number(&batches).unwrap_or(0.0);
        Ok(if n == 0.0 {
            Vec::new()
        } else {
            vec![(
                self.scope_label()?,
                "no rows".into(),
                format!("{} offending rows", num(Some(n))),
            )]
        })
    }

    fn inputs(&mut self) -> Result<Vec<Input>> {
        let name = |n: &str| {
            ModelName::parse(n).map_err(|r| Error::Bug(format!("gate input name {n}: {r}")))
        };
        let scope = self.scope()?;
        let input = |n: &str, side: &Side| -> Result<Input> {
            Ok(match &scope {
                None => Input::Table {
                    name: name(n)?,
                    table: side.table.clone(),
                    version: Some(side.version),
                },
                Some(keys) => Input::Partitions {
                    name: name(n)?,
                    table: side.table.clone(),
                    version: side.version,
                    keys: keys.clone(),
                },
            })
        };
        Ok(vec![input(OLD, self.old)?, input(NEW, self.new)?])
    }

    fn columns(&mut self, old: bool) -> Result<Vec<String>> {
        let batches = self.engine.query(
            &self.inputs()?,
            &format!("SELECT * FROM {} LIMIT 1", if old { OLD } else { NEW }),
        )?;
        self.queries += 1;
        Ok(batches
            .first()
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default())
    }

    fn aggregate(&mut self, old: bool, expr: &str) -> Result<Option<f64>> {
        let sql = format!("SELECT {expr} AS v FROM {}", if old { OLD } else { NEW });
        self.both(&sql)
    }

    fn both(&mut self, sql: &str) -> Result<Option<f64>> {
        let batches = self.engine.query(&self.inputs()?, sql)?;
        self.queries += 1;
        Ok(first_number(&batches))
    }
}

/// The gates' verdict: a table of violations (model, gate, window, expected, found), or that
/// every gate passed; and what reading the figures cost.
pub fn table(r: &GateReport, title: &str, markdown: bool) -> String {
    let gates: usize = r.checked.values().map(Vec::len).sum();
    let mut s = if markdown {
        format!("\n#### {title}\n\n")
    } else {
        format!("\n{title}:\n")
    };
    if r.violations.is_empty() {
        s.push_str(&format!(
            "{} of {} passed\n",
            crate::printer::plural(gates as u64, "gate", "gates"),
            crate::printer::plural(r.checked.len() as u64, "model", "models")
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
        let w = |f: &dyn Fn(&Violation) -> String, h: &str| {
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
        crate::printer::plural(
            r.partitions_read,
            "partition's figures",
            "partitions' figures"
        ),
        crate::printer::plural(r.queries, "aggregate query", "aggregate queries")
    ));
    s
}

const OLD: &str = "tidemark_gate.target";
const NEW: &str = "tidemark_gate.promoted";

/// The first value of the first column, as a number (`None`: NULL or no row).
fn first_number(batches: &[RecordBatch]) -> Option<f64> {
    row_numbers(batches).first().copied().flatten()
}

/// The first row's values as numbers (`None`: NULL or not a number; empty: no row).
pub(super) fn row_numbers(batches: &[RecordBatch]) -> Vec<Option<f64>> {
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Vec::new();
    };
    b.columns()
        .iter()
        .map(|c| {
            if c.is_null(0) {
                return None;
            }
            if let Some(a) = c.as_any().downcast_ref::<Float64Array>() {
                return Some(a.value(0));
            }
            c.as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0) as f64)
        })
        .collect()
}

/// The change from `o` to `n` in percent (`None`: from nothing to something, or unknown).
fn pct(o: Option<f64>, n: Option<f64>) -> Option<f64> {
    match (o, n) {
        (Some(o), Some(n)) if o == 0.0 && n == 0.0 => Some(0.0),
        (Some(o), Some(n)) if o != 0.0 => Some((n - o) / o.abs() * 100.0),
        (None, None) => Some(0.0),
        _ => None,
    }
}

fn pct_text(o: u64, n: u64) -> String {
    pct(Some(o as f64), Some(n as f64)).map_or("new".to_string(), |p| format!("{p:+.1}%"))
}

/// A figure as shown: integers without decimals, NULL for none.
pub(super) fn num(v: Option<f64>) -> String {
    match v {
        None => "NULL".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => format!("{v:.4}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_measured_in_percent_of_the_target() {
        assert_eq!(pct(Some(100.0), Some(70.0)), Some(-30.0));
        assert_eq!(pct(Some(0.0), Some(0.0)), Some(0.0));
        assert_eq!(pct(Some(0.0), Some(5.0)), None);
        assert_eq!(pct_text(10, 13), "+30.0%");
        assert_eq!(num(Some(3.0)), "3");
        assert_eq!(num(None), "NULL");
    }
}
