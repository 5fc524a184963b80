//! The progress table: one record per batch of every apply, kept beside the state.
//!
//! Layout under the warehouse (`_tidemark/applies/<apply id>/`):
//! - `apply.json`: who, when, what (environment, plan id, git commit, the batch list);
//! - `plan.json`: the plan being applied, so `apply --resume ID` needs nothing else;
//! - `batches/<batch id>.json`: the batch's latest record (RUNNING, COMPLETE, FAILED); a batch
//!   without a record is PENDING;
//! - `outcome.json`: written when the apply ends (complete, failed, paused).
//!
//! Invariants:
//! - Every document is replaced atomically (temporary file + rename), so a reader sees a whole
//!   record or the previous one, never a torn one.
//! - A COMPLETE record is written only after the batch's Delta commit landed and its audits
//!   passed. A crash between the two is recognised on resume through the commit's application
//!   transaction id, never by trusting a RUNNING record.
//! - Records are versioned (`tidemark.progress/v1`); readers refuse other formats.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Storage;
use crate::error::{Diagnostic, Error, Result};
use crate::names::ApplyId;

/// Format tag of every progress document.
pub const PROGRESS_FORMAT: &str = "tidemark.progress/v1";
const ROOT: &str = "_tidemark/applies";

/// Status of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Not started.
    Pending,
    /// Started, not finished (or its process died).
    Running,
    /// Committed and audited.
    Complete,
    /// Failed for good (retries spent, or not retryable).
    Failed,
}

impl Status {
    /// Upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Running => "RUNNING",
            Status::Complete => "COMPLETE",
            Status::Failed => "FAILED",
        }
    }
}

/// One planned batch, as listed in `apply.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedBatch {
    /// Batch id.
    pub id: usize,
    /// Model.
    pub model: String,
    /// Window start (RFC 3339).
    pub start: String,
    /// Window end (exclusive).
    pub end: String,
    /// Number of intervals of the model's unit in the window.
    pub intervals: u64,
}

/// What an apply is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyInfo {
    /// Format tag.
    pub format: String,
    /// Apply id.
    pub id: ApplyId,
    /// `plan`, `apply`, `run` or `promote`.
    pub command: String,
    /// Environment.
    pub environment: String,
    /// Plan id.
    pub plan_id: String,
    /// Who started it (`$USER`).
    pub user: String,
    /// The project's git commit, when it is in a git repository.
    pub git_commit: Option<String>,
    /// When it started (the first attempt).
    pub started: DateTime<Utc>,
    /// Workers.
    pub workers: usize,
    /// Every batch.
    pub batches: Vec<PlannedBatch>,
    /// The Delta sources whose late or corrected data this apply restates, and the versions
    /// that brought it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub late_sources: BTreeMap<String, Vec<u64>>,
    /// Promotion-gate violations accepted for this promotion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_gates: Vec<crate::state::AcceptedGate>,
}

/// The latest record of one batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Format tag.
    pub format: String,
    /// Batch id.
    pub id: usize,
    /// Model.
    pub model: String,
    /// Physical table.
    pub table: Option<crate::names::TableId>,
    /// Window start.
    pub start: String,
    /// Window end.
    pub end: String,
    /// Status.
    pub status: Option<Status>,
    /// Attempts so far (over every run of this apply).
    pub attempts: u32,
    /// When the latest attempt started.
    pub started: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished: Option<DateTime<Utc>>,
    /// Rows written.
    pub rows: u64,
    /// Rows outside the window, not written.
    pub dropped: u64,
    /// Bytes of the written partitions.
    pub bytes: u64,
    /// Order-independent checksum of the written rows.
    pub checksum: Option<String>,
    /// Delta version written.
    pub table_version: Option<u64>,
    /// The commit had landed in an earlier attempt.
    #[serde(default)]
    pub already_committed: bool,
    /// Every input read, with the version read (`None`: a view or an unversioned source).
    pub inputs: BTreeMap<String, Option<u64>>,
    /// Non-blocking audit failures: audit → offending rows.
    #[serde(default)]
    pub warnings: BTreeMap<String, u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// How an apply ended, in a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// Every batch is complete and the environment moved.
    Complete,
    /// A batch failed; nothing moved.
    Failed,
    /// It stopped without a failure (time box, interrupt); `apply --resume` continues it.
    Paused,
}

