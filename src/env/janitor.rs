//! The janitor's retention rules: which environments have expired, and which tables and
//! snapshots no environment can read any more.
//!
//! Invariants:
//! - `prod` never expires.
//! - A table is kept while any environment points at it, or pointed at it in a revision within
//!   the rollback horizon (the environment TTL, at least the previous revision), so rollback
//!   stays instant.
//! - A table or snapshot an apply holds a lease on is kept even when unreachable.
//! - Decisions are made on one state, inside the state transaction that commits them: if an
//!   apply leased a table or an environment moved meanwhile, the commit races and the decision
//!   is made again on the fresh state.

use std::collections::{BTreeMap, BTreeSet};

use super::rollback::contents_at;
use crate::error::Result;
use crate::state::{Action, EnvName, HistoryAction, PROD, SnapshotId, State, StateStore, TableId};

/// Decide and (unless `dry_run`) commit one janitor pass: the state after it and what it
/// deletes. Tables are only forgotten here; their directories are removed by the caller after
/// the commit, so no environment can point at a deleted table.
pub fn sweep(
    store: &StateStore,
    now: chrono::DateTime<chrono::Utc>,
    horizon: chrono::Duration,
    dry_run: bool,
) -> Result<(State, Cleanup)> {
    let mut plan = Cleanup::default();
    let state = store.transact_if(!dry_run, "janitor", |state| {
        plan = Cleanup::of(store, state, now, horizon)?;
        Ok(plan.actions())
    })?;
    Ok((state, plan))
}

/// Table id → the Delta versions pinned.
pub type Pins = BTreeMap<TableId, BTreeSet<u64>>;

/// What one janitor pass deletes, decided on one state.
#[derive(Default)]
pub struct Cleanup {
    /// Expired environments with the revision read.
    pub expired: Vec<(EnvName, u64)>,
    /// Tables kept, with the versions to keep.
    pub tables: Pins,
    /// Tables nothing can read any more.
    pub drop_tables: Vec<TableId>,
    /// Snapshots nothing refers to any more.
    pub drop_snapshots: Vec<SnapshotId>,
    /// Unreachable tables kept because an apply leased them: table → apply.
    pub kept: BTreeMap<TableId, String>,
}

impl Cleanup {
    /// What to delete from `state` at `now`, keeping revisions since `now - horizon`.
    pub fn of(
        store: &StateStore,
        state: &State,
        now: chrono::DateTime<chrono::Utc>,
        horizon: chrono::Duration,
    ) -> Result<Cleanup> {
        let expired: Vec<(EnvName, u64)> = state
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

    /// The state actions that delete it.
    pub fn actions(&self) -> Vec<Action> {
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
    expired: &[(EnvName, u64)],
    since: chrono::DateTime<chrono::Utc>,
) -> Result<(Pins, BTreeSet<SnapshotId>)> {
    let mut tables: Pins = BTreeMap::new();
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
                && h.action == HistoryAction::Put
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
