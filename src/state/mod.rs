//! The state: what has been planned, built and promoted, shared by everyone who can reach the
//! warehouse.
//!
//! It lives in the warehouse under `_tidemark/state/` as an append-only log of commits plus
//! periodic checkpoints (see [`store`]). Its records:
//! - **snapshots**: one per (model, fingerprint) ever planned — the fingerprints, the physical
//!   version it reads and writes, its change category, and the model definition as planned;
//! - **physical tables**: one per (model, version, generation) with the half-open, merged
//!   intervals completed in it;
//! - **environments**: name → for each model the snapshot, physical table and pinned table
//!   version, plus the plan that produced it, its revision, created/updated times and expiry;
//! - **history**: every environment change, in commit order.
//!
//! Invariants:
//! - [`State`] is only changed through [`State::apply`], which validates every action before
//!   changing anything: a commit applies entirely or not at all.
//! - An environment's `revision` grows by one on every change; writers state the revision they
//!   read ([`Action::PutEnvironment::expected_revision`]), so a change made by someone else in
//!   between is detected instead of overwritten.
//! - Interval sets are stored merged, so years of daily intervals stay a handful of ranges.
//! - A table under a live [`Lease`] (an apply that will read or write it) cannot be deleted;
//!   a lease can only be taken on tables that exist, so an apply and a janitor pass that race
//!   are ordered by the log: either the lease lands first and the table stays, or the delete
//!   lands first and the apply stops before it writes anything.
//! - Maps are `BTreeMap`s: serialization is deterministic.

pub mod probe;
pub mod progress;
pub mod storage;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Diagnostic, Error, Result};
use crate::interval::{IntervalSet, IntervalUnit};
use crate::project::{AuditCall, Kind, Model, ModelName};

pub use crate::names::{EnvName, PROD, SnapshotId, TableId};
pub use storage::{LocalStorage, Storage, write_atomic};
pub use store::StateStore;

/// Format tag of the state documents this build writes; documents with a newer tag are refused.
pub const STATE_FORMAT: &str = "tidemark.state/v1";

/// A model definition as it was planned: what `plan` needs to diff and categorize against it,
/// and what `apply` needs to build it, without the project files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The file it came from, relative to the project root.
    pub file: String,
    /// Materialization and kind properties.
    pub kind: Kind,
    /// Cron expression.
    pub cron: String,
    /// Interval unit derived from the cron.
    pub interval_unit: IntervalUnit,
    /// First instant to compute.
    pub start: Option<DateTime<Utc>>,
    /// Instant after which nothing is computed.
    pub end: Option<DateTime<Utc>>,
    /// Owner.
    #[serde(default)]
    pub owner: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Audits.
    #[serde(default)]
    pub audits: Vec<AuditCall>,
    /// Promotion gates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<crate::project::model::GateCall>,
    /// The columns that identify a row (the canary diff matches rows on them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grain: Vec<String>,
    /// The declared (SQLMesh) dialect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_dialect: Option<String>,
    /// Descriptive SQLMesh properties, as written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// `stamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<String>,
    /// Extra physical partition columns.
    #[serde(default)]
    pub partitioned_by: Vec<String>,
    /// Declared output columns and types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<(String, String)>,
    /// Changes apply only to intervals computed from now on.
    pub forward_only: bool,
    /// Incomplete intervals may be computed.
    pub allow_partials: bool,
    /// Reads its own previous output.
    pub self_referencing: bool,
    /// Canonical SQL of the query (empty for seeds).
    pub sql: String,
    /// blake3 of the seed file, for seeds.
    #[serde(default)]
    pub seed_hash: Option<String>,
    /// The dialect of `sql` (written only when it is not DataFusion's, so records of
    /// DataFusion projects are unchanged).
    #[serde(default, skip_serializing_if = "is_data_fusion")]
    pub dialect: crate::sql::Dialect,
}

/// A model's file as a record holds it: relative to the project root, with forward slashes
/// (borrowed when it has them already).
fn record_file(m: &Model) -> std::borrow::Cow<'_, str> {
    let path = m.file.to_string_lossy();
    if path.contains('\\') {
        std::borrow::Cow::Owned(path.replace('\\', "/"))
    } else {
        path
    }
}

