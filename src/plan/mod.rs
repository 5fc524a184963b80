//! Plans: what changed between the project and an environment, how, and exactly which
//! intervals of which models must be computed or restated — without executing anything.
//!
//! Pipeline: target definitions (local files, the environment's deployed definitions, or a mix
//! under `--select-model`) → data hashes in topological order → change and category per model
//! (directly modified models by [`categorize`], children from their parents) → versions →
//! restatement windows → missing intervals and batches ([`backfill`]).
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

pub mod categorize;
pub mod file;
pub mod intervals;
mod options;
mod record;
pub mod render;
pub mod select;
pub mod tables;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Diagnostic, Error, Result};
use crate::fingerprint::{Fingerprint, data_hash};
use crate::interval::format_ts;
use crate::project::{Kind, ModelName, Project};
use crate::state::{Category, Environment, ModelRecord, PROD, Snapshot, State};
use categorize::Verdict;
pub use intervals::{Backfill, BackfillAction};
use options::user_window;
pub use options::{Options, validate_env_name};
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
    pub snapshot: String,
    /// Physical table (`None` for views and embedded models).
    pub table: Option<String>,
    /// A restatement's new generation starts as a zero-copy clone of this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_from: Option<String>,
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
    pub execution_time: String,
    /// Start of the user's window, if given.
    pub start: Option<String>,
    /// Exclusive end of the user's window, if given.
    pub end: Option<String>,
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
}

impl Plan {
    /// Anything changed or to compute? (`--check`)
    pub fn has_work(&self) -> bool {
        !self.models.is_empty() || self.new_environment && !self.target.is_empty()
    }
}

/// A target definition: from the local files or from the environment.
struct Node {
    record: ModelRecord,
    definition: String,
    metadata: String,
    parents: BTreeSet<ModelName>,
    local: bool,
}

