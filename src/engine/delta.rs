//! Delta Lake helpers over delta-rs, used by the batch pipeline ([`super::batch`]), the table
//! operations ([`super::ops`]), the log writer ([`super::commit`]), open tables
//! ([`super::tables`]) and sessions ([`super::session`]). A leaf: it uses none of them.
//!
//! Invariants:
//! - Tables tidemark creates are created empty, in a commit of their own
//!   ([`ensure_created`]), with `delta.checkpointInterval = 10`; every data commit then has a
//!   read snapshot to be checked against.
//! - delta-rs errors keep their text on a `Caused by:` line; commit conflicts and storage
//!   errors are transient ([`failed_delta`]).
//! - A window of a time-partitioned table is the half-open range of partition values
//!   `[start, end)` ([`window_keys`], [`window_predicate`]).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use futures::TryStreamExt;

use super::{Location, PARTITION_COLUMN, WriteMode, failed, partition_key};
use crate::error::{Diagnostic, Error, Result};

/// The table at `at`, loaded at its latest version (not loaded: no table there yet).
pub(super) async fn open(at: &Location) -> Result<DeltaTable> {
    if let Some(dir) = at.local_path() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::from(crate::error::io_error("create", &dir, &e)))?;
    }
    DeltaTable::try_from_url(at.url().clone())
        .await
        .map_err(|e| failed_delta(&format!("cannot open the table at `{at}`"), e))
}

/// The table at `at`, loaded at `version`.
pub(super) async fn open_at(at: &Location, version: u64) -> Result<DeltaTable> {
    deltalake::open_table_with_version(at.url().clone(), version)
        .await
        .map_err(|e| failed_delta(&format!("cannot read `{at}` at version {version}"), e))
}

/// A delta-rs error about `what`; commit conflicts and storage errors are transient.
pub(super) fn failed_delta(what: &str, e: deltalake::DeltaTableError) -> Error {
    use deltalake::DeltaTableError as E;
    use deltalake::kernel::transaction::TransactionError as T;
    let transient = match &e {
        E::ObjectStore { .. } | E::Io { .. } | E::VersionAlreadyExists(_) => true,
        E::Transaction { source } => matches!(
            source,
            T::CommitConflict(_)
                | T::MaxCommitAttempts(_)
                | T::VersionAlreadyExists(_)
                | T::ObjectStore { .. }
        ),
        _ => false,
    };
    let d = Diagnostic::error(what).caused_by(e);
    if transient {
        Error::transient(d)
    } else {
        Error::from(d)
    }
}

/// Checkpoint interval of the tables tidemark creates: Delta Lake's own default (delta-rs uses
/// 100). Opening a table replays the commits since its last checkpoint, and a model reading
/// its parent at the version just written opens it for every batch; 10 keeps that replay short
/// (47.6 ms a child batch with 100, in the `chain` benchmark).
const CHECKPOINT_INTERVAL: &str = "10";

/// Create the table (schema only, no data) if it does not exist, so that the data commit that
/// follows has a snapshot to be checked against.
///
/// delta-rs commits the first write to a missing table as version 0 without a read snapshot;
/// when two writers race, the loser is retried against the winner's state *as if it had read
/// it*, so the winner's files are never checked and both sets land (found by the racing-applies
/// test: duplicated rows). Creating the table in a commit of its own closes that hole: a racing
/// create adds nothing, and every data commit then has a real read snapshot, so a concurrent
/// overwrite of the same window (or the same transaction id) is a conflict.
pub(super) async fn ensure_created(
    table: DeltaTable,
    at: &Location,
    batches: &[RecordBatch],
    partition_columns: &[&str],
    ctx: &SessionContext,
) -> Result<DeltaTable> {
    if table.version().is_some() {
        return Ok(table);
    }
    let Some(first) = batches.first() else {
        return Ok(table);
    };
    let empty = RecordBatch::new_empty(first.schema());
    let created = table
        .write(vec![empty])
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(partition_columns.iter().copied())
        .with_configuration([("delta.checkpointInterval", Some(CHECKPOINT_INTERVAL))])
        .with_session_state(Arc::new(ctx.state()))
        .await;
    match created {
        Ok(t) => Ok(t),
        // Someone else created it meanwhile: use theirs.
        Err(e) => match open(at).await {
            Ok(t) if t.version().is_some() => Ok(t),
            _ => Err(failed_delta(&format!("cannot create `{at}`"), e)),
        },
    }
}

/// A DataFusion provider of the table at `at`, at `version` (`None`: latest).
pub async fn provider(
    ctx: &SessionContext,
    at: &Location,
    version: Option<u64>,
) -> std::result::Result<Arc<dyn TableProvider>, String> {
    let url = at.url().clone();
    let table = match version {
        Some(v) => deltalake::open_table_with_version(url, v).await,
        None => deltalake::open_table(url).await,
    }
    .map_err(|e| e.to_string())?;
    provider_of(ctx, table).await
}

/// A DataFusion provider of `table` at its loaded version.
pub async fn provider_of(
    ctx: &SessionContext,
    table: DeltaTable,
) -> std::result::Result<Arc<dyn TableProvider>, String> {
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| e.to_string())?;
    // The table was loaded at the wanted version, so its provider reads exactly that version.
    table.table_provider().await.map_err(|e| e.to_string())
}

/// The window's partition keys: `[start, end)`.
pub(super) fn window_keys(w: &WriteMode) -> Option<(String, String)> {
    match w {
        WriteMode::TimeRange { unit, window, .. } => Some((
            partition_key(*unit, window.start),
            partition_key(*unit, window.end),
        )),
        _ => None,
    }
}

/// The Delta predicate of a window overwrite over partition values `[keys.0, keys.1)`.
pub(super) fn window_predicate(keys: &(String, String)) -> String {
    format!(
        "{PARTITION_COLUMN} >= '{}' AND {PARTITION_COLUMN} < '{}'",
        keys.0, keys.1
    )
}

/// Bytes of the data files of `version` (within the window's partitions, if any).
pub(super) async fn bytes_in(
    at: &Location,
    version: u64,
    keys: Option<&(String, String)>,
) -> Result<u64> {
    let table = open_at(at, version).await?;
    let files: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(|e| failed("reading the table's files", e))?;
    Ok(files
        .iter()
        .filter(|f| {
            keys.is_none_or(|(s, e)| {
                let p = f
                    .partition_values_map()
                    .get(PARTITION_COLUMN)
                    .cloned()
                    .flatten()
                    .unwrap_or_default();
                p.as_str() >= s.as_str() && p.as_str() < e.as_str()
            })
        })
        .map(|f| u64::try_from(f.size()).unwrap_or_default())
        .sum())
}