fn is_data_fusion(d: &crate::sql::Dialect) -> bool {
    *d == crate::sql::Dialect::DataFusion
}

impl ModelRecord {
    /// The record of a loaded model.
    pub fn of(m: &Model, self_referencing: bool) -> ModelRecord {
        ModelRecord {
            file: record_file(m).into_owned(),
            kind: m.kind.clone(),
            cron: m.schedule.expr().to_string(),
            interval_unit: m.schedule.unit(),
            start: m.start,
            end: m.end,
            owner: m.owner.clone(),
            tags: m.tags.clone(),
            audits: m.audits.clone(),
            gates: m.gates.clone(),
            grain: m.grain.clone(),
            declared_dialect: m.declared_dialect.clone(),
            metadata: m.metadata.clone(),
            stamp: m.stamp.clone(),
            partitioned_by: m.partitioned_by.clone(),
            columns: m.columns.clone(),
            forward_only: m.forward_only,
            allow_partials: m.allow_partials,
            self_referencing,
            sql: m.canonical_sql.clone(),
            seed_hash: m.seed_hash.clone(),
            dialect: m.dialect,
        }
    }

    /// Is this the record [`ModelRecord::of`] builds for `m`? Compared field by field without
    /// building it (a plan of 10,000 unchanged models borrows the deployed records instead of
    /// building 10,000 equal ones). The destructuring names every field, so a field added to
    /// the record cannot be forgotten here.
    pub fn describes(&self, m: &Model, self_referencing: bool) -> bool {
        let ModelRecord {
            file,
            kind,
            cron,
            interval_unit,
            start,
            end,
            owner,
            tags,
            audits,
            gates,
            grain,
            declared_dialect,
            metadata,
            stamp,
            partitioned_by,
            columns,
            forward_only,
            allow_partials,
            self_referencing: self_ref,
            sql,
            seed_hash,
            dialect,
        } = self;
        record_file(m) == file.as_str()
            && *kind == m.kind
            && cron == m.schedule.expr()
            && *interval_unit == m.schedule.unit()
            && *start == m.start
            && *end == m.end
            && *owner == m.owner
            && *tags == m.tags
            && *audits == m.audits
            && *gates == m.gates
            && *grain == m.grain
            && *declared_dialect == m.declared_dialect
            && *metadata == m.metadata
            && *stamp == m.stamp
            && *partitioned_by == m.partitioned_by
            && *columns == m.columns
            && *forward_only == m.forward_only
            && *allow_partials == m.allow_partials
            && *self_ref == self_referencing
            && *sql == m.canonical_sql
            && *seed_hash == m.seed_hash
            && *dialect == m.dialect
    }
}

/// How a change was categorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Rows of existing columns may change: rebuild it and every descendant.
    Breaking,
    /// Only new columns: rebuild it; descendants keep their data.
    NonBreaking,
    /// Keep the physical table; the new logic applies to intervals computed from now on.
    ForwardOnly,
    /// A parent changed in a breaking way: rebuild.
    IndirectBreaking,
    /// Only non-breaking parent changes: keep the data.
    IndirectNonBreaking,
    /// Nothing about the rows changed.
    Metadata,
}

impl Category {
    /// Snake-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Breaking => "breaking",
            Category::NonBreaking => "non_breaking",
            Category::ForwardOnly => "forward_only",
            Category::IndirectBreaking => "indirect_breaking",
            Category::IndirectNonBreaking => "indirect_non_breaking",
            Category::Metadata => "metadata",
        }
    }

    /// Does a snapshot in this category get a new physical table?
    pub fn rebuilds(self) -> bool {
        matches!(
            self,
            Category::Breaking | Category::NonBreaking | Category::IndirectBreaking
        )
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One planned variant of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The model.
    pub name: ModelName,
    /// `name@identifier`: the key in [`State::snapshots`].
    pub id: SnapshotId,
    /// Hash of the model's own data-relevant definition.
    pub definition_hash: String,
    /// Hash of the definition and all parents' data hashes.
    pub data_hash: String,
    /// Hash of the metadata.
    pub metadata_hash: String,
    /// The physical version it reads and writes (inherited for non-rebuilding categories).
    pub version: String,
    /// How it was categorized against what it replaced (`None` for a model's first snapshot).
    pub category: Option<Category>,
    /// Parents (models and sources) with their data hashes when planned.
    pub parents: BTreeMap<ModelName, String>,
    /// The definition.
    pub model: ModelRecord,
    /// When it was first planned.
    pub created_at: DateTime<Utc>,
}

