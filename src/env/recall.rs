//! Recall: which environments, models and windows hold data computed from given versions of a
//! source (a bad load to trace), from the batches' recorded inputs.
//!
//! Pure: the caller reads the progress records and the state.
//!
//! Invariants:
//! - A batch that read the source at version `p` read every commit up to `p`; it read the
//!   recalled versions `[from, to]` when `p >= from`.
//! - What an environment's table holds for a window is what its latest complete batch there
//!   wrote: batches are replayed in the order they finished, a later batch that did not read
//!   the versions clears its window, one that did adds it. A restatement's new generation
//!   starts as a clone of the generation before it, so that generation's batches finished
//!   before the new one was recorded count for it too.
//! - An environment reads its table at its pinned version: batches that committed after the
//!   pin (a `run` of another environment sharing the table) are not in what it reads.
//! - Only models that read the source directly are listed; what reads them is the
//!   restatement's cascade (`recall --plan`).
//! - Output is sorted by environment, then model.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::interval::{Interval, IntervalSet};
use crate::names::TableId;
use crate::project::ModelName;
use crate::state::State;

/// One complete batch, as the progress records hold it.
#[derive(Debug, Clone)]
pub struct DoneBatch {
    /// The apply.
    pub apply_id: String,
    /// Its table.
    pub table: TableId,
    /// Its window.
    pub window: Interval,
    /// When it finished.
    pub finished: DateTime<Utc>,
    /// The table version it wrote.
    pub table_version: Option<u64>,
    /// The version of the recalled source it read (`None`: it did not read it).
    pub read: Option<u64>,
}

/// What one environment's model holds from the recalled versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    /// The environment.
    pub environment: String,
    /// The model.
    pub model: ModelName,
    /// Its table.
    pub table: TableId,
    /// The windows computed from the recalled versions.
    pub windows: IntervalSet,
    /// The batches that computed them: apply id, window, version read.
    pub batches: Vec<HitBatch>,
}

/// One batch behind a hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HitBatch {
    /// The apply.
    pub apply_id: String,
    /// Its window.
    pub window: Interval,
    /// The source version it read.
    pub read_version: u64,
}

/// Every environment's models whose tables hold data computed from versions `from..` of the
/// source (see the module invariants). `batches` are every complete batch of every apply.
pub fn find(state: &State, from: u64, batches: &[DoneBatch]) -> Vec<Hit> {
    let mut by_table: BTreeMap<&str, Vec<&DoneBatch>> = BTreeMap::new();
    for b in batches {
        by_table.entry(b.table.as_str()).or_default().push(b);
    }
    let mut out = Vec::new();
    for (env_name, env) in &state.environments {
        for (model, m) in &env.models {
            let Some(table) = &m.table else { continue };
            let mut lineage: Vec<&DoneBatch> = Vec::new();
            let mut cutoff: Option<DateTime<Utc>> = None;
            for t in generations(state, table) {
                let Some(bs) = by_table.get(t.as_str()) else {
                    continue;
                };
                // The environment reads its own table at its pin: later batches are not in it.
                let pinned = |b: &&&DoneBatch| {
                    t != *table
                        || m.table_version
                            .is_none_or(|pin| b.table_version.is_none_or(|v| v <= pin))
                };
                lineage.extend(
                    bs.iter()
                        .filter(|b| cutoff.is_none_or(|c| b.finished <= c))
                        .filter(pinned),
                );
                // Older generations count up to when this one was recorded.
                if let Some(p) = state.tables.get(&t) {
                    cutoff = Some(cutoff.map_or(p.created_at, |c| c.min(p.created_at)));
                }
            }
            if !lineage.iter().any(|b| b.read.is_some()) {
                continue;
            }
            lineage.sort_by(|a, b| {
                (a.finished, &a.apply_id, a.window.start).cmp(&(
                    b.finished,
                    &b.apply_id,
                    b.window.start,
                ))
            });
            let mut windows = IntervalSet::new();
            let mut behind: Vec<HitBatch> = Vec::new();
            for b in lineage {
                let w = IntervalSet::of(b.window);
                match b.read {
                    Some(p) if p >= from => {
                        windows = windows.union(&w);
                        behind.push(HitBatch {
                            apply_id: b.apply_id.clone(),
                            window: b.window,
                            read_version: p,
                        });
                    }
                    _ => {
                        windows = windows.subtract(&w);
                        behind.retain(|h| !IntervalSet::of(h.window).subtract(&w).is_empty());
                    }
                }
            }
            if windows.is_empty() {
                continue;
            }
            behind.retain(|h| !windows.intersect(&IntervalSet::of(h.window)).is_empty());
            out.push(Hit {
                environment: env_name.to_string(),
                model: model.clone(),
                table: table.clone(),
                windows,
                batches: behind,
            });
        }
    }
    out
}

/// `table` and the generations of its model version before it, newest first.
fn generations(state: &State, table: &TableId) -> Vec<TableId> {
    let mut out = vec![table.clone()];
    if let Some(p) = state.tables.get(table) {
        out.extend(
            (0..p.generation)
                .rev()
                .map(|g| TableId::new(&p.name, &p.version, g)),
        );
    }
    out
}
