//! Building a plan, as phases: the environments involved, the target's definitions, the parent
//! check, data hashes in topological order, changes and categories with their snapshots, the
//! intervals to compute, and the assembled [`Plan`].
//!
//! Invariants (besides the module's, [`super`]):
//! - Each phase reads the results of the ones before it and the state; none writes anything.
//! - The target's definitions are ordered by the graph's own topological order
//!   ([`crate::dag::Dag`]): definitions mixed from the files and an environment that read each
//!   other in a cycle are refused, never ordered arbitrarily.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::intervals::{self, Scope};
use super::late::{self, LateData};
use super::options::user_window;
use super::{
    Change, Mode, Options, PLAN_FORMAT, Plan, PlanModel, Summary, Target, categorize, plan_id,
    render, select, tables,
};
use crate::error::{Diagnostic, Error, Result};
use crate::fingerprint::{Fingerprint, data_hash};
use crate::interval::{Interval, IntervalSet};
use crate::names::EnvName;
use crate::printer::plural;
use crate::project::{Kind, ModelName, Project};
use crate::state::{Category, Environment, ModelRecord, PROD, Snapshot, State, TableId};
use categorize::Verdict;

/// Build the plan for `opts` from the loaded project against `state`.
pub fn build(
    project: &Project,
    fingerprints: &BTreeMap<ModelName, Fingerprint>,
    state: &State,
    opts: &Options,
) -> Result<Plan> {
    let window = user_window(opts)?;
    let envs = Envs::of(state, opts)?;
    check_options(opts, window, &envs)?;
    let sources: BTreeMap<&ModelName, &str> = project
        .config
        .sources
        .keys()
        .filter_map(|n| fingerprints.get(n).map(|f| (n, f.data.as_str())))
        .collect();
    let (nodes, notes) = definitions(project, fingerprints, opts, &envs)?;
    check_parents(&nodes, &sources)?;
    let order = order(&nodes)?;
    let data = hashes(&order, &nodes, &sources);
    let changed = changes(state, opts, &envs, &nodes, &order, &data)?;
    let scope = Scope {
        state,
        execution_time: opts.execution_time,
        window,
        catch_up: opts.mode.catches_up(),
    };
    let view: late::Nodes<'_> = nodes
        .iter()
        .map(|(n, x)| (n, (x.record.as_ref(), x.parents.as_ref())))
        .collect();
    let mut late_data = envs.target.and_then(|env| {
        late::detect(
            &scope,
            env,
            &project.config.sources,
            &opts.late,
            &order,
            &view,
        )
    });
    let mut seeds = match (&mut late_data, opts.restate_late) {
        (Some(l), true) => {
            let seeds = late::seeds(l);
            l.restated = !seeds.is_empty();
            seeds
        }
        _ => BTreeMap::new(),
    };
    for (source, windows) in &opts.restate_below {
        let w = seeds.entry(source.clone()).or_default();
        *w = w.union(windows);
    }
    let (models, target) = backfills(&scope, opts, &envs, &view, &order, changed, &seeds);
    let parts = (models, target, late_data);
    assemble(project, state, opts, &envs, window, notes, parts)
}

/// The environments a plan reads: the target, the one it is compared with, and the one its
/// definitions come from.
struct Envs<'s> {
    /// The target, if it exists.
    target: Option<&'s Environment>,
    /// What the plan is compared with: the target, else the environment it starts from.
    base: Option<&'s Environment>,
    /// The environment whose deployed definitions make up the target (`run`, `promote`).
    deployed: Option<&'s Environment>,
    /// The base's snapshots by model.
    base_snapshots: BTreeMap<&'s ModelName, &'s Snapshot>,
    /// The deployed definitions by model: `deployed`'s, else the base's.
    deployed_snapshots: BTreeMap<&'s ModelName, &'s Snapshot>,
}