impl Snapshot {
    /// The identifier of a (data, metadata) fingerprint pair.
    pub fn identifier(data_hash: &str, metadata_hash: &str) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"tidemark.snapshot.v1\0");
        h.update(data_hash.as_bytes());
        h.update(b"\0");
        h.update(metadata_hash.as_bytes());
        h.finalize().to_hex()[..16].to_string()
    }

    /// The id (`name@identifier`) of a snapshot.
    pub fn make_id(name: &ModelName, data_hash: &str, metadata_hash: &str) -> SnapshotId {
        SnapshotId::new(name, &Snapshot::identifier(data_hash, metadata_hash))
    }

    /// The physical table this snapshot writes, generation 0 (`schema/table__version`), or
    /// `None` for kinds without rows of their own.
    pub fn table_id(&self) -> Option<TableId> {
        self.model
            .kind
            .is_materialized()
            .then(|| TableId::new(&self.name, &self.version, 0))
    }
}

/// A physical table: one version (and generation) of a model's rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalTable {
    /// Id and path relative to the warehouse root.
    pub id: TableId,
    /// The model.
    pub name: ModelName,
    /// The version.
    pub version: String,
    /// Restatement generation (0 for the first).
    pub generation: u32,
    /// The interval unit its intervals are aligned to.
    pub interval_unit: IntervalUnit,
    /// Intervals completed, merged.
    pub intervals: IntervalSet,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

/// One model in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvModel {
    /// The snapshot id.
    pub snapshot: SnapshotId,
    /// The physical table read (`None` for views and embedded models).
    pub table: Option<TableId>,
    /// The Delta table version readers are pinned to (`None` until built).
    pub table_version: Option<u64>,
}

/// A named, consistent set of model versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// Name (`prod`, `dev`, ...).
    pub name: EnvName,
    /// Grows by one on every change.
    pub revision: u64,
    /// The plan that produced the current revision.
    pub plan_id: String,
    /// Models.
    pub models: BTreeMap<ModelName, EnvModel>,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
    /// When the janitor may remove it (`None`: never, e.g. prod).
    pub expires_at: Option<DateTime<Utc>>,
    /// External Delta sources and the versions the environment's data was computed from
    /// (readers see the sources at these versions too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_versions: BTreeMap<ModelName, u64>,
    /// Delta sources whose late or corrected data was found and not restated: the version
    /// late-data detection still reads them from (else from `source_versions`), so a `run`
    /// that moves on does not forget it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub late_since: BTreeMap<ModelName, u64>,
    /// Promotion-gate violations accepted by the change that made this revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_gates: Vec<AcceptedGate>,
}

/// A promotion gate's violations accepted by someone, and why (`promote --accept`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedGate {
    /// The model.
    pub model: ModelName,
    /// The gate, as declared (`row_count_change(max_pct := 20)`).
    pub gate: String,
    /// Violations accepted.
    pub violations: u64,
    /// Who accepted them (`$USER`).
    pub by: String,
    /// Why (`--reason`).
    pub reason: String,
}

/// What an environment change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryAction {
    /// Created it or pointed it somewhere else.
    Put,
    /// Deleted it.
    Delete,
}

impl HistoryAction {
    /// `put` or `delete`, as in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryAction::Put => "put",
            HistoryAction::Delete => "delete",
        }
    }
}

impl std::fmt::Display for HistoryAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One environment change, as kept in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The commit that made it.
    pub seq: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// Environment.
    pub environment: EnvName,
    /// What happened.
    pub action: HistoryAction,
    /// Revision after the change (the deleted revision for `delete`).
    pub revision: u64,
    /// The plan behind it (empty for deletions).
    pub plan_id: String,
    /// Models whose entry changed, were added or were removed.
    pub models_changed: Vec<ModelName>,
    /// Promotion-gate violations the change accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_gates: Vec<AcceptedGate>,
}

