//! `tidemark janitor [--dry-run]`: delete expired environments, forget and delete physical
//! tables nothing can read any more, and vacuum the rest.
//!
//! Invariants:
//! - `prod` never expires.
//! - A table is kept while any environment points at it, or pointed at it in a revision within
//!   the rollback horizon (the environment TTL, at least the previous revision), so rollback
//!   stays instant. Deleting a table is committed to the state first; the directory is removed
//!   only afterwards, so no environment can point at a deleted table.
//! - Vacuum keeps every version any kept revision pins plus the latest, and files removed less
//!   than an hour ago (for applies that are reading them right now). Clones are made of hard
//!   links, so deleting or vacuuming the table a clone came from never touches the clone.

use std::collections::{BTreeMap, BTreeSet};

use super::apply::engine;
use super::emit;
use super::rollback::contents_at;
use crate::cli::Context;
use crate::engine::Engine;
use crate::error::Result;
use crate::state::{Action, PROD, State, StateStore};

/// Run `janitor`.
pub fn run(ctx: &Context, dry_run: bool, out: &mut dyn std::io::Write) -> Result<u8> {
    let (config, store) = super::warehouse(ctx)?;
    let engine = engine(&config)?;
    let now = ctx.execution_time;
    let horizon = chrono::Duration::from_std(config.env_ttl).unwrap_or(chrono::Duration::days(7));
    // Decided inside the state transaction: if an apply leased a table or an environment
    // moved meanwhile, the commit races, and the decision is made again on the fresh state.
    let mut plan = Cleanup::default();
    let state = store.transact_if(!dry_run, "janitor", |state| {
        plan = Cleanup::of(&store, state, now, horizon)?;
        Ok(plan.actions())
    })?;
    let Cleanup {
        expired,
        tables,
        drop_tables,
        drop_snapshots,
        kept,
    } = plan;

    let mut report = String::new();
    let verb = if dry_run { "would delete" } else { "deleted" };
    for (e, _) in &expired {
        report.push_str(&format!("{verb} expired environment {e}\n"));
    }
    for t in &drop_tables {
        report.push_str(&format!("{verb} table {t}\n"));
    }
    for (t, apply) in &kept {
        report.push_str(&format!(
            "kept table {t}: apply {apply} holds a lease on it\n"
        ));
    }
    if !dry_run {
        for t in &drop_tables {
            engine.drop_table(t, false)?;
        }
    }
    let mut vacuumed = 0u64;
    for (t, keep) in &tables {
        if !state.tables.contains_key(t) {
            continue;
        }
        let mut keep: Vec<u64> = keep.iter().copied().collect();
        if let Some(info) = engine.table_info(t)? {
            keep.push(info.version);
        }
        vacuumed += engine.vacuum(t, &keep, dry_run)?;
    }
    report.push_str(&format!(
        "{} {} environment(s), {} table(s), {} snapshot(s); vacuum {} {vacuumed} file(s)\n",
        if dry_run { "would delete" } else { "deleted" },
        expired.len(),
        drop_tables.len(),
        drop_snapshots.len(),
        if dry_run { "would remove" } else { "removed" },
    ));
    emit(out, &report)?;
    Ok(0)
}

/// Table id → the Delta versions pinned.
type Pins = BTreeMap<String, BTreeSet<u64>>;

/// What one janitor pass deletes, decided on one state.
#[derive(Default)]
struct Cleanup {
    /// Expired environments with the revision read.
    expired: Vec<(String, u64)>,
    /// Tables kept, with the versions to keep.
    tables: Pins,
    drop_tables: Vec<String>,
    drop_snapshots: Vec<String>,
    /// Unreachable tables kept because an apply leased them: table → apply.
    kept: BTreeMap<String, String>,
}

impl Cleanup {
    fn of(
        store: &StateStore,
        state: &State,
        now: chrono::DateTime<chrono::Utc>,
        horizon: chrono::Duration,
    ) -> Result<Cleanup> {
        let expired: Vec<(String, u64)> = state
            .environments
            .values()
            .filter(|e| e.name != PROD && e.expires_at.is_some_and(|x| x <= now))
            .map(|e| (e.name.clone(), e.revision))
            .collect();
        let (tables, snapshots) = reachable(store, state, &expired, now - horizon)?;
        // Leases lapse by the clock of the commit that checks them; `now` may be fixed by
        // `--execution-time`, so the real clock decides here as it will there.
        let leased = state.leased(chrono::Utc::now());
        let mut kept = BTreeMap::new();
        let mut drop_tables = Vec::new();
        for t in state.tables.keys().filter(|t| !tables.contains_key(*t)) {
            match leased.get(t.as_str()) {
                Some(apply) => {
                    kept.insert(t.clone(), (*apply).to_string());
                }
                None => drop_tables.push(t.clone()),
            }
        }
        let drop_snapshots = state
            .snapshots
            .keys()
            .filter(|s| !snapshots.contains(*s) && !leased.contains_key(s.as_str()))
            .cloned()
            .collect();
        Ok(Cleanup {
            expired,
            tables,
            drop_tables,
            drop_snapshots,
            kept,
        })
    }

    fn actions(&self) -> Vec<Action> {
        let mut actions: Vec<Action> = self
            .expired
            .iter()
            .map(|(name, rev)| Action::DeleteEnvironment {
                name: name.clone(),
                expected_revision: *rev,
            })
            .collect();
        actions.extend(
            self.drop_tables
                .iter()
                .map(|id| Action::DeleteTable { id: id.clone() }),
        );
        actions.extend(
            self.drop_snapshots
                .iter()
                .map(|id| Action::DeleteSnapshot { id: id.clone() }),
        );
        actions
    }
}

/// Tables (with the versions pinned) and snapshots that surviving environments use now or used
/// in a revision since `since` (and always in their previous revision).
fn reachable(
    store: &StateStore,
    state: &State,
    expired: &[(String, u64)],
    since: chrono::DateTime<chrono::Utc>,
) -> Result<(Pins, BTreeSet<String>)> {
    let mut tables: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut snapshots = BTreeSet::new();
    let gone: BTreeSet<&str> = expired.iter().map(|(n, _)| n.as_str()).collect();
    for env in state
        .environments
        .values()
        .filter(|e| !gone.contains(e.name.as_str()))
    {
        let mut revisions = vec![env.clone()];
        for h in state.history.iter().filter(|h| {
            h.environment == env.name
                && h.action == "put"
                && h.revision < env.revision
                && (h.at >= since || h.revision + 1 == env.revision)
        }) {
            if let Ok(old) = contents_at(store, state, &env.name, h.revision) {
                revisions.push(old);
            }
        }
        for e in revisions {
            for m in e.models.values() {
                snapshots.insert(m.snapshot.clone());
                if let Some(t) = &m.table {
                    let pins = tables.entry(t.clone()).or_default();
                    if let Some(v) = m.table_version {
                        pins.insert(v);
                    }
                }
            }
        }
    }
    Ok((tables, snapshots))
}
