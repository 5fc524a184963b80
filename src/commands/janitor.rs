//! `tidemark janitor [--dry-run]`: delete expired environments, forget and delete physical
//! tables nothing can read any more, and vacuum the rest.
//!
//! Invariants:
//! - What is deleted is decided by [`crate::env::janitor`]'s retention rules. Deleting a table
//!   is committed to the state first; the directory is removed only afterwards, so no
//!   environment can point at a deleted table.
//! - Vacuum keeps every version any kept revision pins plus the latest, and files removed less
//!   than an hour ago (for applies that are reading them right now). A clone owns copies of
//!   its files (hard links on a local disk, server-side copies on an object store), so deleting
//!   or vacuuming the table a clone came from never touches the clone.

use super::{emit, warehouse};
use crate::engine::{Engine, LocalEngine};
use crate::env::janitor::{Cleanup, sweep};
use crate::error::{ExitStatus, Result};
use crate::printer::plural;
use crate::settings::Settings;

/// Run `janitor`.
pub fn run(ctx: &Settings, dry_run: bool, out: &mut dyn std::io::Write) -> Result<ExitStatus> {
    let (config, store) = warehouse(ctx)?;
    let engine = LocalEngine::for_warehouse(&config.warehouse, &config.storage)?;
    if !dry_run {
        store.storage().check_writable()?;
    }
    let now = ctx.execution_time;
    let horizon = chrono::Duration::from_std(config.env_ttl).unwrap_or(chrono::Duration::days(7));
    let (state, plan) = sweep(&store, now, horizon, dry_run)?;
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
        report.push_str(&format!("{verb} expired environment `{e}`\n"));
    }
    for t in &drop_tables {
        report.push_str(&format!("{verb} table `{t}`\n"));
    }
    for (t, apply) in &kept {
        report.push_str(&format!(
            "kept table `{t}`: apply `{apply}` holds a lease on it\n"
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
        "{} {}, {}, {}; vacuum {} {}\n",
        if dry_run { "would delete" } else { "deleted" },
        plural(expired.len() as u64, "environment", "environments"),
        plural(drop_tables.len() as u64, "table", "tables"),
        plural(drop_snapshots.len() as u64, "snapshot", "snapshots"),
        if dry_run { "would remove" } else { "removed" },
        plural(vacuumed, "file", "files"),
    ));
    emit(out, &report)?;
    Ok(ExitStatus::Success)
}
