//! What a plan computes: each model's expected range, its missing intervals, restatement
//! windows cascading downstream, and batches.
//!
//! Invariants:
//! - A model's expected range runs from its `start` (default: the last complete interval) to
//!   the end of the last complete interval before the execution time (the current, partial
//!   interval too with `allow_partials`), capped by its `end`; always aligned to its unit.
//! - Missing = expected − completed for the physical table the model's version writes. Only
//!   snapshots new to the environment are backfilled by a plan; catching up on new intervals of
//!   unchanged models is `run`'s job.
//! - A restated child restates the union of its parents' restated intervals widened to its own
//!   unit, clamped to its expected range ("catch up only": never beyond what it covers).
//!   FULL, VIEW and SEED models are refreshed whole and pass their input window on; an
//!   INCREMENTAL_BY_UNIQUE_KEY model restates its whole history (a merge cannot be partially
//!   undone); a self-referencing model restates through the end of its range.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::interval::{Interval, IntervalSet, IntervalUnit};
use crate::project::{Kind, ModelName};
use crate::state::{Category, ModelRecord, Snapshot, State};

/// What the plan reads besides the models.
pub struct Scope<'a> {
    /// Completed intervals.
    pub state: &'a State,
    /// "Now".
    pub execution_time: DateTime<Utc>,
    /// The user's window (`--start`/`--end`), if any.
    pub window: Option<Interval>,
    /// `run`: seeds and views are left alone; FULL models refresh when their schedule came due.
    pub catch_up: bool,
}

/// How a model's backfill is executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillAction {
    /// Compute intervals (incremental models).
    Compute,
    /// Recompute the whole table (FULL).
    FullRefresh,
    /// Recreate the view.
    RecreateView,
    /// Load the seed file.
    LoadSeed,
}

/// One model's work in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    /// How.
    pub action: BackfillAction,
    /// The model's interval unit.
    pub interval_unit: IntervalUnit,
    /// Merged half-open ranges to compute (for a full refresh: the range its data covers).
    pub intervals: IntervalSet,
    /// Unit intervals to compute (1 for a full refresh or seed load, 0 for a view).
    pub partitions: u64,
    /// Batches.
    pub batches: u64,
    /// Most intervals per batch.
    pub batch_size: u32,
    /// Is the whole table recomputed?
    pub full_refresh: bool,
}

/// Default intervals per batch: a week of data for units up to a day, one interval above. Chosen
/// from measurements (`docs/performance.md`, "The default batch size"): batches of about 1.5–7 M
/// input rows are equally fast, a week is there for busy tables, and it keeps the canary batch
/// and a resumed batch short.
pub fn default_batch_size(unit: IntervalUnit) -> u32 {
    match unit {
        IntervalUnit::FiveMinute => 7 * 24 * 12,
        IntervalUnit::QuarterHour => 7 * 24 * 4,
        IntervalUnit::HalfHour => 7 * 24 * 2,
        IntervalUnit::Hour => 7 * 24,
        IntervalUnit::Day => 7,
        IntervalUnit::Week | IntervalUnit::Month | IntervalUnit::Year => 1,
    }
}

/// The model's batch size (its own or the default).
pub fn batch_size(m: &ModelRecord) -> u32 {
    match &m.kind {
        Kind::IncrementalByTimeRange {
            batch_size: Some(n),
            ..
        }
        | Kind::IncrementalByUniqueKey {
            batch_size: Some(n),
            ..
        } => *n,
        _ => default_batch_size(m.interval_unit),
    }
}

/// The aligned range a model should cover at the execution time.
pub fn expected(ctx: &Scope<'_>, m: &ModelRecord) -> IntervalSet {
    let unit = m.interval_unit;
    let exec = ctx.execution_time;
    let mut end = if m.allow_partials {
        unit.ceil(exec)
    } else {
        unit.floor(exec)
    };
    if let Some(e) = m.end {
        end = end.min(unit.ceil(e));
    }
    let start = match m.start {
        Some(s) => unit.floor(s),
        None => unit.prev(unit.floor(exec)),
    };
    if start >= end {
        return IntervalSet::new();
    }
    IntervalSet::of(Interval::new(start, end))
}

