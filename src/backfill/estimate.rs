//! Estimates of what a plan will compute, from the batches earlier applies recorded.
//!
//! Invariants:
//! - An estimate is per partition of the same model: rows, bytes and batch time of recorded
//!   COMPLETE batches (batches found already committed are left out: they measured nothing),
//!   scaled by the partitions the plan computes. It is a guide for the reviewer, never an input
//!   to the plan: the plan and its id do not depend on it.
//! - Reading is bounded: the newest [`MAX_APPLIES`] applies at most, and a model stops
//!   collecting once it has [`ENOUGH_BATCHES`] batches; a plan without backfills reads nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::plan::{BackfillAction, Plan};
use crate::printer::{human_bytes, human_seconds, plural};
use crate::state::progress::{ProgressStore, Status};

/// Applies read at most, newest first.
pub const MAX_APPLIES: usize = 20;
/// Batches per model after which older applies are not read for it.
pub const ENOUGH_BATCHES: u64 = 200;

/// What recorded batches of one model did, in total.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    pub batches: u64,
    /// Partitions they covered.
    pub partitions: u64,
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Seconds of batch time.
    pub seconds: f64,
}

/// An estimate of one model's backfill.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Partitions to compute.
    pub partitions: u64,
    /// Expected rows.
    pub rows: u64,
    /// Expected bytes.
    pub bytes: u64,
    /// Expected batch time (spread over the workers).
    pub seconds: f64,
    /// The history it is based on.
    pub from: Rate,
}

/// The recorded rates of `models`.
pub fn history(
    store: &ProgressStore<'_>,
    models: &BTreeSet<String>,
) -> Result<BTreeMap<String, Rate>> {
    let mut out: BTreeMap<String, Rate> = BTreeMap::new();
    if models.is_empty() {
        return Ok(out);
    }
    let mut ids = store.list()?;
    ids.sort();
    for id in ids.iter().rev().take(MAX_APPLIES) {
        let wanted: BTreeSet<&String> = models
            .iter()
            .filter(|m| out.get(*m).is_none_or(|r| r.batches < ENOUGH_BATCHES))
            .collect();
        if wanted.is_empty() {
            break;
        }
        let Some(info) = store.info(id)? else {
            continue;
        };
        let planned: BTreeMap<usize, u64> =
            info.batches.iter().map(|b| (b.id, b.intervals)).collect();
        for r in store.records(id)?.values() {
            if r.status != Some(Status::Complete)
                || r.already_committed
                || !wanted.contains(&r.model)
            {
                continue;
            }
            let (Some(s), Some(f)) = (r.started, r.finished) else {
                continue;
            };
            let rate = out.entry(r.model.clone()).or_default();
            rate.batches += 1;
            rate.partitions += planned.get(&r.id).copied().unwrap_or(1);
            rate.rows += r.rows;
            rate.bytes += r.bytes;
            rate.seconds += (f - s).num_milliseconds().max(0) as f64 / 1000.0;
        }
    }
    Ok(out)
}

/// Estimates for the models `plan` computes, where history exists.
pub fn estimates(plan: &Plan, history: &BTreeMap<String, Rate>) -> BTreeMap<String, Estimate> {
    let mut out = BTreeMap::new();
    for m in &plan.models {
        let Some(b) = &m.backfill else {
            continue;
        };
        let Some(rate) = history.get(m.name.as_str()) else {
            continue;
        };
        if rate.partitions == 0 {
            continue;
        }
        let partitions = match b.action {
            BackfillAction::Compute => b.partitions,
            _ => rate.partitions / rate.batches.max(1),
        };
        let scale = partitions as f64 / rate.partitions as f64;
        out.insert(
            m.name.to_string(),
            Estimate {
                partitions,
                rows: (rate.rows as f64 * scale).round() as u64,
                bytes: (rate.bytes as f64 * scale).round() as u64,
                seconds: rate.seconds * scale,
                from: *rate,
            },
        );
    }
    out
}

/// The models a plan computes.
pub fn computed(plan: &Plan) -> BTreeSet<String> {
    plan.models
        .iter()
        .filter(|m| m.backfill.is_some())
        .map(|m| m.name.to_string())
        .collect()
}

/// The estimates as text lines (`markdown`: as a table).
pub fn render(estimates: &BTreeMap<String, Estimate>, workers: usize, markdown: bool) -> String {
    if estimates.is_empty() {
        return String::new();
    }
    let total: f64 = estimates.values().map(|e| e.seconds).sum();
    let mut s = String::new();
    if markdown {
        s.push_str("\n#### Estimates (from earlier applies)\n\n");
        s.push_str("| model | partitions | rows | bytes | batch time | based on |\n");
        s.push_str("|---|---:|---:|---:|---:|---|\n");
    } else {
        s.push_str("\nestimates (from batches of earlier applies):\n");
    }
    for (name, e) in estimates {
        let based = format!(
            "{}, {}",
            plural(e.from.batches, "batch", "batches"),
            plural(e.from.partitions, "partition", "partitions")
        );
        if markdown {
            s.push_str(&format!(
                "| `{name}` | {} | ~{} | ~{} | ~{} | {based} |\n",
                e.partitions,
                e.rows,
                human_bytes(e.bytes),
                human_seconds(e.seconds)
            ));
        } else {
            s.push_str(&format!(
                "  {name}: {}, ~{} rows, ~{}, ~{} of batch time ({based})\n",
                plural(e.partitions, "partition", "partitions"),
                e.rows,
                human_bytes(e.bytes),
                human_seconds(e.seconds)
            ));
        }
    }
    let line = format!(
        "about {} with {} if batches spread evenly",
        human_seconds(total / workers.max(1) as f64),
        plural(workers as u64, "worker", "workers")
    );
    if markdown {
        s.push_str(&format!("\nIn all: {line}.\n"));
    } else {
        s.push_str(&format!("  in all: {line}\n"));
    }
    s
}