/// One change to the state. A commit is a list of actions applied together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Record a snapshot (idempotent when identical).
    PutSnapshot {
        /// The snapshot.
        snapshot: Box<Snapshot>,
    },
    /// Register a physical table (idempotent when it exists; its intervals are kept).
    PutTable {
        /// The table.
        table: PhysicalTable,
    },
    /// Mark intervals of a table complete.
    AddIntervals {
        /// Table id.
        table: TableId,
        /// Intervals.
        intervals: IntervalSet,
    },
    /// Mark intervals of a table missing again.
    RemoveIntervals {
        /// Table id.
        table: TableId,
        /// Intervals.
        intervals: IntervalSet,
    },
    /// Create or replace an environment.
    PutEnvironment {
        /// The new contents (its `revision` is set by the state).
        environment: Box<Environment>,
        /// The revision the writer read (`None`: the writer expects the environment not to
        /// exist). A different current revision fails the commit.
        expected_revision: Option<u64>,
    },
    /// Remove an environment.
    DeleteEnvironment {
        /// Name.
        name: EnvName,
        /// The revision the writer read.
        expected_revision: u64,
    },
    /// Forget a snapshot no environment references (janitor).
    DeleteSnapshot {
        /// Snapshot id.
        id: SnapshotId,
    },
    /// Forget a physical table no environment references (janitor).
    DeleteTable {
        /// Table id.
        id: TableId,
    },
    /// Claim existing tables for an apply (replaces that apply's earlier lease).
    Lease {
        /// The apply id.
        apply: String,
        /// The claim.
        lease: Lease,
    },
    /// Give up an apply's lease (nothing happens when it holds none).
    Release {
        /// The apply id.
        apply: String,
    },
    /// Replace an empty state with an exported one (`state import`).
    Import {
        /// The imported state.
        state: Box<State>,
    },
}

/// The whole state as of one commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format tag ([`STATE_FORMAT`]).
    pub format: String,
    /// The last commit applied (0: empty state).
    pub seq: u64,
    /// Snapshots by id.
    pub snapshots: BTreeMap<SnapshotId, Snapshot>,
    /// Physical tables by id.
    pub tables: BTreeMap<TableId, PhysicalTable>,
    /// Environments by name.
    pub environments: BTreeMap<EnvName, Environment>,
    /// Every environment change, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Leases of applies in progress (or interrupted, until they expire), by apply id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leases: BTreeMap<String, Lease>,
}

/// An apply's claim on the existing tables it reads or writes: while it lasts, `janitor`
/// cannot delete them. Taken before the apply's first write, renewed by `apply --resume`,
/// released by the apply's final commit; an interrupted apply's lease lapses at `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The environment the apply builds.
    pub environment: String,
    /// Table ids.
    pub tables: BTreeSet<TableId>,
    /// Snapshot ids (the definitions the apply builds from).
    #[serde(default)]
    pub snapshots: BTreeSet<SnapshotId>,
    /// When the claim lapses.
    pub expires_at: DateTime<Utc>,
}

/// Why a commit cannot be applied to the state it was meant for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// The environment changed since the writer read it.
    Environment {
        /// Name.
        name: EnvName,
        /// The revision the writer read (`None`: it did not exist).
        expected: Option<u64>,
        /// The current revision (`None`: it does not exist).
        found: Option<u64>,
    },
    /// An action refers to something that does not exist or contradicts the state.
    Invalid(String),
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rev = |r: &Option<u64>| match r {
            Some(r) => format!("revision {r}"),
            None => "absent".to_string(),
        };
        match self {
            Conflict::Environment {
                name,
                expected,
                found,
            } => write!(
                f,
                "environment `{name}` changed since it was read (expected {}, found {})",
                rev(expected),
                rev(found)
            ),
            Conflict::Invalid(s) => f.write_str(s),
        }
    }
}

impl State {
    /// The empty state.
    pub fn empty() -> State {
        State {
            format: STATE_FORMAT.to_string(),
            ..State::default()
        }
    }

