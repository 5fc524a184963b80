//! Plans: what changed between the project and an environment, how, and exactly which
//! intervals of which models must be computed or restated — without executing anything.
//!
//! Pipeline ([`build`], one function per phase): target definitions (local files, an
//! environment's deployed definitions, or a mix under `--select-model`) → parent check → data
//! hashes in topological order → change and category per model (directly modified models by
//! [`categorize`], children from their parents) → versions and snapshots → restatement windows
//! and tables ([`tables`]) → missing intervals and batches ([`intervals`]) → the plan.
//!
//! Invariants:
//! - Building a plan reads the state and never writes it (nor the warehouse).
//! - The plan is a pure function of the project, the state and the options: same inputs, same
//!   plan, same `plan_id`, byte for byte.
//! - A snapshot that already exists in the state (same data and metadata fingerprints) is reused
//!   with its version, so promoting what a dev environment built computes nothing.
//! - Categories are never optimistic: anything the categorizer cannot prove to be a pure column
//!   addition is breaking, and a child of a breaking parent is rebuilt.
//! - Every interval is half-open and aligned to its model's unit; a plan carries the state
//!   revision it was made from, so applying it later can refuse a changed environment.

mod build;
#[cfg(test)]
mod cache_equivalence;
pub mod categorize;
pub mod file;
pub mod intervals;
pub mod late;
mod options;
mod record;
pub mod render;
pub mod select;
pub mod tables;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::project::ModelName;
use crate::state::{Category, Snapshot, SnapshotId, TableId};
pub use build::build;
pub use intervals::{Backfill, BackfillAction};
pub use options::{Mode, Options};
pub use record::completed_actions;

/// Format tag of plan documents.
pub const PLAN_FORMAT: &str = "tidemark.plan/v1";

/// How a model differs from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// New model.
    Added,
    /// Gone from the project.
    Removed,
    /// Its own definition changed.
    DirectlyModified,
    /// Only upstream changed.
    IndirectlyModified,
    /// Only metadata changed.
    Metadata,
    /// Nothing changed.
    Unchanged,
}

impl Change {
    /// Snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::DirectlyModified => "directly_modified",
            Change::IndirectlyModified => "indirectly_modified",
            Change::Metadata => "metadata",
            Change::Unchanged => "unchanged",
        }
    }
}

/// One model in a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanModel {
    /// Name.
    pub name: ModelName,
    /// Kind name.
    pub kind: String,
    /// Change.
    pub change: Change,
    /// Category (`None` for added, removed and unchanged models).
    pub category: Option<Category>,
    /// Data fingerprint in the plan (the environment's for removed models).
    pub fingerprint: String,
    /// Data fingerprint in the environment.
    pub previous_fingerprint: Option<String>,
    /// Physical version after the plan (`None` for removed models).
    pub version: Option<String>,
    /// Physical version in the environment.
    pub previous_version: Option<String>,
    /// Why the category was chosen, when it is not obvious.
    pub reason: Option<String>,
    /// Changed direct parents (for indirectly modified models).
    pub changed_parents: Vec<ModelName>,
    /// Unified diff of the definition, for directly modified and metadata changes.
    pub diff: Option<String>,
    /// Selected for restatement or downstream of one.
    pub restated: bool,
    /// What will be computed.
    pub backfill: Option<Backfill>,
}

/// Counts for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Added models.
    pub added: usize,
    /// Removed models.
    pub removed: usize,
    /// Directly modified models.
    pub directly_modified: usize,
    /// Indirectly modified models.
    pub indirectly_modified: usize,
    /// Metadata-only changes.
    pub metadata: usize,
    /// Restated models.
    pub restated: usize,
    /// Models with a backfill.
    pub backfills: usize,
    /// Unit intervals to compute.
    pub partitions: u64,
    /// Batches to run.
    pub batches: u64,
}

/// The environment after the plan is applied: model → snapshot and physical table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Snapshot id.
    pub snapshot: SnapshotId,
    /// Physical table (`None` for views and embedded models).
    pub table: Option<TableId>,
    /// The table's restatement generation (0, the first, is left out of the JSON).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// A restatement's new generation starts as a zero-copy clone of this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_from: Option<TableId>,
}

/// A plan, as shown for review and saved for apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_FORMAT`].
    pub format: String,
    /// Hash of everything below: equal plans have equal ids.
    pub plan_id: String,
    /// Project name.
    pub project: String,
    /// Target environment.
    pub environment: String,
    /// What it is compared with (`None`: nothing, e.g. the first plan).
    pub base_environment: Option<String>,
    /// Does the target environment not exist yet?
    pub new_environment: bool,
    /// "Now".
    #[serde(with = "crate::interval::timestamp")]
    pub execution_time: DateTime<Utc>,
    /// Start of the user's window, if given.
    #[serde(with = "crate::interval::timestamp::option")]
    pub start: Option<DateTime<Utc>>,
    /// Exclusive end of the user's window, if given.
    #[serde(with = "crate::interval::timestamp::option")]
    pub end: Option<DateTime<Utc>>,
    /// Models selected for restatement (before cascading).
    pub restate: Vec<ModelName>,
    /// Backfill skipped on request.
    pub skip_backfill: bool,
    /// Affected models, in topological order, removed ones last.
    pub models: Vec<PlanModel>,
    /// Counts.
    pub summary: Summary,
    /// Remarks for the reviewer.
    pub notes: Vec<String>,
    /// Staleness check: the target environment's revision when planned (`None`: absent).
    pub environment_revision: Option<u64>,
    /// Staleness check: the state commit the plan was made from.
    pub state_seq: u64,
    /// Time-to-live of the environment (seconds; `None` for prod).
    pub ttl_seconds: Option<u64>,
    /// Snapshots the plan creates.
    pub snapshots: Vec<Snapshot>,
    /// The environment after apply.
    pub target: BTreeMap<ModelName, Target>,
    /// Where the definitions come from when not from the project files (`run`, `promote`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definitions_from: Option<String>,
    /// Late or corrected source data found since the target read its sources (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_data: Option<late::LateData>,
    /// Promotion-gate violations accepted for this promotion (`promote --accept`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_gates: Vec<crate::state::AcceptedGate>,
}

impl Plan {
    /// The snapshot `id` of the plan's target: one the plan creates, else one in `state`.
    pub fn snapshot<'a>(
        &'a self,
        state: &'a crate::state::State,
        id: &SnapshotId,
    ) -> Option<&'a Snapshot> {
        self.snapshots
            .iter()
            .find(|s| &s.id == id)
            .or_else(|| state.snapshots.get(id))
    }

    /// Anything changed or to compute? (`--check`)
    pub fn has_work(&self) -> bool {
        !self.models.is_empty() || self.new_environment && !self.target.is_empty()
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The deterministic id of a plan: a hash of its JSON without the id.
pub fn plan_id(plan: &Plan) -> Result<String> {
    if !plan.plan_id.is_empty() {
        let mut p = plan.clone();
        p.plan_id = String::new();
        return plan_id(&p);
    }
    // Streamed into the hash: the JSON of a 10,000-model plan is megabytes.
    let bug = |e: &dyn std::fmt::Display| Error::Bug(format!("cannot serialize a plan: {e}"));
    let mut h = blake3::Hasher::new();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, &mut h);
    serde_json::to_writer(&mut w, plan).map_err(|e| bug(&e))?;
    std::io::Write::flush(&mut w).map_err(|e| bug(&e))?;
    drop(w);
    Ok(h.finalize().to_hex()[..16].to_string())
}
