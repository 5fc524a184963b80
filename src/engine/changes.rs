//! What a Delta source's commits changed after a version: the data files they added and
//! removed, each placed in time by the source's time column (late-data detection).
//!
//! Invariants:
//! - Only the commits after `since` are read, one log entry each, never the table's history
//!   before it; the file list as of `since` is loaded (from its checkpoint) only when a
//!   removed file's time range cannot be told from the `remove` action itself.
//! - Actions with `dataChange: false` (compaction, `OPTIMIZE`, checkpoint-only rewrites) change
//!   no rows and are counted, not reported.
//! - A file's time range comes from its partition value when the time column partitions the
//!   table, else from its `minValues`/`maxValues` statistics; a date covers its whole day. A
//!   file without either has no range (`None`): its change can only be reported as "somewhere".
//! - A commit no longer in the log (log cleanup after a checkpoint) stops the reading: the
//!   result says so, and nothing after it is guessed.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use deltalake::kernel::Action;
use futures::TryStreamExt;
use serde::Serialize;

use super::{Location, delta, failed, tables};
use crate::error::Result;
use crate::interval::{Interval, parse_instant};

/// One data file a commit added or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// The commit's version.
    pub version: u64,
    /// Added (`true`) or removed.
    pub added: bool,
    /// Rows in the file, when its statistics say.
    pub rows: Option<u64>,
    /// The half-open time range its rows lie in (`None`: unknown).
    pub range: Option<Interval>,
}

/// What a source's commits after `since` changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceLog {
    /// The version the changes start after.
    pub since: u64,
    /// The latest version (equal to `since`: nothing new).
    pub latest: u64,
    /// Every data file added or removed with `dataChange`, in commit order.
    pub changes: Vec<FileChange>,
    /// Commits whose only file actions were rewrites (`dataChange: false`).
    pub rewrites: u64,
    /// Why commits after `since` could not all be read (log cleanup), if so.
    pub unreadable: Option<String>,
}

/// Read what the source at `at` changed after version `since` (see the module invariants).
pub async fn read(at: &Location, since: u64, time_column: Option<&str>) -> Result<SourceLog> {
    let (table, latest) = log_of(at, since).await?;
    let mut log = SourceLog {
        since,
        latest: latest.max(since),
        ..SourceLog::default()
    };
    let column = time_column.map(str::to_lowercase);
    let mut known: Option<HashMap<String, Fact>> = None;
    let mut added: HashMap<String, Fact> = HashMap::new();
    for version in since + 1..=log.latest {
        let Some(actions) = tables::read_commit(&table, version).await? else {
            log.unreadable = Some(format!(
                "commit {version} is no longer in the log (log cleanup removed it)"
            ));
            break;
        };
        let (mut data, mut rewrites) = (0usize, 0usize);
        for action in actions {
            match action {
                Action::Add(a) if a.data_change => {
                    data += 1;
                    let fact = fact(&a.partition_values, a.stats.as_deref(), column.as_deref());
                    log.changes.push(fact.change(version, true));
                    added.insert(a.path.clone(), fact);
                }
                Action::Remove(r) if r.data_change => {
                    data += 1;
                    // Rows (and a range by statistics) are only in the file's `add`.
                    let fact = match added.get(&r.path) {
                        Some(f) => f.clone(),
                        None => match base(at, since, &mut known, column.as_deref())
                            .await?
                            .get(&r.path)
                        {
                            Some(f) => f.clone(),
                            None => Fact {
                                rows: None,
                                range: r
                                    .partition_values
                                    .as_ref()
                                    .and_then(|p| partition_range(p, column.as_deref())),
                            },
                        },
                    };
                    log.changes.push(fact.change(version, false));
                }
                Action::Add(_) | Action::Remove(_) => rewrites += 1,
                _ => {}
            }
        }
        if data == 0 && rewrites > 0 {
            log.rewrites += 1;
        }
    }
    Ok(log)
}

/// The first version of the source at `at` committed at or after `when` (`None`: none), read
/// backwards from the latest commit (the cost grows with the commits since `when`).
pub async fn first_version_at(at: &Location, when: DateTime<Utc>) -> Result<Option<u64>> {
    let (table, latest) = log_of(at, 0).await?;
    let mut first = None;
    for version in (0..=latest).rev() {
        let Some(actions) = tables::read_commit(&table, version).await? else {
            break;
        };
        let committed = actions.iter().find_map(|a| match a {
            Action::CommitInfo(c) => c.timestamp,
            _ => None,
        });
        match committed.and_then(DateTime::from_timestamp_millis) {
            Some(t) if t >= when => first = Some(version),
            _ => break,
        }
    }
    Ok(first)
}

/// The source at `at`, its log only (no snapshot loaded), and its latest version (looked for
/// from `from` on).
async fn log_of(at: &Location, from: u64) -> Result<(deltalake::DeltaTable, u64)> {
    let table = deltalake::DeltaTableBuilder::from_url(at.url().clone())
        .and_then(|b| b.build())
        .map_err(|e| failed(&format!("cannot open the Delta source `{at}`"), e))?;
    let latest = table
        .log_store()
        .get_latest_version(from)
        .await
        .map_err(|e| failed(&format!("cannot read the log of `{at}`"), e))?;
    Ok((table, latest))
}

