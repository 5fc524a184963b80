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
    let state = store.read()?;

    let expired: Vec<(String, u64)> = state
        .environments
        .values()
        .filter(|e| e.name != PROD && e.expires_at.is_some_and(|x| x <= now))
        .map(|e| (e.name.clone(), e.revision))
        .collect();
    let (tables, snapshots) = reachable(&store, &state, &expired, now - horizon)?;
    let drop_tables: Vec<String> = state
        .tables
        .keys()
        .filter(|t| !tables.contains_key(*t))
        .cloned()
        .collect();
    let drop_snapshots: Vec<String> = state
        .snapshots
        .keys()
        .filter(|s| !snapshots.contains(*s))
        .cloned()
        .collect();

    let mut report = String::new();
    let verb = if dry_run { "would delete" } else { "deleted" };
    for (e, _) in &expired {
        report.push_str(&format!("{verb} expired environment {e}\n"));
    }
    for t in &drop_tables {
        report.push_str(&format!("{verb} table {t}\n"));
    }
    if !dry_run && (!expired.is_empty() || !drop_tables.is_empty() || !drop_snapshots.is_empty()) {
        let mut actions: Vec<Action> = expired
            .iter()
            .map(|(name, rev)| Action::DeleteEnvironment {
                name: name.clone(),
                expected_revision: *rev,
            })
            .collect();
        actions.extend(
            drop_tables
                .iter()
                .map(|id| Action::DeleteTable { id: id.clone() }),
        );
        actions.extend(
            drop_snapshots
                .iter()
                .map(|id| Action::DeleteSnapshot { id: id.clone() }),
        );
        store.transact("janitor", |_| Ok(actions.clone()))?;
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
