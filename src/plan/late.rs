//! Late-arriving and corrected source data: which computed windows a Delta source's commits
//! changed after the environment read it, and the restatement that follows.
//!
//! Pure: the engine reads each source's log ([`crate::engine::SourceLog`]); this module places
//! the changes against what the environment computed.
//!
//! Invariants:
//! - A change is late when its time range, widened to the finest unit of the tables downstream
//!   of the source (in the environment), meets an interval they already computed; only that
//!   part of it is reported. Appends into intervals never computed are ordinary new
//!   intervals, for `run`.
//! - Rewrites (`dataChange: false`) are never late data.
//! - A change that cannot be placed in time (the source declares no `time_column`, the file has
//!   no statistics of it, the log no longer holds the commits) reports the whole computed range
//!   and is marked untracked: it is shown, never restated automatically.
//! - The restatement of the late windows follows the plan's own cascade
//!   ([`super::intervals::restatement`]): children widen to their units, FULL children refresh,
//!   unique-key children restate their history.
//! - Output is sorted by source name; an environment with nothing late gets no section at all.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::intervals::{self, Scope};
use crate::engine::{FileChange, SourceLog};
use crate::interval::{IntervalSet, IntervalUnit};
use crate::project::{Kind, ModelName, Source, SourceFormat};
use crate::state::{Environment, ModelRecord};

/// The plan's "late or corrected source data" section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateData {
    /// Sources with late or corrected data, by name.
    pub sources: Vec<LateSource>,
    /// Sources read by the environment that detection cannot follow, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_tracked: Vec<NotTracked>,
    /// Does this plan restate the late windows (`--restate-late`)?
    pub restated: bool,
}

/// One source's late or corrected data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateSource {
    /// The source.
    pub source: ModelName,
    /// The version the environment's data was computed from.
    pub since_version: u64,
    /// The source's latest version.
    pub latest_version: u64,
    /// The versions whose commits changed computed windows.
    pub versions: Vec<u64>,
    /// The computed windows they changed (merged, half-open, UTC).
    pub windows: IntervalSet,
    /// Data files added and removed there.
    pub files_added: u64,
    /// Data files removed.
    pub files_removed: u64,
    /// Rows in the added files (as their statistics say).
    pub rows_added: u64,
    /// Rows in the removed files.
    pub rows_removed: u64,
    /// Why the changes cannot be placed in time (then `windows` is the whole computed range,
    /// and nothing is restated automatically).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untracked: Option<String>,
    /// What restating the windows recomputes: every downstream model and its windows.
    pub restates: Vec<LateModel>,
}

/// One model a late-data restatement recomputes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateModel {
    /// The model.
    pub model: ModelName,
    /// Its windows.
    pub windows: IntervalSet,
}

/// A source detection cannot follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotTracked {
    /// The source.
    pub source: ModelName,
    /// Why.
    pub reason: String,
}

/// Models with their records and parents, as the plan's cascade reads them.
pub type Nodes<'a> = BTreeMap<&'a ModelName, (&'a ModelRecord, &'a BTreeSet<ModelName>)>;

/// The late-data section for environment `env` from the sources' `logs` (`None`: nothing late).
pub fn detect(
    ctx: &Scope<'_>,
    env: &Environment,
    sources: &BTreeMap<ModelName, Source>,
    logs: &BTreeMap<ModelName, SourceLog>,
    order: &[ModelName],
    nodes: &Nodes<'_>,
) -> Option<LateData> {
    let mut out = LateData::default();
    for (name, source) in sources {
        let reads = downstream_tables(name, order, nodes, env);
        if reads.is_empty() {
            continue;
        }
        if source.format != SourceFormat::Delta {
            out.not_tracked.push(NotTracked {
                source: name.clone(),
                reason: format!(
                    "a {} source has no log of its changes",
                    source.format.as_str()
                ),
            });
            continue;
        }
        let Some(log) = logs.get(name) else { continue };
        let computed = reads.iter().fold(IntervalSet::new(), |acc, (t, _)| {
            acc.union(&ctx.state.intervals(t))
        });
        // Windows are told in the finest unit of the tables that read the source.
        let unit = reads
            .iter()
            .map(|(_, u)| *u)
            .min()
            .unwrap_or(IntervalUnit::Day);
        if let Some(late) = late_source(name, source, log, &computed, unit) {
            out.sources.push(late);
        }
    }
    if out.sources.is_empty() {
        return None;
    }
    for s in &mut out.sources {
        let seeds = BTreeMap::from([(s.source.clone(), s.windows.clone())]);
        s.restates = intervals::restatement(ctx, order, nodes, &BTreeSet::new(), &seeds)
            .into_iter()
            // Views and embedded models hold nothing: what reads them is listed.
            .filter(|(m, w)| {
                !w.is_empty()
                    && nodes
                        .get(m)
                        .is_some_and(|(r, _)| !matches!(r.kind, Kind::View | Kind::Embedded))
            })
            .map(|(model, windows)| LateModel { model, windows })
            .collect();
    }
    Some(out)
}

/// The restatement seeds of the tracked late windows (`--restate-late`).
pub fn seeds(late: &LateData) -> BTreeMap<ModelName, IntervalSet> {
    late.sources
        .iter()
        .filter(|s| s.untracked.is_none())
        .map(|s| (s.source.clone(), s.windows.clone()))
        .collect()
}