/// What is known of one data file.
#[derive(Debug, Clone, Default)]
struct Fact {
    rows: Option<u64>,
    range: Option<Interval>,
}

impl Fact {
    fn change(&self, version: u64, added: bool) -> FileChange {
        FileChange {
            version,
            added,
            rows: self.rows,
            range: self.range,
        }
    }
}

/// The files of the source as of `since`, loaded once, on first need.
async fn base<'a>(
    at: &Location,
    since: u64,
    known: &'a mut Option<HashMap<String, Fact>>,
    column: Option<&str>,
) -> Result<&'a HashMap<String, Fact>> {
    if known.is_none() {
        let table = delta::open_at(at, since).await?;
        let files: Vec<_> = table
            .get_active_add_actions_by_partitions(&[])
            .try_collect()
            .await
            .map_err(|e| failed("reading the source's files", e))?;
        *known = Some(
            files
                .iter()
                .map(|f| {
                    let stats = f.stats();
                    let fact = fact(&f.partition_values_map(), stats.as_deref(), column);
                    (f.path().into_owned(), fact)
                })
                .collect(),
        );
    }
    Ok(known.get_or_insert_with(HashMap::new))
}

/// Rows and time range of a data file, from its partition values and statistics.
fn fact(
    partition_values: &HashMap<String, Option<String>>,
    stats: Option<&str>,
    column: Option<&str>,
) -> Fact {
    let stats: Option<serde_json::Value> = stats.and_then(|s| serde_json::from_str(s).ok());
    let rows = stats
        .as_ref()
        .and_then(|s| s.get("numRecords"))
        .and_then(serde_json::Value::as_u64);
    let range = partition_range(partition_values, column).or_else(|| {
        let column = column?;
        let stats = stats.as_ref()?;
        let bound = |side: &str| -> Option<(DateTime<Utc>, bool)> {
            let values = stats.get(side)?.as_object()?;
            let (_, v) = values
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(column))?;
            instant(v.as_str()?)
        };
        let (min, _) = bound("minValues")?;
        let (max, date) = bound("maxValues")?;
        Some(Interval::new(min, after(max, date)))
    });
    Fact { rows, range }
}

/// The range a partition value of the time column stands for.
fn partition_range(
    values: &HashMap<String, Option<String>>,
    column: Option<&str>,
) -> Option<Interval> {
    let column = column?;
    let (_, v) = values
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(column))?;
    let (at, date) = instant(v.as_deref()?)?;
    Some(Interval::new(at, after(at, date)))
}

/// A statistics or partition value as an instant, and whether it is a date.
fn instant(text: &str) -> Option<(DateTime<Utc>, bool)> {
    parse_instant(text).ok().map(|i| (i.at, i.date_only))
}

/// Just past `at`: the next day for a date, the next microsecond for a timestamp (statistics
/// are truncated to milliseconds: a timestamp's maximum covers its millisecond).
fn after(at: DateTime<Utc>, date: bool) -> DateTime<Utc> {
    if date {
        at + Duration::days(1)
    } else {
        at + Duration::milliseconds(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact_of(partition: Option<&str>, stats: Option<&str>, column: Option<&str>) -> Fact {
        let values = partition
            .map(|p| HashMap::from([("event_date".to_string(), Some(p.to_string()))]))
            .unwrap_or_default();
        fact(&values, stats, column)
    }

    fn at(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap().at
    }

    #[test]
    fn files_are_placed_by_partition_value_or_statistics() {
        let by_partition = fact_of(Some("2024-01-03"), None, Some("EVENT_DATE"));
        assert_eq!(
            by_partition.range,
            Some(Interval::new(at("2024-01-03"), at("2024-01-04")))
        );
        let stats = r#"{"numRecords":7,"minValues":{"ts":"2024-01-02T05:00:00.000Z"},"maxValues":{"ts":"2024-01-02T07:30:00.000Z"}}"#;
        let by_stats = fact_of(None, Some(stats), Some("ts"));
        assert_eq!(by_stats.rows, Some(7));
        assert_eq!(
            by_stats.range,
            Some(Interval::new(
                at("2024-01-02T05:00:00Z"),
                at("2024-01-02T07:30:00.001Z")
            ))
        );
        let dates =
            r#"{"numRecords":2,"minValues":{"d":"2024-01-02"},"maxValues":{"d":"2024-01-05"}}"#;
        assert_eq!(
            fact_of(None, Some(dates), Some("d")).range,
            Some(Interval::new(at("2024-01-02"), at("2024-01-06")))
        );
        assert_eq!(fact_of(None, Some(stats), None).range, None);
        assert_eq!(fact_of(None, None, Some("ts")).range, None);
    }
}
