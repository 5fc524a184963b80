//! The batch graph of an apply: one node per model × window, edges at partition granularity.
//!
//! Invariants (pure, no I/O):
//! - A batch depends on exactly the batches of upstream models whose windows overlap its own;
//!   on *every* batch of an upstream model that is computed whole (FULL, SEED, a view check),
//!   or of anything read through a VIEW (a view may read any time range of what it reads).
//!   EMBEDDED models are part of their consumer's query: what they read counts as read by the
//!   consumer, with the same overlap rule.
//! - Upstream models with no work in this apply impose nothing (their data is already there),
//!   but views and embedded models without work are looked through.
//! - Models whose batches read their own earlier output (self-referencing) or merge in order
//!   (INCREMENTAL_BY_UNIQUE_KEY) form a chain, oldest first, whatever the run order.
//! - The graph is acyclic: edges only point to models earlier in the plan's topological order
//!   or, within a chain, to earlier windows.
//! - Output order is deterministic: models in plan order, windows oldest first.

use std::collections::{BTreeMap, BTreeSet};

use crate::interval::Interval;
use crate::project::ModelName;

/// How a model is read by its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// A materialized table.
    Table,
    /// A view: consumers may read any part of what it reads.
    View,
    /// Inlined into consumers.
    Embedded,
    /// An external source.
    Source,
}

/// The work of one model in an apply.
#[derive(Debug, Clone)]
pub struct ModelWork {
    pub name: ModelName,
    /// Windows, oldest first (one whole-table window for FULL, SEED and views).
    pub windows: Vec<Interval>,
    /// Whether each window is a time slice (else the batch covers the whole model).
    pub windowed: bool,
    /// Batches must run one after another, oldest first.
    pub sequential: bool,
    /// Maximum batches of this model running at once.
    pub concurrency: usize,
    /// Directly modified, added or restated: its first batches are canaries.
    pub canary: bool,
}

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Position in the graph.
    pub id: usize,
    pub model: ModelName,
    /// Window (half-open).
    pub window: Interval,
    /// A time slice (else the whole model).
    pub windowed: bool,
    /// 0-based position among the model's batches, oldest first.
    pub index: usize,
    /// Number of batches of the model.
    pub of: usize,
    /// Batches that must be complete first (ascending ids).
    pub deps: Vec<usize>,
    /// External sources this batch reads (directly or through views and embedded models).
    pub sources: Vec<ModelName>,
    /// One of the first batches of a canary model, or something such a batch needs.
    pub canary: bool,
}

/// What the graph needs to know about every model and source the plan's models can read.
pub struct Upstream<'a> {
    /// Node type by name (models of the environment and sources).
    pub nodes: &'a BTreeMap<ModelName, Node>,
    /// Direct parents by model name (self-references excluded).
    pub parents: &'a BTreeMap<ModelName, Vec<ModelName>>,
}

/// How a dependency constrains: by overlapping windows or on the whole upstream model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    Overlap,
    Whole,
}

/// Build the batch graph. `canary` is how many of the first batches of each canary model run
/// before anything else fans out (0: no canary).
pub fn build(work: &[ModelWork], up: &Upstream<'_>, canary: usize) -> Vec<Batch> {
    let mut batches: Vec<Batch> = Vec::new();
    // Per model with work: its batch ids (oldest first), windows and whether windowed.
    let mut by_model: BTreeMap<&ModelName, (Vec<usize>, bool)> = BTreeMap::new();
    for w in work {
        let of = w.windows.len();
        let (needs, sources) = reads(&w.name, up);
        let mut ids = Vec::with_capacity(of);
        for (index, window) in w.windows.iter().enumerate() {
            let id = batches.len();
            let mut deps = BTreeSet::new();
            for (parent, need) in &needs {
                let Some((pids, pwindowed)) = by_model.get(parent) else {
                    continue;
                };
                if *need == Need::Whole || !*pwindowed || !w.windowed {
                    deps.extend(pids.iter().copied());
                } else {
                    deps.extend(overlapping(&batches, pids, *window));
                }
            }
            if w.sequential && index > 0 {
                deps.insert(id - 1);
            }
            batches.push(Batch {
                id,
                model: w.name.clone(),
                window: *window,
                windowed: w.windowed,
                index,
                of,
                deps: deps.into_iter().collect(),
                sources: sources.clone(),
                canary: w.canary && index < canary,
            });
            ids.push(id);
        }
        by_model.insert(&w.name, (ids, w.windowed));
    }
    // The canary set includes everything the canary batches need.
    let mut stack: Vec<usize> = batches.iter().filter(|b| b.canary).map(|b| b.id).collect();
    while let Some(id) = stack.pop() {
        let deps = batches[id].deps.clone();
        for d in deps {
            if !batches[d].canary {
                batches[d].canary = true;
                stack.push(d);
            }
        }
    }
    batches
}

/// Ids among `ids` (one model's batches, disjoint windows, oldest first) overlapping `w`.
fn overlapping(batches: &[Batch], ids: &[usize], w: Interval) -> Vec<usize> {
    let first = ids.partition_point(|&i| batches[i].window.end <= w.start);
    ids[first..]
        .iter()
        .copied()
        .take_while(|&i| batches[i].window.start < w.end)
        .collect()
}

