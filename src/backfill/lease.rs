//! The apply's claim on the tables it reuses, so that `janitor` cannot delete them under it.
//!
//! Invariants:
//! - The lease is committed to the state after every input check and before the apply's first
//!   write (a clone, a batch, a progress record). Bad input therefore still writes nothing.
//! - A plan whose tables were deleted after it was made is refused before anything is written:
//!   it counted on their contents, so running it would leave gaps.
//! - The state orders a lease and a janitor deletion: whichever commits first wins, and the
//!   loser sees the winner's commit (the janitor keeps the table; the apply stops). An apply
//!   that meets a table vanishing under it before its lease is told the same, from a fresh
//!   read of the state ([`explain`]).

use std::collections::BTreeSet;

use super::ApplyRun;
use crate::error::{Diagnostic, Error, Result};
use crate::plan::Plan;
use crate::state::{Action, Lease, SnapshotId, TableId};

/// The shortest lease: an interrupted apply can be resumed for at least this long.
const MIN_LEASE: chrono::Duration = chrono::Duration::days(1);

/// The tables and snapshots `plan` reads, writes or builds from.
fn wanted(plan: &Plan) -> (BTreeSet<TableId>, BTreeSet<SnapshotId>) {
    let tables = plan
        .target
        .values()
        .flat_map(|t| t.table.iter().chain(t.clone_from.iter()))
        .cloned()
        .collect();
    let snapshots = plan.target.values().map(|t| t.snapshot.clone()).collect();
    (tables, snapshots)
}

/// Refuse a plan whose tables or snapshots a janitor pass deleted after it was made.
pub fn check_not_deleted(cx: &ApplyRun<'_>, plan: &Plan) -> Result<()> {
    if plan.state_seq >= cx.state.seq {
        return Ok(());
    }
    let (tables, snapshots) = wanted(plan);
    for c in cx.store.commits(plan.state_seq + 1, cx.state.seq)? {
        for a in &c.actions {
            let id = match a {
                Action::DeleteTable { id } if tables.contains(id) => id.as_str(),
                Action::DeleteSnapshot { id } if snapshots.contains(id) => id.as_str(),
                _ => continue,
            };
            return Err(deleted(id, &format!("state commit {}", c.seq)));
        }
    }
    Ok(())
}

/// `err`, met before the lease was taken, unless a janitor pass deleted a table or snapshot
/// the plan reuses meanwhile (it commits the deletion before removing the files, so a fresh
/// read of the state shows it): then that is the error, as if the lease had lost the race.
pub fn explain(cx: &ApplyRun<'_>, plan: &Plan, err: Error) -> Error {
    let Ok(fresh) = cx.store.read() else {
        return err;
    };
    let (tables, snapshots) = wanted(plan);
    let gone = (tables.iter())
        .find(|t| cx.state.tables.contains_key(*t) && !fresh.tables.contains_key(*t))
        .map(TableId::as_str)
        .or_else(|| {
            (snapshots.iter())
                .find(|s| cx.state.snapshots.contains_key(*s) && !fresh.snapshots.contains_key(*s))
                .map(SnapshotId::as_str)
        });
    match gone {
        Some(id) => deleted(id, "a janitor pass running alongside"),
        None => err,
    }
}

/// Take (or renew, on resume) the lease on every existing table and snapshot `plan` reads,
/// writes or builds from. Returns whether this apply holds a lease now.
pub fn take(cx: &ApplyRun<'_>, plan: &Plan) -> Result<bool> {
    let (tables, snapshots) = wanted(plan);
    let tables: BTreeSet<TableId> = tables
        .into_iter()
        .filter(|t| cx.state.tables.contains_key(t))
        .collect();
    let snapshots: BTreeSet<SnapshotId> = snapshots
        .into_iter()
        .filter(|s| cx.state.snapshots.contains_key(s))
        .collect();
    if tables.is_empty() && snapshots.is_empty() {
        return Ok(cx.state.leases.contains_key(cx.apply.id.as_str()));
    }
    let ttl = chrono::Duration::from_std(cx.config.env_ttl)
        .unwrap_or(MIN_LEASE)
        .max(MIN_LEASE);
    let lease = Lease {
        environment: plan.environment.clone(),
        tables,
        snapshots,
        expires_at: cx.now + ttl,
    };
    let message = format!("lease for apply {}", cx.apply.id);
    cx.store.transact(&message, |fresh| {
        let gone = (lease.tables.iter())
            .find(|t| !fresh.tables.contains_key(*t))
            .map(TableId::as_str);
        let gone = gone.or_else(|| {
            (lease.snapshots.iter())
                .find(|s| !fresh.snapshots.contains_key(*s))
                .map(SnapshotId::as_str)
        });
        if let Some(id) = gone {
            return Err(deleted(id, "a janitor pass that just finished"));
        }
        Ok(vec![Action::Lease {
            apply: cx.apply.id.to_string(),
            lease: lease.clone(),
        }])
    })?;
    Ok(true)
}

/// The action that ends the lease (part of the apply's final commit).
pub fn release(cx: &ApplyRun<'_>) -> Action {
    Action::Release {
        apply: cx.apply.id.to_string(),
    }
}

fn deleted(id: &str, by: &str) -> Error {
    let what = if id.contains('@') {
        "snapshot"
    } else {
        "table"
    };
    Error::from(
        Diagnostic::error(format!(
            "the plan reuses {what} {id}, which {by} deleted after the plan was made"
        ))
        .hint("nothing was written; make the plan again (it will recompute what that table held) and review it"),
    )
}