/// Build the plan for `opts` from the loaded project against `state`.
pub fn build(
    project: &Project,
    fingerprints: &BTreeMap<ModelName, Fingerprint>,
    state: &State,
    opts: &Options,
) -> Result<Plan> {
    let exec = opts.execution_time;
    let window = user_window(opts)?;
    let restating = !opts.restate.is_empty();
    validate_env_name(&opts.environment)?;
    let target_env = state.environment(&opts.environment);
    let (base_env, base_name) = match target_env {
        Some(e) => (Some(e), Some(opts.environment.clone())),
        None => match state.environment(&opts.create_from) {
            Some(e) => (Some(e), Some(opts.create_from.clone())),
            None => (None, None),
        },
    };
    if window.is_some() && !restating && !opts.offline && opts.environment == PROD {
        return Err(Error::from(
            Diagnostic::error("--start/--end cannot limit a plan for `prod` without restatement")
                .hint("prod must hold complete history: plan into a dev environment to preview a window, or add --restate-model to recompute that window"),
        ));
    }
    if restating && target_env.is_none() {
        return Err(Error::from(
            Diagnostic::error(format!(
                "cannot restate models in `{}`: the environment does not exist",
                opts.environment
            ))
            .hint(
                "restatement recomputes deployed versions; apply a plan to the environment first",
            ),
        ));
    }
    let mut notes = Vec::new();
    let base: BTreeMap<&ModelName, &Snapshot> = base_env
        .map(|e| {
            e.models
                .iter()
                .filter_map(|(n, m)| state.snapshots.get(&m.snapshot).map(|s| (n, s)))
                .collect()
        })
        .unwrap_or_default();

    // Which definitions make up the target.
    let use_local = opts.deployed.is_none() && (!restating || opts.with_local_changes);
    let deployed_env = match &opts.deployed {
        Some(d) => Some(state.environment_or_error(d)?),
        None => None,
    };
    let defs: BTreeMap<&ModelName, &Snapshot> = match deployed_env {
        Some(e) => e
            .models
            .iter()
            .filter_map(|(n, m)| state.snapshots.get(&m.snapshot).map(|s| (n, s)))
            .collect(),
        None => base.clone(),
    };
    let selected: Option<BTreeSet<ModelName>> = if opts.select.is_empty() {
        None
    } else {
        let tags: BTreeMap<&ModelName, &BTreeSet<String>> = project
            .models
            .iter()
            .map(|(n, m)| (n, &m.tags))
            .chain(base.iter().map(|(n, s)| (*n, &s.model.tags)))
            .collect();
        let parents = project
            .parents
            .iter()
            .map(|(n, p)| (n, p.clone()))
            .chain(
                base.iter()
                    .map(|(n, s)| (*n, s.parents.keys().cloned().collect())),
            )
            .collect();
        Some(select::resolve(
            &select::Universe { tags, parents },
            &opts.select,
            "--select-model",
        )?)
    };
    let takes_local = |n: &ModelName| use_local && selected.as_ref().is_none_or(|s| s.contains(n));
    let mut nodes: BTreeMap<ModelName, Node> = BTreeMap::new();
    let mut local_ignored = 0usize;
    for (name, m) in &project.models {
        let fp = &fingerprints[name];
        if takes_local(name) {
            nodes.insert(
                name.clone(),
                Node {
                    record: ModelRecord::of(m, project.self_referencing.contains(name)),
                    definition: fp.definition.clone(),
                    metadata: fp.metadata.clone(),
                    parents: project.parents.get(name).cloned().unwrap_or_default(),
                    local: true,
                },
            );
        } else if base
            .get(name)
            .is_none_or(|s| s.definition_hash != fp.definition || s.metadata_hash != fp.metadata)
        {
            local_ignored += 1;
        }
    }
    for (name, s) in &defs {
        if nodes.contains_key(*name) {
            continue;
        }
        if takes_local(name) {
            continue; // removed locally
        }
        if !project.models.contains_key(*name) && opts.deployed.is_none() {
            local_ignored += 1; // removed locally, but not taken
        }
        nodes.insert(
            (*name).clone(),
            Node {
                record: s.model.clone(),
                definition: s.definition_hash.clone(),
                metadata: s.metadata_hash.clone(),
                parents: s.parents.keys().cloned().collect(),
                local: false,
            },
        );
    }
    if local_ignored > 0 && opts.deployed.is_none() {
        notes.push(if restating {
            format!("{} ignored: a restatement plan recomputes the deployed versions (add `--with-local-changes` to include them)", crate::printer::plural(local_ignored as u64, "local change", "local changes"))
        } else {
            format!("{} not selected by `--select-model` {} left out", crate::printer::plural(local_ignored as u64, "local change", "local changes"), if local_ignored == 1 { "is" } else { "are" })
        });
    }

    // Every parent must exist in the target.
    let sources: BTreeMap<&ModelName, &str> = project
        .config
        .sources
        .keys()
        .filter_map(|n| fingerprints.get(n).map(|f| (n, f.data.as_str())))
        .collect();
    let mut missing = Vec::new();
    for (name, node) in &nodes {
        for p in &node.parents {
            if !nodes.contains_key(p) && !sources.contains_key(p) {
                missing.push(
                    Diagnostic::error(format!(
                        "model `{p}` would be removed, but `{name}` still reads it"
                    ))
                    .note(format!("`{name}` is defined in {}", node.record.file))
                    .hint(format!(
                        "remove or change `{name}` too, or keep `{p}`{}",
                        if node.local {
                            ""
                        } else {
                            " (`{name}` is not selected, so its deployed definition is kept)"
                        }
                    )),
                );
            }
        }
    }
    if !missing.is_empty() {
        return Err(Error::User(missing));
    }

    let order = topo_order(&nodes);
    let mut data: BTreeMap<ModelName, String> = sources
        .iter()
        .map(|(n, d)| ((*n).clone(), (*d).to_string()))
        .collect();
    for name in &order {
        let node = &nodes[name];
        let parents: Vec<(ModelName, Option<String>)> = node
            .parents
            .iter()
            .map(|p| (p.clone(), data.get(p).cloned()))
            .collect();
        let d = data_hash(&node.definition, &parents);
        data.insert(name.clone(), d);
    }

    // Categories, versions and snapshots.
    let universe_tags: BTreeMap<&ModelName, &BTreeSet<String>> =
        nodes.iter().map(|(n, x)| (n, &x.record.tags)).collect();
    let universe_parents: BTreeMap<&ModelName, BTreeSet<ModelName>> = nodes
        .iter()
        .map(|(n, x)| {
            (
                n,
                x.parents
                    .iter()
                    .filter(|p| nodes.contains_key(*p))
                    .cloned()
                    .collect(),
            )
        })
        .collect();
    let universe = select::Universe {
        tags: universe_tags,
        parents: universe_parents,
    };
    let force_breaking = select::resolve(&universe, &opts.breaking, "--breaking")?;
    let force_non_breaking = select::resolve(&universe, &opts.non_breaking, "--non-breaking")?;
    let restate = select::resolve(&universe, &opts.restate, "--restate-model")?;

    let mut models: Vec<PlanModel> = Vec::new();
    let mut categories: BTreeMap<ModelName, (Change, Option<Category>)> = BTreeMap::new();
    let mut snapshots: BTreeMap<ModelName, Snapshot> = BTreeMap::new();
    for name in &order {
        let node = &nodes[name];
        let d = &data[name];
        let prev = base.get(name).copied();
        let id = Snapshot::make_id(name, d, &node.metadata);
        let change = match prev {
            None => Change::Added,
            Some(p) if p.id == id => Change::Unchanged,
            Some(p) if p.definition_hash != node.definition => Change::DirectlyModified,
            Some(p) if p.data_hash != *d => Change::IndirectlyModified,
            Some(_) => Change::Metadata,
        };
        let mut reason = None;
        let mut changed_parents = Vec::new();
        let category = match (change, prev) {
            (Change::DirectlyModified, Some(p)) => {
                let (mut c, r) = categorize_direct(&p.model, &node.record);
                reason = r;
                let kind_changed = p.model.kind.name() != node.record.kind.name();
                if force_breaking.contains(name) {
                    c = Category::Breaking;
                    reason = Some("categorized breaking by --breaking".into());
                } else if force_non_breaking.contains(name) && !kind_changed {
                    c = Category::NonBreaking;
                    reason = Some("categorized non-breaking by --non-breaking".into());
                }
                if (opts.forward_only || node.record.forward_only)
                    && !kind_changed
                    && matches!(
                        node.record.kind,
                        Kind::IncrementalByTimeRange { .. }
                            | Kind::IncrementalByUniqueKey { .. }
                            | Kind::Full
                    )
                {
                    c = Category::ForwardOnly;
                    reason = Some(if opts.forward_only {
                        "forward-only by --forward-only: the new logic applies to intervals computed from now on".into()
                    } else {
                        "the model is forward_only: the new logic applies to intervals computed from now on".into()
                    });
                }
                Some(c)
            }
            (Change::IndirectlyModified, Some(p)) => {
                let mut cats = Vec::new();
                for parent in &node.parents {
                    match categories.get(parent) {
                        Some((Change::Unchanged, _)) => {}
                        Some((Change::Added, _)) => {
                            changed_parents.push(parent.clone());
                            cats.push(Category::Breaking);
                        }
                        Some((_, Some(c))) => {
                            changed_parents.push(parent.clone());
                            cats.push(*c);
                        }
                        Some((_, None)) => {}
                        None => {
                            // A source: did its definition change since the snapshot?
                            if p.parents.get(parent) != data.get(parent) {
                                changed_parents.push(parent.clone());
                                cats.push(Category::Breaking);
                                reason = Some(format!("source `{parent}` changed"));
                            }
                        }
                    }
                }
                Some(indirect_category(&cats, node, &mut reason))
            }
            (Change::Metadata, _) => Some(Category::Metadata),
            _ => None,
        };
        categories.insert(name.clone(), (change, category));

        let snapshot = match state.snapshots.get(&id) {
            Some(existing) => existing.clone(),
            None => {
                let version = match (change, category, prev) {
                    (Change::Unchanged, _, Some(p)) => p.version.clone(),
                    (_, Some(c), Some(p)) if !c.rebuilds() => p.version.clone(),
                    _ => d[..crate::fingerprint::VERSION_LEN].to_string(),
                };
                Snapshot {
                    name: name.clone(),
                    id: id.clone(),
                    definition_hash: node.definition.clone(),
                    data_hash: d.clone(),
                    metadata_hash: node.metadata.clone(),
                    version,
                    category,
                    parents: node
                        .parents
                        .iter()
                        .map(|p| (p.clone(), data.get(p).cloned().unwrap_or_default()))
                        .collect(),
                    model: node.record.clone(),
                    created_at: exec,
                }
            }
        };
        let diff = match (change, prev) {
            (Change::DirectlyModified | Change::Metadata, Some(p)) => {
                Some(render::definition_diff(&p.model, &node.record))
            }
            _ => None,
        };
        models.push(PlanModel {
            name: name.clone(),
            kind: node.record.kind.name().to_string(),
            change,
            category,
            fingerprint: d.clone(),
            previous_fingerprint: prev.map(|p| p.data_hash.clone()),
            version: Some(snapshot.version.clone()),
            previous_version: prev.map(|p| p.version.clone()),
            reason,
            changed_parents,
            diff,
            restated: false,
            backfill: None,
        });
        snapshots.insert(name.clone(), snapshot);
    }

    // Backfill.
    let ctx = intervals::Scope {
        state,
        execution_time: exec,
        window,
        catch_up: opts.catch_up,
    };
    let restated = intervals::restatement(&ctx, &order, &nodes_view(&nodes), &restate);
    let envs: Vec<&Environment> = [target_env, deployed_env, base_env]
        .into_iter()
        .flatten()
        .collect();
    let target = tables::targets(state, &snapshots, &envs, &restated);
    let mut computing: BTreeSet<ModelName> = BTreeSet::new();
    for m in &mut models {
        let snap = &snapshots[&m.name];
        let t = &target[&m.name];
        let completed_in = t.clone_from.as_ref().or(t.table.as_ref());
        let in_env = !opts.catch_up && base.get(&m.name).is_some_and(|p| p.id == snap.id);
        m.restated = restated.contains_key(&m.name);
        if opts.skip_backfill {
            continue;
        }
        m.backfill = intervals::compute(
            &ctx,
            snap,
            completed_in.map(String::as_str),
            in_env,
            m.category,
            restated.get(&m.name),
        );
        // A FULL model with its own table (not the one the environment reads now) is recomputed
        // whenever something it reads gets data in this plan (views and embedded models pass
        // that on): the table it has was computed from less.
        let upstream = snap.parents.keys().any(|p| computing.contains(p));
        let env_table = base_env
            .and_then(|e| e.models.get(&m.name))
            .and_then(|e| e.table.as_ref());
        let own_table = opts.catch_up || env_table != t.table.as_ref();
        if m.backfill.is_none() && upstream && own_table && snap.model.kind == Kind::Full {
            m.backfill = Some(intervals::full_refresh(&ctx, snap));
        }
        let virtual_kind = matches!(snap.model.kind, Kind::View | Kind::Embedded);
        if m.backfill.is_some() || upstream && virtual_kind {
            computing.insert(m.name.clone());
        }
    }
    if opts.skip_backfill {
        notes.push("--skip-backfill: nothing is computed; the environment will point at tables with missing intervals".into());
    }
    let mut affected: Vec<PlanModel> = models
        .into_iter()
        .filter(|m| m.change != Change::Unchanged || m.restated || m.backfill.is_some())
        .collect();
    for (name, p) in &base {
        if !nodes.contains_key(*name) {
            affected.push(PlanModel {
                name: (*name).clone(),
                kind: p.model.kind.name().to_string(),
                change: Change::Removed,
                category: None,
                fingerprint: p.data_hash.clone(),
                previous_fingerprint: Some(p.data_hash.clone()),
                version: None,
                previous_version: Some(p.version.clone()),
                reason: None,
                changed_parents: Vec::new(),
                diff: None,
                restated: false,
                backfill: None,
            });
        }
    }
    let summary = summarize(&affected);
    let new_snapshots: Vec<Snapshot> = snapshots
        .values()
        .filter(|s| !state.snapshots.contains_key(&s.id))
        .cloned()
        .collect();
    let mut plan = Plan {
        format: PLAN_FORMAT.to_string(),
        plan_id: String::new(),
        project: project.config.name.clone(),
        environment: opts.environment.clone(),
        base_environment: base_name,
        new_environment: target_env.is_none(),
        execution_time: format_ts(exec),
        start: window.map(|w| format_ts(w.start)),
        end: window.map(|w| format_ts(w.end)),
        restate: restate.into_iter().collect(),
        skip_backfill: opts.skip_backfill,
        models: affected,
        summary,
        notes,
        environment_revision: target_env.map(|e| e.revision),
        state_seq: state.seq,
        ttl_seconds: (opts.environment != PROD).then_some(project.config.env_ttl.as_secs()),
        snapshots: new_snapshots,
        target,
        definitions_from: opts.deployed.clone(),
    };
    plan.plan_id = plan_id(&plan)?;
    Ok(plan)
}