/// The models `name` reads, looking through views and embedded models, with how each is
/// needed; and the external sources it reads.
fn reads(name: &ModelName, up: &Upstream<'_>) -> (BTreeMap<ModelName, Need>, Vec<ModelName>) {
    let mut needs: BTreeMap<ModelName, Need> = BTreeMap::new();
    let mut sources = BTreeSet::new();
    let mut seen: BTreeSet<(ModelName, Need)> = BTreeSet::new();
    let mut stack: Vec<(ModelName, Need)> = up
        .parents
        .get(name)
        .into_iter()
        .flatten()
        .filter(|p| *p != name)
        .map(|p| (p.clone(), Need::Overlap))
        .collect();
    while let Some((p, need)) = stack.pop() {
        if !seen.insert((p.clone(), need)) {
            continue;
        }
        let e = needs.entry(p.clone()).or_insert(need);
        *e = (*e).max(need);
        let next = match up.nodes.get(&p) {
            Some(Node::Source) => {
                sources.insert(p.clone());
                continue;
            }
            Some(Node::View) => Need::Whole,
            Some(Node::Embedded) => need,
            Some(Node::Table) | None => continue,
        };
        for pp in up.parents.get(&p).into_iter().flatten() {
            if *pp != p {
                stack.push((pp.clone(), next));
            }
        }
    }
    (needs, sources.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interval::IntervalUnit;
    use chrono::{TimeZone, Utc};

    fn n(s: &str) -> ModelName {
        ModelName::parse(s).unwrap()
    }

    fn days(from: u32, to: u32, size: u32) -> Vec<Interval> {
        let d = |x: u32| Utc.with_ymd_and_hms(2024, 1, x, 0, 0, 0).unwrap();
        (from..to)
            .step_by(size as usize)
            .map(|s| Interval::new(d(s), d((s + size).min(to))))
            .collect()
    }

    fn work(name: &str, windows: Vec<Interval>, windowed: bool) -> ModelWork {
        ModelWork {
            name: n(name),
            windows,
            windowed,
            sequential: false,
            concurrency: 4,
            canary: false,
        }
    }

    fn graph(
        edges: &[(&str, &str)],
        nodes: &[(&str, Node)],
    ) -> (
        BTreeMap<ModelName, Node>,
        BTreeMap<ModelName, Vec<ModelName>>,
    ) {
        let mut parents: BTreeMap<ModelName, Vec<ModelName>> = BTreeMap::new();
        for (child, parent) in edges {
            parents.entry(n(child)).or_default().push(n(parent));
        }
        (nodes.iter().map(|(k, v)| (n(k), *v)).collect(), parents)
    }

    #[test]
    fn a_child_batch_waits_only_for_overlapping_parent_batches() {
        let _ = IntervalUnit::Day;
        let (nodes, parents) = graph(
            &[("s.b", "s.a"), ("s.a", "raw.x")],
            &[
                ("s.a", Node::Table),
                ("s.b", Node::Table),
                ("raw.x", Node::Source),
            ],
        );
        let up = Upstream {
            nodes: &nodes,
            parents: &parents,
        };
        // a: 10 days in batches of 2 (ids 0..5); b: batches of 3 (ids 5..9).
        let g = build(
            &[
                work("s.a", days(1, 11, 2), true),
                work("s.b", days(1, 11, 3), true),
            ],
            &up,
            0,
        );
        assert_eq!(g.len(), 9);
        // b [1,4) needs a [1,3) and [3,5); b [4,7) needs [3,5), [5,7); b [10,11) needs [9,11).
        assert_eq!(g[5].deps, vec![0, 1]);
        assert_eq!(g[6].deps, vec![1, 2]);
        assert_eq!(g[8].deps, vec![4]);
        assert!(g[0].deps.is_empty());
        assert_eq!(g[0].sources, vec![n("raw.x")]);
        assert!(
            g[5].sources.is_empty(),
            "a table in between reads the source, not b"
        );
    }

    #[test]
    fn whole_parents_views_chains_and_canaries() {
        let (nodes, parents) = graph(
            &[
                ("s.v", "s.a"),
                ("s.c", "s.v"),
                ("s.e", "s.a"),
                ("s.d", "s.e"),
                ("s.f", "s.d"),
            ],
            &[
                ("s.a", Node::Table),
                ("s.v", Node::View),
                ("s.c", Node::Table),
                ("s.e", Node::Embedded),
                ("s.d", Node::Table),
                ("s.f", Node::Table),
            ],
        );
        let up = Upstream {
            nodes: &nodes,
            parents: &parents,
        };
        let mut d = work("s.d", days(1, 5, 1), true);
        d.sequential = true;
        d.canary = true;
        let g = build(
            &[
                work("s.a", days(1, 5, 1), true),  // 0..4
                work("s.c", days(1, 5, 1), true),  // 4..8: through a view → all of a
                d,                                 // 8..12: through embedded → overlap, chained
                work("s.f", days(1, 5, 5), false), // 12: FULL → all of d
            ],
            &up,
            2,
        );
        assert_eq!(g[4].deps, vec![0, 1, 2, 3]);
        assert_eq!(g[8].deps, vec![0]);
        assert_eq!(g[9].deps, vec![1, 8]);
        assert_eq!(g[12].deps, vec![8, 9, 10, 11]);
        // Canaries: d's first two batches and what they need (a's first two).
        let canaries: Vec<usize> = g.iter().filter(|b| b.canary).map(|b| b.id).collect();
        assert_eq!(canaries, vec![0, 1, 8, 9]);
        // Acyclic: every dependency has a smaller id.
        assert!(g.iter().all(|b| b.deps.iter().all(|&d| d < b.id)));
    }
}