/// One source's late changes against the `computed` intervals downstream of it.
fn late_source(
    name: &ModelName,
    source: &Source,
    log: &SourceLog,
    computed: &IntervalSet,
    unit: IntervalUnit,
) -> Option<LateSource> {
    let mut late = LateSource {
        source: name.clone(),
        since_version: log.since,
        latest_version: log.latest,
        versions: Vec::new(),
        windows: IntervalSet::new(),
        files_added: 0,
        files_removed: 0,
        rows_added: 0,
        rows_removed: 0,
        untracked: log.unreadable.clone(),
        restates: Vec::new(),
    };
    let mut versions = BTreeSet::new();
    if log.unreadable.is_some() {
        versions.extend(log.since + 1..=log.latest);
    }
    for c in &log.changes {
        let hit = match c.range {
            Some(r) => computed.intersect(&IntervalSet::of(r).align(unit)),
            None => {
                late.untracked
                    .get_or_insert_with(|| match &source.time_column {
                        None => "the source declares no `time_column`".to_string(),
                        Some(col) => format!("a data file has no statistics of `{col}`"),
                    });
                computed.clone()
            }
        };
        if hit.is_empty() {
            continue;
        }
        versions.insert(c.version);
        late.windows = late.windows.union(&hit);
        count(&mut late, c);
    }
    if versions.is_empty() || computed.is_empty() {
        return None;
    }
    if late.untracked.is_some() {
        late.windows = computed.clone();
    }
    late.versions = versions.into_iter().collect();
    Some(late)
}

/// Count `c`'s file and rows into `late`.
fn count(late: &mut LateSource, c: &FileChange) {
    let rows = c.rows.unwrap_or(0);
    if c.added {
        late.files_added += 1;
        late.rows_added += rows;
    } else {
        late.files_removed += 1;
        late.rows_removed += rows;
    }
}

/// The tables of the environment's models that read `source`, directly or through others,
/// with their models' units.
fn downstream_tables(
    source: &ModelName,
    order: &[ModelName],
    nodes: &Nodes<'_>,
    env: &Environment,
) -> Vec<(crate::state::TableId, IntervalUnit)> {
    let mut reached: BTreeSet<&ModelName> = BTreeSet::from([source]);
    let mut out = Vec::new();
    for name in order {
        let Some((record, parents)) = nodes.get(name) else {
            continue;
        };
        if !parents.iter().any(|p| reached.contains(p)) {
            continue;
        }
        reached.insert(name);
        if let Some(t) = env.models.get(name).and_then(|m| m.table.clone()) {
            out.push((t, record.interval_unit));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interval::{Interval, parse_instant};

    fn day(d: u32) -> chrono::DateTime<chrono::Utc> {
        parse_instant(&format!("2024-03-{d:02}")).unwrap().at
    }

    fn source(time_column: Option<&str>) -> Source {
        Source {
            name: ModelName::parse("raw.events").unwrap(),
            path: "/data/events".into(),
            declared_path: "data/events".into(),
            format: SourceFormat::Delta,
            columns: BTreeMap::new(),
            time_column: time_column.map(str::to_string),
        }
    }

    fn change(version: u64, added: bool, range: Option<(u32, u32)>) -> FileChange {
        FileChange {
            version,
            added,
            rows: Some(3),
            range: range.map(|(a, b)| Interval::new(day(a), day(b))),
        }
    }

    #[test]
    fn only_changes_in_computed_intervals_are_late() {
        let computed = IntervalSet::of(Interval::new(day(1), day(8)));
        let log = SourceLog {
            since: 4,
            latest: 7,
            changes: vec![
                change(5, true, Some((2, 3))),
                change(6, true, Some((9, 10))), // new data, not late
                change(7, false, Some((7, 9))), // half in, half new
            ],
            rewrites: 1,
            unreadable: None,
        };
        let name = ModelName::parse("raw.events").unwrap();
        let late = late_source(
            &name,
            &source(Some("ts")),
            &log,
            &computed,
            IntervalUnit::Day,
        )
        .unwrap();
        assert_eq!(late.versions, [5, 7]);
        assert_eq!(
            late.windows,
            IntervalSet::of(Interval::new(day(2), day(3)))
                .union(&IntervalSet::of(Interval::new(day(7), day(8))))
        );
        assert_eq!((late.files_added, late.files_removed), (1, 1));
        assert_eq!((late.rows_added, late.rows_removed), (3, 3));
        assert!(late.untracked.is_none());
        // Only new data: nothing late.
        let new_only = SourceLog {
            changes: vec![change(5, true, Some((9, 10)))],
            ..log.clone()
        };
        assert!(
            late_source(
                &name,
                &source(Some("ts")),
                &new_only,
                &computed,
                IntervalUnit::Day
            )
            .is_none()
        );
    }

    #[test]
    fn changes_without_a_time_report_the_whole_range_untracked() {
        let computed = IntervalSet::of(Interval::new(day(1), day(8)));
        let log = SourceLog {
            since: 4,
            latest: 5,
            changes: vec![change(5, true, None)],
            rewrites: 0,
            unreadable: None,
        };
        let name = ModelName::parse("raw.events").unwrap();
        let late = late_source(&name, &source(None), &log, &computed, IntervalUnit::Day).unwrap();
        assert_eq!(late.windows, computed);
        assert_eq!(
            late.untracked.as_deref(),
            Some("the source declares no `time_column`")
        );
        let gone = SourceLog {
            changes: Vec::new(),
            unreadable: Some("commit 5 is no longer in the log".into()),
            ..log
        };
        let late = late_source(
            &name,
            &source(Some("ts")),
            &gone,
            &computed,
            IntervalUnit::Day,
        )
        .unwrap();
        assert_eq!(
            (late.windows.clone(), late.versions.clone()),
            (computed, vec![5])
        );
        assert!(late.untracked.is_some());
        // Seeds leave untracked sources out.
        let data = LateData {
            sources: vec![late],
            not_tracked: Vec::new(),
            restated: false,
        };
        assert!(seeds(&data).is_empty());
    }
}