/// The deterministic id of a plan: a hash of its JSON without the id.
pub fn plan_id(plan: &Plan) -> Result<String> {
    let mut p = plan.clone();
    p.plan_id = String::new();
    let bytes =
        serde_json::to_vec(&p).map_err(|e| Error::Bug(format!("cannot serialize a plan: {e}")))?;
    Ok(blake3::hash(&bytes).to_hex()[..16].to_string())
}

fn nodes_view(
    nodes: &BTreeMap<ModelName, Node>,
) -> BTreeMap<&ModelName, (&ModelRecord, &BTreeSet<ModelName>)> {
    nodes
        .iter()
        .map(|(n, x)| (n, (&x.record, &x.parents)))
        .collect()
}

fn summarize(models: &[PlanModel]) -> Summary {
    let mut s = Summary::default();
    for m in models {
        match m.change {
            Change::Added => s.added += 1,
            Change::Removed => s.removed += 1,
            Change::DirectlyModified => s.directly_modified += 1,
            Change::IndirectlyModified => s.indirectly_modified += 1,
            Change::Metadata => s.metadata += 1,
            Change::Unchanged => {}
        }
        if m.restated {
            s.restated += 1;
        }
        if let Some(b) = &m.backfill {
            s.backfills += 1;
            s.partitions += b.partitions;
            s.batches += b.batches;
        }
    }
    s
}

