//! `tidemark reconcile MODEL --env A [--against B]`: prove what was written, partition by
//! partition — row counts and order-independent checksums of a model's table in environment A
//! against environment B, or against what the batches recorded when they wrote it.
//!
//! Invariants:
//! - Both sides are read at their environments' pinned versions, never at "latest".
//! - Against the records, a partition is compared with the most recent COMPLETE batch that
//!   covered it; a batch's recorded checksum is compared with the merged checksums of the
//!   partitions of its window.
//! - Exit 1 when anything differs; 0 when everything compared is equal.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::emit;

use crate::engine::{Checksum, Engine, Input, partition_key};
use crate::error::{Diagnostic, Error, ExitStatus, Result};
use crate::interval::{IntervalUnit, parse_instant};
use crate::project::ModelName;
use crate::settings::{EnvFormat, Reconcile, Settings};
use crate::state::progress::{BatchRecord, ProgressStore, Status};

/// `reconcile --format json` (`tidemark.reconcile/v1`).
#[derive(Debug, Serialize)]
pub struct ReconcileView {
    /// Format tag.
    pub format: &'static str,
    pub model: String,
    /// Left side: `env:table@version`.
    pub left: String,
    /// Right side: another environment's table, or `recorded`.
    pub right: String,
    /// Units compared (partitions, or recorded batch windows).
    pub compared: usize,
    /// Of those, recorded batches whose checksum an earlier build made with another algorithm:
    /// only their row counts were compared.
    #[serde(skip_serializing_if = "is_zero")]
    pub rows_only: usize,
    /// The ones that differ.
    pub differences: Vec<Difference>,
    /// Sample rows only on the left / only on the right (environment comparisons).
    pub samples: Vec<(String, String)>,
}

/// One unit that differs.
#[derive(Debug, Serialize)]
pub struct Difference {
    /// Partition key or `[start, end)` of a recorded batch.
    pub unit: String,
    /// Rows on the left (`None`: absent).
    pub left_rows: Option<u64>,
    /// Rows on the right.
    pub right_rows: Option<u64>,
    pub left_checksum: Option<String>,
    /// Checksum on the right.
    pub right_checksum: Option<String>,
}

struct Side {
    table: crate::names::TableId,
    version: u64,
    unit: IntervalUnit,
}

