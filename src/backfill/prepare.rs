//! Getting an apply ready: the snapshot of every target model, the catalog of tables and the
//! versions each is read at, each model's job, the batch graph, and the apply's description
//! for its progress record (the new generations are cloned as the apply runs: [`super::clones`]).
//!
//! Invariants:
//! - [`prepare`] writes nothing (it runs before the apply's lease is taken); everything it reads
//!   is read at a version fixed here: the pins of the environments involved, else a table's
//!   latest version.

use std::collections::{BTreeMap, BTreeSet};

use super::batches::{self, Batch, Node, Upstream};
use super::catalog::{Catalog, Entry};
use super::{ApplyRun, job, precheck};
use crate::error::{Diagnostic, Error, Result};
use crate::interval::format_ts;
use crate::plan::Plan;
use crate::project::{Config, Kind, ModelName};
use crate::state::progress::{self, ApplyInfo, PlannedBatch};
use crate::state::{Snapshot, State, TableId};

/// The snapshot of every model in the plan's target.
pub(super) fn target_snapshots(
    plan: &Plan,
    state: &State,
) -> Result<BTreeMap<ModelName, Snapshot>> {
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

/// The pins a plan starts from: for each table, the newest version any of the environments
/// involved (target, base, the one definitions come from) pins, so a pin never moves back.
fn initial_pins(plan: &Plan, state: &State) -> BTreeMap<TableId, u64> {
    let mut pins: BTreeMap<TableId, u64> = BTreeMap::new();
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

/// What an apply works from: the catalog, each model's job, the batch graph.
pub(super) type Prepared<'a> = (
    Catalog<'a>,
    BTreeMap<ModelName, job::ModelJob>,
    (Vec<Batch>, Vec<batches::ModelWork>),
);

/// The catalog, jobs and batch graph of `plan`, read before the lease is taken (the last input
/// checks included: the engine accepts every model the apply runs).
pub(super) fn prepare<'a>(
    cx: &'a ApplyRun<'_>,
    plan: &'a Plan,
    snapshots: BTreeMap<ModelName, Snapshot>,
    source_versions: BTreeMap<ModelName, u64>,
) -> Result<Prepared<'a>> {
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
    let catalog = Catalog::new(
        entries,
        &cx.config.sources,
        source_versions,
        plan.execution_time,
    );
    let jobs = job::model_jobs(cx, &catalog, &plan.models)?;
    let graph = batch_graph(plan, &catalog, cx.config, cx.options.canary)?;
    precheck::run(cx, plan, &catalog)?;
    Ok((catalog, jobs, graph))
}

/// The batch graph of a plan and each model's work.
fn batch_graph(
    plan: &Plan,
    catalog: &Catalog<'_>,
    config: &Config,
    canary: usize,
) -> Result<(Vec<Batch>, Vec<batches::ModelWork>)> {
    let now = plan.execution_time;
    let mut work = Vec::new();
    for m in &plan.models {
        let Some(e) = catalog.entries.get(&m.name) else {
            continue;
        };
        let rec = &e.snapshot.model;
        if let Some(w) = job::work_of(
            m,
            &rec.kind,
            rec.self_referencing,
            rec.interval_unit.last_complete(now),
        ) {
            work.push(w);
        }
    }
    let mut nodes = BTreeMap::new();
    let mut parents = BTreeMap::new();
    let building: BTreeSet<&ModelName> = work.iter().map(|w| &w.name).collect();
    for (name, e) in &catalog.entries {
        let node = match e.snapshot.model.kind {
            Kind::View => Node::View,
            Kind::Embedded => Node::Embedded,
            // Never written and not built now: read as an empty view of its query (see
            // `Catalog::inputs`), so its readers wait for what that query reads.
            Kind::IncrementalByTimeRange { .. } | Kind::IncrementalByUniqueKey { .. }
                if e.version.is_none() && !building.contains(name) =>
            {
                Node::View
            }
            _ => Node::Table,
        };
        nodes.insert(name.clone(), node);
        parents.insert(
            name.clone(),
            e.snapshot.parents.keys().cloned().collect::<Vec<_>>(),
        );
    }
    for name in config.sources.keys() {
        nodes.insert(name.clone(), Node::Source);
    }
    let up = Upstream {
        nodes: &nodes,
        parents: &parents,
    };
    Ok((batches::build(&work, &up, canary), work))
}

/// The apply's description, recorded with its progress.
pub(super) fn apply_info(cx: &ApplyRun<'_>, plan: &Plan, batches: &[Batch]) -> Result<ApplyInfo> {
    let units: BTreeMap<&ModelName, crate::interval::IntervalUnit> = plan
        .models
        .iter()
        .filter_map(|m| Some((&m.name, m.backfill.as_ref()?.interval_unit)))
        .collect();
    Ok(ApplyInfo {
        format: progress::PROGRESS_FORMAT.to_string(),
        id: cx.apply.id.clone(),
        command: cx.apply.trigger.command().to_string(),
        environment: plan.environment.clone(),
        plan_id: plan.plan_id.clone(),
        user: progress::current_user(),
        git_commit: progress::git_commit(&cx.config.root),
        started: cx.now,
        workers: cx.options.workers.get(),
        batches: batches
            .iter()
            .map(|b| PlannedBatch {
                id: b.id,
                model: b.model.to_string(),
                start: format_ts(b.window.start),
                end: format_ts(b.window.end),
                intervals: match units.get(&b.model) {
                    Some(u) if b.windowed => intervals_in(*u, b.window),
                    _ => 1,
                },
            })
            .collect(),
        late_sources: plan
            .late_data
            .iter()
            .filter(|l| l.restated)
            .flat_map(|l| &l.sources)
            .filter(|s| s.untracked.is_none())
            .map(|s| (s.source.to_string(), s.versions.clone()))
            .collect(),
        accepted_gates: plan.accepted_gates.clone(),
    })
}

/// How many intervals of `unit` start in `w`.
fn intervals_in(unit: crate::interval::IntervalUnit, w: crate::interval::Interval) -> u64 {
    let mut n = 0;
    let mut t = unit.floor(w.start);
    while t < w.end {
        n += 1;
        t = unit.next(t);
    }
    n
}