impl<'s> Envs<'s> {
    fn of(state: &'s State, opts: &Options) -> Result<Envs<'s>> {
        let target = state.environment(&opts.environment);
        let base = target.or_else(|| state.environment(&opts.create_from));
        let deployed = match opts.mode.deployed(&opts.environment) {
            Some(d) => Some(state.environment_or_error(d)?),
            None => None,
        };
        let base_snapshots = base.map(|e| snapshots_of(state, e)).unwrap_or_default();
        let deployed_snapshots = match deployed {
            Some(e) => snapshots_of(state, e),
            None => base_snapshots.clone(),
        };
        Ok(Envs {
            target,
            base,
            deployed,
            base_snapshots,
            deployed_snapshots,
        })
    }

    /// Environments in order of preference for a snapshot's table ([`tables::targets`]).
    fn by_preference(&self) -> Vec<&'s Environment> {
        [self.target, self.deployed, self.base]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// Each model of `env` with its snapshot.
fn snapshots_of<'s>(
    state: &'s State,
    env: &'s Environment,
) -> BTreeMap<&'s ModelName, &'s Snapshot> {
    env.models
        .iter()
        .filter_map(|(n, m)| state.snapshots.get(&m.snapshot).map(|s| (n, s)))
        .collect()
}

/// What the options may not ask for in this state.
fn check_options(opts: &Options, window: Option<Interval>, envs: &Envs<'_>) -> Result<()> {
    let restating = !opts.restate.is_empty();
    if window.is_some() && !restating && opts.mode != Mode::Offline && *opts.environment == *PROD {
        return Err(Error::from(
            Diagnostic::error("--start/--end cannot limit a plan for `prod` without restatement")
                .hint("prod must hold complete history: plan into a dev environment to preview a window, or add --restate-model to recompute that window"),
        ));
    }
    if restating && envs.target.is_none() {
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
    Ok(())
}

/// A target definition: from the local files or from an environment.
/// Hashes and parents are borrowed from the fingerprints and the project, or owned when they
/// come from the state.
pub(super) struct Node<'a> {
    /// Borrowed from the state when the environment's record is the same (most models of most
    /// plans), built from the file otherwise.
    pub(super) record: Cow<'a, ModelRecord>,
    definition: &'a str,
    metadata: &'a str,
    pub(super) parents: Cow<'a, BTreeSet<ModelName>>,
    local: bool,
}

/// The parents of a model without any.
static EMPTY: BTreeSet<ModelName> = BTreeSet::new();

/// Selectors' view of a set of models: tags and parents by name.
fn universe<'a>(
    models: impl Iterator<Item = (&'a ModelName, &'a BTreeSet<String>, BTreeSet<ModelName>)>,
) -> select::Universe<'a> {
    let mut tags = BTreeMap::new();
    let mut parents = BTreeMap::new();
    for (n, t, p) in models {
        tags.insert(n, t);
        parents.insert(n, p);
    }
    select::Universe { tags, parents }
}