/// The category of a directly modified model, with the reason when breaking.
fn categorize_direct(old: &ModelRecord, new: &ModelRecord) -> (Category, Option<String>) {
    let breaking = |r: String| (Category::Breaking, Some(r));
    if old.kind.name() != new.kind.name() {
        return breaking(format!(
            "kind changed from {} to {}",
            old.kind.name(),
            new.kind.name()
        ));
    }
    match (&old.kind, &new.kind) {
        (
            Kind::IncrementalByTimeRange {
                time_column: oc,
                format: of,
                lookback: ol,
                ..
            },
            Kind::IncrementalByTimeRange {
                time_column: nc,
                format: nf,
                lookback: nl,
                ..
            },
        ) => {
            if ol != nl {
                return breaking(format!("lookback changed from {ol} to {nl}"));
            }
            if oc != nc || of != nf {
                return breaking("the time column or its format changed".into());
            }
        }
        (
            Kind::IncrementalByUniqueKey { unique_key: o, .. },
            Kind::IncrementalByUniqueKey { unique_key: n, .. },
        ) if o != n => return breaking("the unique key changed".into()),
        _ => {}
    }
    if old.interval_unit != new.interval_unit && new.kind.is_incremental() {
        return breaking(format!(
            "the interval unit changed from {} to {}",
            old.interval_unit, new.interval_unit
        ));
    }
    if old.partitioned_by != new.partitioned_by {
        return breaking("partitioned_by changed".into());
    }
    if old.seed_hash != new.seed_hash {
        return breaking("the seed file's contents changed".into());
    }
    if old.sql == new.sql {
        return breaking("the definition changed".into());
    }
    let parse = |r: &ModelRecord| crate::sql::parse_query(std::path::Path::new(&r.file), &r.sql);
    match (parse(old), parse(new)) {
        (Ok(o), Ok(n)) => match categorize::categorize(&o, &n) {
            Verdict::NonBreaking => (
                Category::NonBreaking,
                Some("only columns were added".into()),
            ),
            Verdict::Breaking(r) => breaking(r),
            Verdict::Unchanged => breaking("the definition changed".into()),
        },
        _ => breaking("the previous query could not be compared".into()),
    }
}