fn side(
    config: &crate::project::Config,
    state: &crate::state::State,
    env: &str,
    model: &ModelName,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Side> {
    let cat = crate::env::catalog(config, state, env, now)?;
    let e = cat.entries.get(model).ok_or_else(|| {
        Error::from(
            Diagnostic::error(format!("`{model}` is not a model of environment `{env}`")).hint(
                crate::error::did_you_mean(model.as_str(), cat.entries.keys().map(|k| k.as_str()))
                    .unwrap_or_else(|| "`tidemark env show ENV` lists its models".to_string()),
            ),
        )
    })?;
    match (&e.table, e.version) {
        (Some(t), Some(v)) => Ok(Side {
            table: t.clone(),
            version: v,
            unit: e.snapshot.model.interval_unit,
        }),
        _ => Err(Diagnostic::error(format!(
            "`{model}` has no data in `{env}` to reconcile (a view, an embedded model, or nothing computed yet)"
        ))
        .into()),
    }
}

/// Run `reconcile`.
pub fn run(ctx: &Settings, r: &Reconcile, out: &mut dyn std::io::Write) -> Result<ExitStatus> {
    let (config, store) = super::warehouse(ctx)?;
    let state = store.read()?;
    let engine = crate::engine::open(&config)?;
    let model = ModelName::parse(&r.model).map_err(|e| {
        Error::from(Diagnostic::error(format!(
            "invalid model name `{}`: {e}",
            r.model
        )))
    })?;
    let a = side(&config, &state, &r.env, &model, ctx.execution_time)?;
    let bound = |s: Option<&str>, what: &str| -> Result<Option<String>> {
        s.map(|s| {
            parse_instant(s)
                .map(|i| partition_key(a.unit, i.at))
                .map_err(|e| Error::from(Diagnostic::error(format!("invalid `--{what}`: {e}"))))
        })
        .transpose()
    };
    let (lo, hi) = (
        bound(r.start.as_deref(), "start")?,
        bound(r.end.as_deref(), "end")?,
    );
    let in_range = |k: &str| {
        k == "all" || (lo.as_deref().is_none_or(|l| k >= l) && hi.as_deref().is_none_or(|h| k < h))
    };
    let left: BTreeMap<String, Checksum> = engine
        .partition_stats(&a.table, a.version, None, false)?
        .into_iter()
        .filter(|(k, _)| in_range(k))
        .collect();
    let mut view = ReconcileView {
        format: "tidemark.reconcile/v1",
        model: model.to_string(),
        left: format!("{}:{}@{}", r.env, a.table, a.version),
        right: String::new(),
        compared: 0,
        rows_only: 0,
        differences: Vec::new(),
        samples: Vec::new(),
    };
    match r.against.as_deref() {
        Some(benv) => {
            let b = side(&config, &state, benv, &model, ctx.execution_time)?;
            view.right = format!("{benv}:{}@{}", b.table, b.version);
            let right: BTreeMap<String, Checksum> = engine
                .partition_stats(&b.table, b.version, None, false)?
                .into_iter()
                .filter(|(k, _)| in_range(k))
                .collect();
            let keys: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
            view.compared = keys.len();
            for k in keys {
                let (l, rr) = (left.get(k), right.get(k));
                if l != rr {
                    view.differences.push(diff(k.clone(), l, rr));
                }
            }
            if !view.differences.is_empty() {
                view.samples = samples(engine.as_ref(), &a, &b)?;
            }
        }
        None => {
            view.right = "recorded".to_string();
            let progress = ProgressStore::new(store.storage());
            let mut recs = latest_records(&progress, &a.table, a.version)?;
            let whole = left.len() == 1 && left.contains_key("all");
            if whole {
                // Unpartitioned (FULL, SEED, UNIQUE_KEY): each batch measured the whole table,
                // so only the last one describes the pinned version.
                recs.sort_by_key(|r| r.table_version);
                recs = recs.pop().into_iter().collect();
            }
            for rec in recs {
                let s = parse_instant(&rec.start).map(|i| partition_key(a.unit, i.at));
                let e = parse_instant(&rec.end).map(|i| partition_key(a.unit, i.at));
                let (Ok(ks), Ok(ke)) = (s, e) else {
                    continue;
                };
                let mut actual = Checksum::default();
                if !whole && !in_range(&ks) {
                    continue;
                }
                for (k, c) in &left {
                    if whole || (*k >= ks && *k < ke) {
                        actual.merge(c);
                    }
                }
                let legacy = rec
                    .checksum
                    .as_deref()
                    .is_some_and(|h| !Checksum::comparable(h));
                let recorded = rec
                    .checksum
                    .as_deref()
                    .and_then(|h| Checksum::from_hex(rec.rows, h));
                view.compared += 1;
                // Recorded by a build with another checksum algorithm: rows only.
                let differs = if legacy {
                    view.rows_only += 1;
                    rec.rows != actual.rows
                } else {
                    recorded.as_ref() != Some(&actual)
                };
                if differs {
                    view.differences.push(Difference {
                        unit: format!("[{}, {})", rec.start, rec.end),
                        left_rows: Some(actual.rows),
                        right_rows: Some(rec.rows),
                        left_checksum: Some(actual.hex()),
                        right_checksum: rec.checksum.clone(),
                    });
                }
            }
        }
    }
    match r.format {
        EnvFormat::Json => super::emit_json(out, &view)?,
        EnvFormat::Text => emit(out, &text(&view))?,
    }
    Ok(ExitStatus::found(!view.differences.is_empty()))
}

fn diff(unit: String, l: Option<&Checksum>, r: Option<&Checksum>) -> Difference {
    Difference {
        unit,
        left_rows: l.map(|c| c.rows),
        right_rows: r.map(|c| c.rows),
        left_checksum: l.map(Checksum::hex),
        right_checksum: r.map(Checksum::hex),
    }
}

/// The most recent COMPLETE record of each window written to `table` at or before `version`,
/// keeping only records no later record overlaps (a later batch rewrote part of them).
fn latest_records(
    progress: &ProgressStore<'_>,
    table: &str,
    version: u64,
) -> Result<Vec<BatchRecord>> {
    let mut all: Vec<BatchRecord> = Vec::new();
    for id in progress.list()? {
        for r in progress.records(&id)?.into_values() {
            if r.status == Some(Status::Complete)
                && r.table.as_deref() == Some(table)
                && r.table_version.is_some_and(|v| v <= version)
                && r.checksum.is_some()
            {
                all.push(r);
            }
        }
    }
    all.sort_by_key(|r| (r.table_version, r.finished));
    let mut kept: Vec<BatchRecord> = Vec::new();
    for r in all.into_iter().rev() {
        let overlaps = kept.iter().any(|k| k.start < r.end && r.start < k.end);
        if !overlaps {
            kept.push(r);
        }
    }
    kept.sort_by(|a, b| a.start.cmp(&b.start));
    Ok(kept)
}

/// Up to 5 rows only in A and 5 only in B.
fn samples(engine: &dyn Engine, a: &Side, b: &Side) -> Result<Vec<(String, String)>> {
    let (na, nb) = (
        ModelName::parse("reconcile.left").map_err(|e| Error::Bug(e.to_string()))?,
        ModelName::parse("reconcile.right").map_err(|e| Error::Bug(e.to_string()))?,
    );
    let inputs = [
        Input::Table {
            name: na,
            table: a.table.clone(),
            version: Some(a.version),
        },
        Input::Table {
            name: nb,
            table: b.table.clone(),
            version: Some(b.version),
        },
    ];
    let mut out = Vec::new();
    for (label, sql) in [
        (
            "only left",
            "SELECT * FROM reconcile.left EXCEPT ALL SELECT * FROM reconcile.right",
        ),
        (
            "only right",
            "SELECT * FROM reconcile.right EXCEPT ALL SELECT * FROM reconcile.left",
        ),
    ] {
        let batches = engine.query(&inputs, sql)?;
        let csv = super::format_batches(&batches, crate::settings::QueryFormat::Csv)?;
        // The first five in text order, so the same data always shows the same samples (a
        // LIMIT without an order picked whichever rows a worker produced first).
        let mut rows: Vec<&str> = csv.lines().skip(1).collect();
        rows.sort_unstable();
        for line in rows.into_iter().take(5) {
            out.push((label.to_string(), line.to_string()));
        }
        if let Some(h) = csv.lines().next()
            && !out.is_empty()
            && !out.iter().any(|(l, _)| l == "columns")
        {
            out.insert(0, ("columns".to_string(), h.to_string()));
        }
    }
    Ok(out)
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn text(v: &ReconcileView) -> String {
    let mut s = format!(
        "{}: {} against {}\n{} compared, {} differ\n",
        v.model,
        v.left,
        v.right,
        v.compared,
        v.differences.len()
    );
    if v.rows_only > 0 {
        s.push_str(&format!(
            "note: {} recorded {} a checksum of an earlier tidemark (another hash); only their row counts were compared\n",
            crate::printer::plural(v.rows_only as u64, "batch", "batches"),
            if v.rows_only == 1 { "carries" } else { "carry" }
        ));
    }
    if !v.differences.is_empty() {
        s.push_str(&format!(
            "\n{:<46}  {:>10}  {:>10}  {:>16}  {:>16}\n",
            "partition", "rows", "rows (B)", "checksum", "checksum (B)"
        ));
        let show = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".to_string());
        for d in &v.differences {
            s.push_str(&format!(
                "{:<46}  {:>10}  {:>10}  {:>16}  {:>16}\n",
                d.unit,
                d.left_rows.map_or("-".to_string(), |r| r.to_string()),
                d.right_rows.map_or("-".to_string(), |r| r.to_string()),
                show(&d.left_checksum),
                show(&d.right_checksum)
            ));
        }
    }
    if !v.samples.is_empty() {
        s.push_str("\nsample rows:\n");
        for (label, row) in &v.samples {
            s.push_str(&format!("  {label:<10}  {row}\n"));
        }
    }
    s
}