/// Restated intervals per model: the selected models (over the user's window) and the
/// children of `seeds` (sources with the windows whose data changed), and everything
/// downstream of them.
pub fn restatement(
    ctx: &Scope<'_>,
    order: &[ModelName],
    nodes: &BTreeMap<&ModelName, (&ModelRecord, &BTreeSet<ModelName>)>,
    selected: &BTreeSet<ModelName>,
    seeds: &BTreeMap<ModelName, IntervalSet>,
) -> BTreeMap<ModelName, IntervalSet> {
    // What each restated model (or seeded source) passes on to its children (unaligned for
    // non-time kinds).
    let mut passed: BTreeMap<&ModelName, IntervalSet> =
        seeds.iter().map(|(n, w)| (n, w.clone())).collect();
    let mut out = BTreeMap::new();
    if selected.is_empty() && seeds.is_empty() {
        return out;
    }
    let all = IntervalSet::of(Interval::new(
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
    ));
    for name in order {
        let Some((m, parents)) = nodes.get(name) else {
            continue;
        };
        let mut input = IntervalSet::new();
        let mut hit = false;
        if selected.contains(name) {
            input = ctx
                .window
                .map(IntervalSet::of)
                .unwrap_or_else(|| all.clone());
            hit = true;
        }
        for p in parents.iter() {
            if let Some(w) = passed.get(p) {
                input = input.union(w);
                hit = true;
            }
        }
        if !hit {
            continue;
        }
        let e = expected(ctx, m);
        let (own, pass) = match &m.kind {
            Kind::IncrementalByTimeRange { .. } => {
                let mut r = input.intersect(&e).align(m.interval_unit).intersect(&e);
                if m.self_referencing
                    && let (Some(first), Some(span)) = (r.span(), e.span())
                {
                    r = IntervalSet::of(Interval::new(first.start, span.end));
                }
                (r.clone(), r)
            }
            Kind::IncrementalByUniqueKey { .. } => (e.clone(), all.clone()),
            Kind::Full | Kind::View | Kind::Seed { .. } | Kind::Embedded => (e, input),
        };
        passed.insert(name, pass);
        out.insert(name.clone(), own);
    }
    out
}

/// The backfill of one model in the target environment.
pub fn compute(
    ctx: &Scope<'_>,
    snap: &Snapshot,
    table: Option<&str>,
    in_env: bool,
    category: Option<Category>,
    restated: Option<&IntervalSet>,
) -> Option<Backfill> {
    let m = &snap.model;
    let unit = m.interval_unit;
    // Looked up only where needed: most models of most plans are in the environment already.
    let completed = || table.map(|t| ctx.state.intervals(t)).unwrap_or_default();
    let whole = |action: BackfillAction, intervals: IntervalSet, partitions: u64| Backfill {
        action,
        interval_unit: unit,
        intervals,
        partitions,
        batches: 1,
        batch_size: 1,
        full_refresh: true,
    };
    match &m.kind {
        Kind::Embedded => None,
        Kind::View if ctx.catch_up => None,
        Kind::Seed { .. } if ctx.catch_up => None,
        Kind::Full if ctx.catch_up => {
            let e = expected(ctx, m);
            (!e.subtract(&completed()).is_empty()).then(|| whole(BackfillAction::FullRefresh, e, 1))
        }
        Kind::View => (restated.is_some() || !in_env)
            .then(|| whole(BackfillAction::RecreateView, IntervalSet::new(), 0)),
        Kind::Seed { .. } => (restated.is_some() || !in_env && completed().is_empty())
            .then(|| whole(BackfillAction::LoadSeed, IntervalSet::new(), 1)),
        Kind::Full => (restated.is_some() || !in_env && completed().is_empty())
            .then(|| whole(BackfillAction::FullRefresh, expected(ctx, m), 1)),
        Kind::IncrementalByTimeRange { .. } | Kind::IncrementalByUniqueKey { .. } => {
            let lookback = match &m.kind {
                Kind::IncrementalByTimeRange { lookback, .. } => *lookback,
                _ => 0,
            };
            let mut todo = restated.cloned().unwrap_or_default();
            let keeps_table = category == Some(Category::ForwardOnly);
            if !in_env && !keeps_table {
                let mut e = expected(ctx, m);
                if let Some(w) = ctx.window {
                    e = e.intersect(&IntervalSet::of(w).align(unit));
                }
                let missing = e.subtract(&completed());
                let mut with_lookback = missing.clone();
                if lookback > 0
                    && let Some(span) = expected(ctx, m).span()
                {
                    // Lookback never reaches before the user's window: upstream models of a
                    // windowed plan have no data there yet.
                    let floor = ctx.window.map_or(span.start, |w| w.start.max(span.start));
                    for r in missing.ranges() {
                        let mut s = r.start;
                        for _ in 0..lookback {
                            if s <= floor {
                                break;
                            }
                            s = unit.prev(s);
                        }
                        with_lookback.insert(Interval::new(s, r.start));
                    }
                }
                todo = todo.union(&with_lookback);
            }
            if todo.is_empty() {
                return None;
            }
            let size = batch_size(m);
            let restates_all =
                restated.is_some() && matches!(m.kind, Kind::IncrementalByUniqueKey { .. });
            Some(Backfill {
                action: BackfillAction::Compute,
                interval_unit: unit,
                partitions: todo.count(unit),
                batches: todo.batch_count(unit, size),
                batch_size: size,
                intervals: todo,
                full_refresh: restates_all,
            })
        }
    }
}

/// A FULL model's complete recomputation (e.g. because an upstream model gets data in the same
/// plan, so the table it has was computed from less).
pub fn full_refresh(ctx: &Scope<'_>, snap: &Snapshot) -> Backfill {
    Backfill {
        action: BackfillAction::FullRefresh,
        interval_unit: snap.model.interval_unit,
        intervals: expected(ctx, &snap.model),
        partitions: 1,
        batches: 1,
        batch_size: 1,
        full_refresh: true,
    }
}