impl ApplyOutcome {
    /// `complete`, `failed` or `paused`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyOutcome::Complete => "complete",
            ApplyOutcome::Failed => "failed",
            ApplyOutcome::Paused => "paused",
        }
    }
}

/// How an apply ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Format tag.
    pub format: String,
    /// How it ended.
    pub outcome: ApplyOutcome,
    /// When.
    pub finished: DateTime<Utc>,
    /// Seconds of this run.
    pub seconds: f64,
    /// State revision of the environment afterwards (complete applies).
    pub revision: Option<u64>,
    /// A one-line account.
    pub message: String,
}

/// The progress documents of one warehouse.
pub struct ProgressStore<'a> {
    storage: &'a dyn Storage,
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::Bug(format!("serializing progress: {e}")))
}

fn parse<T: for<'de> Deserialize<'de>>(path: &str, bytes: &[u8]) -> Result<T> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| corrupt(path, &e))?;
    let format = v.get("format").and_then(|f| f.as_str()).unwrap_or("");
    if format != PROGRESS_FORMAT {
        return Err(Diagnostic::error(format!(
            "{path} has format `{format}`, not `{PROGRESS_FORMAT}`"
        ))
        .hint("it was written by another tidemark version; use that version to read it")
        .into());
    }
    serde_json::from_value(v).map_err(|e| corrupt(path, &e))
}

fn corrupt(path: &str, e: &dyn std::fmt::Display) -> Error {
    Error::from(
        Diagnostic::error(format!("the progress record `{path}` is unreadable"))
            .caused_by(e)
            .hint(
                "it was damaged outside tidemark; the Delta tables and the state are not affected",
            ),
    )
}