    /// An environment, if it exists.
    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.get(name)
    }

    /// Environment `name`, or the one "no environment named …" error, with the known ones.
    pub fn environment_or_error(&self, name: &str) -> Result<&Environment> {
        self.environment(name)
            .ok_or_else(|| self.unknown_environment(name))
    }

    /// "No environment named …", with the closest known names or the list of them.
    pub fn unknown_environment(&self, name: &str) -> Error {
        let known = self.environments.keys().map(EnvName::as_str);
        let hint = crate::error::did_you_mean(name, known.clone()).unwrap_or_else(|| {
            let names: Vec<&str> = known.collect();
            if names.is_empty() {
                "nothing has been applied yet: run `tidemark plan --apply`".to_string()
            } else {
                format!("environments: {}", names.join(", "))
            }
        });
        Error::from(Diagnostic::error(format!("no environment named `{name}`")).hint(hint))
    }

    /// Tables and snapshots under a lease that is still live at `at`, with the apply holding
    /// it.
    pub fn leased(&self, at: DateTime<Utc>) -> BTreeMap<&str, &str> {
        let mut out = BTreeMap::new();
        for (apply, lease) in self.leases.iter().filter(|(_, l)| l.expires_at > at) {
            let ids = (lease.tables.iter().map(TableId::as_str))
                .chain(lease.snapshots.iter().map(SnapshotId::as_str));
            for t in ids {
                out.entry(t).or_insert(apply.as_str());
            }
        }
        out
    }

    /// Completed intervals of a table (empty when unknown).
    pub fn intervals(&self, table: &str) -> IntervalSet {
        self.tables
            .get(table)
            .map(|t| t.intervals.clone())
            .unwrap_or_default()
    }

    /// Apply commit `seq` made at `at`: all actions or none.
    pub fn apply(
        &mut self,
        seq: u64,
        at: DateTime<Utc>,
        actions: &[Action],
    ) -> std::result::Result<(), Conflict> {
        let mut next = self.clone();
        next.replay(seq, at, actions)?;
        *self = next;
        Ok(())
    }

    /// Apply a commit that was validated when it was written (reading the log), in place and
    /// without the copy that makes [`State::apply`] all-or-nothing. On an error the state is
    /// unusable and must be dropped.
    pub fn replay(
        &mut self,
        seq: u64,
        at: DateTime<Utc>,
        actions: &[Action],
    ) -> std::result::Result<(), Conflict> {
        for a in actions {
            self.apply_one(seq, at, a)?;
        }
        self.seq = seq;
        Ok(())
    }

    fn apply_one(
        &mut self,
        seq: u64,
        at: DateTime<Utc>,
        a: &Action,
    ) -> std::result::Result<(), Conflict> {
        match a {
            Action::PutSnapshot { snapshot } => match self.snapshots.get(&snapshot.id) {
                Some(existing) if existing.version != snapshot.version => {
                    return Err(Conflict::Invalid(format!(
                        "snapshot {} already exists with version {} (not {})",
                        snapshot.id, existing.version, snapshot.version
                    )));
                }
                Some(_) => {}
                None => {
                    self.snapshots
                        .insert(snapshot.id.clone(), (**snapshot).clone());
                }
            },
            Action::PutTable { table } => {
                self.tables
                    .entry(table.id.clone())
                    .or_insert_with(|| table.clone());
            }
            Action::AddIntervals { table, intervals } => {
                let t = self.tables.get_mut(table).ok_or_else(|| unknown(table))?;
                t.intervals = t.intervals.union(intervals);
            }
            Action::RemoveIntervals { table, intervals } => {
                let t = self.tables.get_mut(table).ok_or_else(|| unknown(table))?;
                t.intervals = t.intervals.subtract(intervals);
            }
            Action::PutEnvironment {
                environment,
                expected_revision,
            } => {
                let current = self.environments.get(&environment.name);
                let found = current.map(|e| e.revision);
                if found != *expected_revision {
                    return Err(Conflict::Environment {
                        name: environment.name.clone(),
                        expected: *expected_revision,
                        found,
                    });
                }
                for (model, entry) in &environment.models {
                    if !self.snapshots.contains_key(&entry.snapshot) {
                        return Err(Conflict::Invalid(format!(
                            "environment `{}` refers to unknown snapshot {} of {model}",
                            environment.name, entry.snapshot
                        )));
                    }
                    if let Some(t) = &entry.table
                        && !self.tables.contains_key(t)
                    {
                        return Err(unknown(t));
                    }
                }
                let models_changed = changed_models(current, environment);
                let mut env = (**environment).clone();
                env.revision = found.map_or(1, |r| r + 1);
                if let Some(c) = current {
                    env.created_at = c.created_at;
                }
                self.history.push(HistoryEntry {
                    seq,
                    at,
                    environment: env.name.clone(),
                    action: HistoryAction::Put,
                    revision: env.revision,
                    plan_id: env.plan_id.clone(),
                    models_changed,
                    accepted_gates: env.accepted_gates.clone(),
                });
                self.environments.insert(env.name.clone(), env);
            }
            Action::DeleteEnvironment {
                name,
                expected_revision,
            } => {
                let found = self.environments.get(name).map(|e| e.revision);
                if found != Some(*expected_revision) {
                    return Err(Conflict::Environment {
                        name: name.clone(),
                        expected: Some(*expected_revision),
                        found,
                    });
                }
                let removed = self.environments.remove(name);
                self.history.push(HistoryEntry {
                    seq,
                    at,
                    environment: name.clone(),
                    action: HistoryAction::Delete,
                    revision: *expected_revision,
                    plan_id: String::new(),
                    models_changed: removed
                        .map(|e| e.models.into_keys().collect())
                        .unwrap_or_default(),
                    accepted_gates: Vec::new(),
                });
            }
            Action::DeleteSnapshot { id } => {
                if let Some(apply) = self.leased(at).get(id.as_str()) {
                    return Err(Conflict::Invalid(format!(
                        "snapshot {id} is leased by apply {apply}, which builds from it"
                    )));
                }
                if let Some(env) = self
                    .environments
                    .values()
                    .find(|e| e.models.values().any(|m| &m.snapshot == id))
                {
                    return Err(Conflict::Invalid(format!(
                        "snapshot {id} is still used by environment `{}`",
                        env.name
                    )));
                }
                self.snapshots.remove(id);
            }
            Action::Import { state } => {
                if self.seq != 0 || !self.environments.is_empty() || !self.snapshots.is_empty() {
                    return Err(Conflict::Invalid(
                        "the state is not empty; import only into a new warehouse".into(),
                    ));
                }
                let history = state.history.clone();
                *self = (**state).clone();
                self.history = history;
            }
            Action::Lease { apply, lease } => {
                if let Some(t) = lease.tables.iter().find(|t| !self.tables.contains_key(*t)) {
                    return Err(unknown(t));
                }
                if let Some(s) = lease
                    .snapshots
                    .iter()
                    .find(|s| !self.snapshots.contains_key(*s))
                {
                    return Err(Conflict::Invalid(format!("unknown snapshot {s}")));
                }
                self.leases.insert(apply.clone(), lease.clone());
            }
            Action::Release { apply } => {
                self.leases.remove(apply);
            }
            Action::DeleteTable { id } => {
                if let Some(apply) = self.leased(at).get(id.as_str()) {
                    return Err(Conflict::Invalid(format!(
                        "table {id} is leased by apply {apply}, which reads or writes it"
                    )));
                }
                if let Some(env) = self
                    .environments
                    .values()
                    .find(|e| e.models.values().any(|m| m.table.as_ref() == Some(id)))
                {
                    return Err(Conflict::Invalid(format!(
                        "table {id} is still used by environment `{}`",
                        env.name
                    )));
                }
                self.tables.remove(id);
            }
        }
        Ok(())
    }

    /// Check the format tag: refuse a state written by a newer tidemark.
    pub fn check_format(format: &str, what: &str) -> Result<()> {
        if format == STATE_FORMAT {
            return Ok(());
        }
        Err(Error::from(
            Diagnostic::error(format!(
                "{what} has format `{format}`, but this tidemark ({}) reads `{STATE_FORMAT}`",
                env!("CARGO_PKG_VERSION")
            ))
            .hint("it was written by a newer (or foreign) tidemark; upgrade tidemark to read it"),
        ))
    }
}

fn unknown(table: &str) -> Conflict {
    Conflict::Invalid(format!("unknown physical table {table}"))
}

fn changed_models(old: Option<&Environment>, new: &Environment) -> Vec<ModelName> {
    let empty = BTreeMap::new();
    let old = old.map_or(&empty, |e| &e.models);
    let mut names: BTreeSet<&ModelName> = old.keys().collect();
    names.extend(new.models.keys());
    names
        .into_iter()
        .filter(|n| old.get(*n) != new.models.get(*n))
        .cloned()
        .collect()
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod record_tests;