/// An indirectly modified model's category from its changed parents' categories.
fn indirect_category(parents: &[Category], node: &Node, reason: &mut Option<String>) -> Category {
    use Category::*;
    if parents
        .iter()
        .any(|c| matches!(c, Breaking | IndirectBreaking))
    {
        return IndirectBreaking;
    }
    if parents
        .iter()
        .any(|c| matches!(c, NonBreaking | IndirectNonBreaking))
    {
        let wildcard =
            crate::sql::parse_query(std::path::Path::new(&node.record.file), &node.record.sql)
                .map(|q| categorize::has_wildcard(&q))
                .unwrap_or(true);
        if wildcard {
            *reason =
                Some("reads a changed parent with SELECT *, so its own columns change".into());
            return IndirectBreaking;
        }
        return IndirectNonBreaking;
    }
    if parents.contains(&ForwardOnly) {
        *reason = Some("upstream changes are forward-only".into());
        return ForwardOnly;
    }
    Metadata
}

/// Kahn's algorithm over the target definitions, ties broken by name.
fn topo_order(nodes: &BTreeMap<ModelName, Node>) -> Vec<ModelName> {
    let mut indegree: BTreeMap<&ModelName, usize> = BTreeMap::new();
    let mut children: BTreeMap<&ModelName, Vec<&ModelName>> = BTreeMap::new();
    for (n, node) in nodes {
        let ps: Vec<&ModelName> = node
            .parents
            .iter()
            .filter(|p| nodes.contains_key(*p))
            .collect();
        indegree.insert(n, ps.len());
        for p in ps {
            children.entry(p).or_default().push(n);
        }
    }
    let mut ready: BTreeSet<&ModelName> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut out = Vec::with_capacity(nodes.len());
    while let Some(n) = ready.pop_first() {
        out.push(n.clone());
        for c in children.get(n).into_iter().flatten() {
            if let Some(d) = indegree.get_mut(c) {
                *d -= 1;
                if *d == 0 {
                    ready.insert(c);
                }
            }
        }
    }
    // A cycle can only come from deployed definitions mixed with local ones; keep every node.
    if out.len() < nodes.len() {
        let placed: BTreeSet<ModelName> = out.iter().cloned().collect();
        out.extend(nodes.keys().filter(|n| !placed.contains(*n)).cloned());
    }
    out
}