/// Which definitions make up the target: the files, an environment's deployed ones, or a mix
/// under `--select-model`; and the notes that say what was left out.
fn definitions<'a>(
    project: &'a Project,
    fingerprints: &'a BTreeMap<ModelName, Fingerprint>,
    opts: &Options,
    envs: &Envs<'a>,
) -> Result<(BTreeMap<ModelName, Node<'a>>, Vec<String>)> {
    let base = &envs.base_snapshots;
    let restating = !opts.restate.is_empty() || opts.restate_late || !opts.restate_below.is_empty();
    let deployed = opts.mode.deployed(&opts.environment).is_some();
    let use_local = !deployed && (!restating || opts.with_local_changes);
    let selected: Option<BTreeSet<ModelName>> = if opts.select.is_empty() {
        None
    } else {
        let files = project.models.iter().map(|(n, m)| {
            let parents = project.parents.get(n).cloned().unwrap_or_default();
            (n, &m.tags, parents)
        });
        let deployed = base
            .iter()
            .map(|(n, s)| (*n, &s.model.tags, s.parents.keys().cloned().collect()));
        let u = universe(files.chain(deployed));
        Some(select::resolve(&u, &opts.select, "--select-model")?)
    };
    let takes_local = |n: &ModelName| use_local && selected.as_ref().is_none_or(|s| s.contains(n));
    let mut nodes: BTreeMap<ModelName, Node<'a>> = BTreeMap::new();
    let mut local_ignored = 0u64;
    for (name, m) in &project.models {
        let fp = &fingerprints[name];
        if takes_local(name) {
            let self_referencing = project.self_referencing.contains(name);
            let record = match base.get(name) {
                Some(s) if s.model.describes(m, self_referencing) => Cow::Borrowed(&s.model),
                _ => Cow::Owned(ModelRecord::of(m, self_referencing)),
            };
            nodes.insert(
                name.clone(),
                Node {
                    record,
                    definition: &fp.definition,
                    metadata: &fp.metadata,
                    parents: Cow::Borrowed(project.parents.get(name).unwrap_or(&EMPTY)),
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
    for (name, s) in &envs.deployed_snapshots {
        if nodes.contains_key(*name) || takes_local(name) {
            continue; // taken from the files, or removed there
        }
        if !project.models.contains_key(*name) && !deployed {
            local_ignored += 1; // removed locally, but not taken
        }
        nodes.insert(
            (*name).clone(),
            Node {
                record: Cow::Borrowed(&s.model),
                definition: &s.definition_hash,
                metadata: &s.metadata_hash,
                parents: Cow::Owned(s.parents.keys().cloned().collect()),
                local: false,
            },
        );
    }
    let mut notes = Vec::new();
    if local_ignored > 0 && !deployed {
        let changes = plural(local_ignored, "local change", "local changes");
        notes.push(if restating {
            format!("{changes} ignored: a restatement plan recomputes the deployed versions (add `--with-local-changes` to include them)")
        } else {
            let verb = if local_ignored == 1 { "is" } else { "are" };
            format!("{changes} not selected by `--select-model` {verb} left out")
        });
    }
    Ok((nodes, notes))
}

/// Every parent must exist in the target (or be a source).
fn check_parents(
    nodes: &BTreeMap<ModelName, Node<'_>>,
    sources: &BTreeMap<&ModelName, &str>,
) -> Result<()> {
    let mut missing = Vec::new();
    for (name, node) in nodes {
        for p in node.parents.iter() {
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
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::User(missing))
    }
}

/// The target's models in the graph's topological order; a cycle is an error.
fn order(nodes: &BTreeMap<ModelName, Node<'_>>) -> Result<Vec<ModelName>> {
    let parents = nodes.iter().map(|(n, x)| (n, x.parents.as_ref()));
    let dag = crate::dag::Dag::from_edges(nodes.keys(), parents).map_err(|cycle| {
        let path: Vec<String> = cycle.iter().map(|n| format!("`{n}`")).collect();
        Error::from(
            Diagnostic::error("the target's definitions read each other in a cycle")
                .note(format!("cycle: {}", path.join(" -> ")))
                .hint("the cycle mixes local and deployed definitions: select every model of the cycle with `--select-model`, or none of them"),
        )
    })?;
    Ok(dag.order().to_vec())
}

/// Data hashes in topological order: each definition with its parents' hashes.
fn hashes(
    order: &[ModelName],
    nodes: &BTreeMap<ModelName, Node<'_>>,
    sources: &BTreeMap<&ModelName, &str>,
) -> BTreeMap<ModelName, String> {
    let mut data: BTreeMap<ModelName, String> = sources
        .iter()
        .map(|(n, d)| ((*n).clone(), (*d).to_string()))
        .collect();
    for name in order {
        let node = &nodes[name];
        let parents: Vec<(&ModelName, Option<&str>)> = node
            .parents
            .iter()
            .map(|p| (p, data.get(p).map(String::as_str)))
            .collect();
        let d = data_hash(node.definition, &parents);
        data.insert(name.clone(), d);
    }
    data
}

/// The models of the plan with their changes and categories, their snapshots, and the models
/// selected for restatement.
struct Changed<'s> {
    models: Vec<PlanModel>,
    /// Borrowed from the state when it has the snapshot already (most models of most plans).
    snapshots: BTreeMap<ModelName, Cow<'s, Snapshot>>,
    restate: BTreeSet<ModelName>,
}

/// Change, category, version and snapshot of every model, in topological order (a child's
/// category depends on its parents').
fn changes<'s>(
    state: &'s State,
    opts: &Options,
    envs: &Envs<'_>,
    nodes: &BTreeMap<ModelName, Node<'_>>,
    order: &[ModelName],
    data: &BTreeMap<ModelName, String>,
) -> Result<Changed<'s>> {
    // The selectors' view of the target, built only when a selector was given (it copies
    // every model's parents).
    let selecting = [&opts.breaking, &opts.non_breaking, &opts.restate]
        .iter()
        .any(|s| !s.is_empty());
    let u = universe(nodes.iter().filter(|_| selecting).map(|(n, x)| {
        let known = x.parents.iter().filter(|p| nodes.contains_key(*p));
        (n, &x.record.tags, known.cloned().collect())
    }));
    let force_breaking = select::resolve(&u, &opts.breaking, "--breaking")?;
    let force_non_breaking = select::resolve(&u, &opts.non_breaking, "--non-breaking")?;
    let restate = select::resolve(&u, &opts.restate, "--restate-model")?;

    let mut models: Vec<PlanModel> = Vec::with_capacity(order.len());
    let mut categories: BTreeMap<ModelName, (Change, Option<Category>)> = BTreeMap::new();
    let mut snapshots: BTreeMap<ModelName, Cow<'s, Snapshot>> = BTreeMap::new();
    for name in order {
        let node = &nodes[name];
        let d = &data[name];
        let prev = envs.base_snapshots.get(name).copied();
        let id = Snapshot::make_id(name, d, node.metadata);
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
                let (mut c, r) = categorize_direct(&p.model, node.record.as_ref());
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
                for parent in node.parents.iter() {
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
            Some(existing) => Cow::Borrowed(existing),
            None => Cow::Owned({
                let version = match (change, category, prev) {
                    (Change::Unchanged, _, Some(p)) => p.version.clone(),
                    (_, Some(c), Some(p)) if !c.rebuilds() => p.version.clone(),
                    _ => d[..crate::fingerprint::VERSION_LEN].to_string(),
                };
                Snapshot {
                    name: name.clone(),
                    id: id.clone(),
                    definition_hash: node.definition.to_string(),
                    data_hash: d.clone(),
                    metadata_hash: node.metadata.to_string(),
                    version,
                    category,
                    parents: node
                        .parents
                        .iter()
                        .map(|p| (p.clone(), data.get(p).cloned().unwrap_or_default()))
                        .collect(),
                    model: node.record.as_ref().clone(),
                    created_at: opts.execution_time,
                }
            }),
        };
        let diff = match (change, prev) {
            (Change::DirectlyModified | Change::Metadata, Some(p)) => {
                Some(render::definition_diff(&p.model, node.record.as_ref()))
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
    Ok(Changed {
        models,
        snapshots,
        restate,
    })
}

/// Restatement windows, the table each model writes, and what each must compute.
fn backfills<'s>(
    scope: &Scope<'_>,
    opts: &Options,
    envs: &Envs<'_>,
    view: &late::Nodes<'_>,
    order: &[ModelName],
    changed: Changed<'s>,
    seeds: &BTreeMap<ModelName, IntervalSet>,
) -> (Changed<'s>, BTreeMap<ModelName, Target>) {
    let Changed {
        mut models,
        snapshots,
        restate,
    } = changed;
    let restated = intervals::restatement(scope, order, view, &restate, seeds);
    let target = tables::targets(scope.state, &snapshots, &envs.by_preference(), &restated);
    let catch_up = opts.mode.catches_up();
    let mut computing: BTreeSet<ModelName> = BTreeSet::new();
    for m in &mut models {
        let snap = &snapshots[&m.name];
        let t = &target[&m.name];
        let completed_in = t.clone_from.as_ref().or(t.table.as_ref());
        let in_env = !catch_up
            && envs
                .base_snapshots
                .get(&m.name)
                .is_some_and(|p| p.id == snap.id);
        m.restated = restated.contains_key(&m.name);
        if opts.skip_backfill {
            continue;
        }
        m.backfill = intervals::compute(
            scope,
            snap,
            completed_in.map(TableId::as_str),
            in_env,
            m.category,
            restated.get(&m.name),
        );
        // A FULL model with its own table (not the one the environment reads now) is recomputed
        // whenever something it reads gets data in this plan (views and embedded models pass
        // that on): the table it has was computed from less.
        let upstream = snap.parents.keys().any(|p| computing.contains(p));
        let env_table = envs
            .base
            .and_then(|e| e.models.get(&m.name))
            .and_then(|e| e.table.as_ref());
        let own_table = catch_up || env_table != t.table.as_ref();
        if m.backfill.is_none() && upstream && own_table && snap.model.kind == Kind::Full {
            m.backfill = Some(intervals::full_refresh(scope, snap));
        }
        let virtual_kind = matches!(snap.model.kind, Kind::View | Kind::Embedded);
        if m.backfill.is_some() || upstream && virtual_kind {
            computing.insert(m.name.clone());
        }
    }
    (
        Changed {
            models,
            snapshots,
            restate,
        },
        target,
    )
}

/// The plan: affected models (removed ones last), counts, new snapshots, and its id.
#[allow(clippy::too_many_arguments)]
fn assemble(
    project: &Project,
    state: &State,
    opts: &Options,
    envs: &Envs<'_>,
    window: Option<Interval>,
    mut notes: Vec<String>,
    (changed, target, late_data): (Changed<'_>, BTreeMap<ModelName, Target>, Option<LateData>),
) -> Result<Plan> {
    if opts.skip_backfill {
        notes.push("--skip-backfill: nothing is computed; the environment will point at tables with missing intervals".into());
    }
    let mut affected: Vec<PlanModel> = changed
        .models
        .into_iter()
        .filter(|m| m.change != Change::Unchanged || m.restated || m.backfill.is_some())
        .collect();
    for (name, p) in &envs.base_snapshots {
        if !changed.snapshots.contains_key(*name) {
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
    let new_snapshots: Vec<Snapshot> = changed
        .snapshots
        .into_values()
        .filter_map(|s| match s {
            Cow::Owned(s) if !state.snapshots.contains_key(&s.id) => Some(s),
            _ => None,
        })
        .collect();
    let mut plan = Plan {
        format: PLAN_FORMAT.to_string(),
        plan_id: String::new(),
        project: project.config.name.clone(),
        environment: opts.environment.to_string(),
        base_environment: envs.base.map(|e| e.name.to_string()),
        new_environment: envs.target.is_none(),
        // Microseconds, as the plan file holds it: a plan applied at once and the same plan
        // saved and applied later run at the same instant.
        execution_time: chrono::SubsecRound::trunc_subsecs(opts.execution_time, 6),
        start: window.map(|w| w.start),
        end: window.map(|w| w.end),
        restate: changed.restate.into_iter().collect(),
        skip_backfill: opts.skip_backfill,
        models: affected,
        summary,
        notes,
        environment_revision: envs.target.map(|e| e.revision),
        state_seq: state.seq,
        ttl_seconds: (*opts.environment != *PROD).then_some(project.config.env_ttl.as_secs()),
        snapshots: new_snapshots,
        target,
        definitions_from: opts
            .mode
            .deployed(&opts.environment)
            .map(EnvName::to_string),
        late_data,
        accepted_gates: Vec::new(),
    };
    plan.plan_id = plan_id(&plan)?;
    Ok(plan)
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
    let parse =
        |r: &ModelRecord| crate::sql::parse_query(std::path::Path::new(&r.file), &r.sql, r.dialect);
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
        let wildcard = crate::sql::parse_query(
            std::path::Path::new(&node.record.file),
            &node.record.sql,
            node.record.dialect,
        )
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