impl<'a> ProgressStore<'a> {
    /// The progress store on `storage` (the state's storage).
    pub fn new(storage: &'a dyn Storage) -> ProgressStore<'a> {
        ProgressStore { storage }
    }

    fn dir(id: &ApplyId) -> String {
        format!("{ROOT}/{id}")
    }

    /// Start (or continue) an apply: writes `apply.json` and `plan.json` unless present.
    pub fn begin(&self, info: &ApplyInfo, plan: &[u8]) -> Result<()> {
        let dir = Self::dir(&info.id);
        self.storage
            .put_if_absent(&format!("{dir}/plan.json"), plan)?;
        self.storage
            .put_if_absent(&format!("{dir}/apply.json"), &json(info)?)?;
        Ok(())
    }

    /// Replace a batch's record.
    pub fn record(&self, apply: &ApplyId, r: &BatchRecord) -> Result<()> {
        let path = format!("{}/batches/{:06}.json", Self::dir(apply), r.id);
        self.storage.put(&path, &json(r)?)
    }

    /// Write how the apply ended.
    pub fn finish(&self, apply: &ApplyId, o: &Outcome) -> Result<()> {
        self.storage
            .put(&format!("{}/outcome.json", Self::dir(apply)), &json(o)?)
    }

    /// Every apply with a directory, oldest first (a name that is not an apply id is not one
    /// of tidemark's and is passed over).
    pub fn list(&self) -> Result<Vec<ApplyId>> {
        Ok(self
            .storage
            .list(ROOT)?
            .iter()
            .filter_map(|n| ApplyId::parse(n).ok())
            .collect())
    }

    /// Every described apply with its description, newest first: by start time, then by id
    /// (ids have whole seconds only, so two applies of one second sort by when they started).
    pub fn newest_first(&self) -> Result<Vec<(ApplyId, ApplyInfo)>> {
        let mut all = Vec::new();
        for id in self.list()? {
            if let Some(info) = self.info(&id)? {
                all.push((id, info));
            }
        }
        all.sort_by(|(a, x), (b, y)| y.started.cmp(&x.started).then_with(|| b.cmp(a)));
        Ok(all)
    }

    /// An apply's description.
    pub fn info(&self, apply: &ApplyId) -> Result<Option<ApplyInfo>> {
        let path = format!("{}/apply.json", Self::dir(apply));
        self.storage
            .get(&path)?
            .map(|b| parse(&path, &b))
            .transpose()
    }

    /// Record gate violations accepted during the apply (`--canary-gate --accept`), added to
    /// those recorded before (a resume may accept more).
    pub fn accept(&self, apply: &ApplyId, accepted: &[crate::state::AcceptedGate]) -> Result<()> {
        let mut all = self.accepted(apply)?;
        for a in accepted {
            if !all.contains(a) {
                all.push(a.clone());
            }
        }
        let record = Accepted {
            format: PROGRESS_FORMAT.to_string(),
            accepted: all,
        };
        self.storage.put(
            &format!("{}/accepted.json", Self::dir(apply)),
            &json(&record)?,
        )
    }

    /// Gate violations accepted during the apply.
    pub fn accepted(&self, apply: &ApplyId) -> Result<Vec<crate::state::AcceptedGate>> {
        let path = format!("{}/accepted.json", Self::dir(apply));
        Ok(self
            .storage
            .get(&path)?
            .map(|b| parse::<Accepted>(&path, &b))
            .transpose()?
            .map(|a| a.accepted)
            .unwrap_or_default())
    }

    /// An apply's saved plan.
    pub fn plan(&self, apply: &ApplyId) -> Result<Option<Vec<u8>>> {
        self.storage.get(&format!("{}/plan.json", Self::dir(apply)))
    }

    /// An apply's outcome, once it ended.
    pub fn outcome(&self, apply: &ApplyId) -> Result<Option<Outcome>> {
        let path = format!("{}/outcome.json", Self::dir(apply));
        self.storage
            .get(&path)?
            .map(|b| parse(&path, &b))
            .transpose()
    }

    /// Every batch record of an apply, by batch id.
    pub fn records(&self, apply: &ApplyId) -> Result<BTreeMap<usize, BatchRecord>> {
        let dir = format!("{}/batches", Self::dir(apply));
        let mut out = BTreeMap::new();
        for name in self.storage.list(&dir)? {
            let path = format!("{dir}/{name}");
            if let Some(b) = self.storage.get(&path)? {
                let r: BatchRecord = parse(&path, &b)?;
                out.insert(r.id, r);
            }
        }
        Ok(out)
    }
}

/// `$USER` (or `$LOGNAME`, `$USERNAME`), else `unknown`.
pub fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// The commit checked out in the git repository containing `dir`, if any (read from `.git`
/// directly: no git executable needed).
pub fn git_commit(dir: &std::path::Path) -> Option<String> {
    let mut d = Some(dir);
    while let Some(p) = d {
        let git = p.join(".git");
        if git.is_dir() {
            let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
            let head = head.trim();
            let Some(r) = head.strip_prefix("ref: ") else {
                return Some(head.to_string());
            };
            if let Ok(c) = std::fs::read_to_string(git.join(r)) {
                return Some(c.trim().to_string());
            }
            let packed = std::fs::read_to_string(git.join("packed-refs")).ok()?;
            return packed
                .lines()
                .find(|l| l.ends_with(r))
                .and_then(|l| l.split_whitespace().next())
                .map(str::to_string);
        }
        d = p.parent();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LocalStorage;

    #[test]
    fn records_round_trip_and_other_formats_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(tmp.path());
        let p = ProgressStore::new(&storage);
        let r = BatchRecord {
            format: PROGRESS_FORMAT.into(),
            id: 7,
            model: "s.a".into(),
            status: Some(Status::Complete),
            rows: 3,
            ..BatchRecord::default()
        };
        let x = ApplyId::parse("x").unwrap();
        p.record(&x, &r).unwrap();
        let all = p.records(&x).unwrap();
        assert_eq!(all[&7].rows, 3);
        assert_eq!(all[&7].status, Some(Status::Complete));
        storage
            .put(
                "_tidemark/applies/x/batches/000008.json",
                br#"{"format":"v0"}"#,
            )
            .unwrap();
        assert!(p.records(&x).is_err());
        let id = ApplyId::new(
            chrono::TimeZone::with_ymd_and_hms(&Utc, 2024, 3, 8, 10, 15, 0).unwrap(),
            "04b035a0ed98",
        );
        assert!(id.starts_with("20240308T101500Z-04b035a0-"), "{id}");
        assert_eq!(id.len(), "20240308T101500Z-04b035a0-abcd".len());
    }
}

/// Gate violations accepted during an apply (`accepted.json`).
#[derive(Debug, Serialize, Deserialize)]
struct Accepted {
    format: String,
    accepted: Vec<crate::state::AcceptedGate>,
}
