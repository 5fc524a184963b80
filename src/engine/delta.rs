//! Delta Lake operations with delta-rs: one commit per batch, pinned reads, zero-copy clones,
//! vacuum.
//!
//! Invariants:
//! - An incremental batch overwrites exactly the batch's window of the partition column: by
//!   tidemark's own log writer ([`super::commit`]) where it applies, otherwise by delta-rs's
//!   `Overwrite` + `replaceWhere`, which validates every new row against that predicate. Rows
//!   outside the window have already been dropped and counted ([`super::rows`]).
//! - The application transaction of a batch is checked before computing: a commit of the same
//!   id at the same or a newer version means the batch landed already. Writing the `txn` action
//!   in the same commit makes check-and-write atomic (a concurrent duplicate fails with
//!   `ConcurrentTransaction`).
//! - Rows, checksum and audits are computed on the batch's rows in memory before the commit; a
//!   failing blocking audit means no commit. Only UNIQUE_KEY batches (whose checksum is the
//!   merged table's) and batches found already committed are read back.
//! - A whole-table write (unique-key MERGE, FULL, SEED) commits holding the table's writer lock
//!   ([`super::lock`]) and against the table as read after taking it, so writers of one table
//!   take turns instead of failing each other's commits.
//! - A clone hard-links the data files of the source version into the new table's directory and
//!   commits them as the new table's first version: no bytes are copied, and deleting the source
//!   table later never affects the clone (a hard link keeps the file alive).

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use futures::TryStreamExt;
use url::Url;

use super::rows::{plain_type, plain_types, split_window};
use super::session::{self, new_context};
use super::{
    AUDITED, AuditResult, BatchJob, BatchReport, Checksum, LocalEngine, PARTITION_COLUMN,
    TableInfo, WriteMode, failed, partition_key,
};
use super::{commit, lock};
use crate::error::{Diagnostic, Error, Result};

/// The `file://` URL of a local directory.
pub fn url_of(path: &Path) -> Result<Url> {
    Url::from_directory_path(path)
        .map_err(|()| Error::Bug(format!("not an absolute path: {}", path.display())))
}

pub(super) async fn open(path: &Path) -> Result<DeltaTable> {
    std::fs::create_dir_all(path)
        .map_err(|e| Error::from(crate::error::io_error("create", path, &e)))?;
    DeltaTable::try_from_url(url_of(path)?)
        .await
        .map_err(|e| failed(&format!("cannot open the table at {}", path.display()), e))
}

/// A delta-rs error about `what`; commit conflicts and storage errors are transient.
fn failed_delta(what: &str, e: deltalake::DeltaTableError) -> Error {
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
    Error::from(if transient { d.transient() } else { d })
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
async fn ensure_created(
    table: DeltaTable,
    path: &Path,
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
        Err(e) => match open(path).await {
            Ok(t) if t.version().is_some() => Ok(t),
            _ => Err(failed_delta(
                &format!("cannot create {}", path.display()),
                e,
            )),
        },
    }
}

/// Version and partitioning of the table at `path` (`None`: no table there).
pub async fn table_info(path: &Path) -> Result<Option<TableInfo>> {
    if !path.join("_delta_log").exists() {
        return Ok(None);
    }
    let t = open(path).await?;
    let Some(v) = t.version() else {
        return Ok(None);
    };
    let partition_columns = t
        .snapshot()
        .map(|s| s.metadata().partition_columns().to_vec())
        .unwrap_or_default();
    Ok(Some(TableInfo {
        version: v,
        partition_columns,
    }))
}

/// A DataFusion provider of the table at `path`, at `version` (`None`: latest).
pub async fn provider(
    ctx: &SessionContext,
    path: &Path,
    version: Option<u64>,
) -> std::result::Result<Arc<dyn TableProvider>, String> {
    let url = url_of(path).map_err(|e| e.to_string())?;
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
fn window_keys(w: &WriteMode) -> Option<(String, String)> {
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

/// Wait for this writer's turn at a whole-table write of `path` ([`lock`]), then read the
/// table as of now, so the commit is checked against what the previous holder wrote.
async fn whole_table_turn(
    engine: &LocalEngine,
    path: &Path,
) -> Result<(lock::TableLock, DeltaTable)> {
    let held = lock::exclusive(path).await?;
    let table = engine.tables.latest(path).await?.current().await?;
    Ok((held, table))
}

/// Compute and write one batch (see the module invariants).
pub async fn run_batch(engine: &LocalEngine, path: &Path, job: &BatchJob) -> Result<BatchReport> {
    let mut open = engine.tables.latest(path).await?;
    let (app_id, txn_version) = (&job.txn.0, job.txn.1);
    if let Some(landed) = open.landed(app_id).await?
        && landed >= txn_version
    {
        return report_existing(path, job).await;
    }
    let read_version = open.read_to().unwrap_or_default();
    let ctx = session::context(engine, &job.inputs).await?;
    let what = || format!("{} failed", job.model);
    let tag = serde_json::json!({"model": job.model.as_str(), "txn": app_id});
    let props = CommitProperties::default()
        .with_application_transaction(Transaction::new(app_id, txn_version))
        .with_metadata([("tidemark".to_string(), tag.clone())]);
    // Set when the batch was committed by our own log writer ([`commit`]): version, bytes.
    let mut fast: Option<(u64, u64)> = None;
    let mut dropped = 0u64;
    // Rows, checksum and audits of what is written, when known before the commit.
    let mut measured: Option<Checked> = None;
    let mut audits = Vec::new();
    // The table as delta-rs left it after its own write (`None`: written by [`commit`]).
    let written: Option<DeltaTable> = match &job.write {
        WriteMode::TimeRange {
            time_column,
            format,
            unit,
            window,
        } => {
            let ts = match format {
                Some(f) => format!(
                    "to_timestamp(\"{time_column}\", '{}')",
                    f.replace('\'', "''")
                ),
                None => format!("CAST(\"{time_column}\" AS TIMESTAMP)"),
            };
            let sql = format!(
                "SELECT *, {ts} AS __tidemark_ts FROM ({}) AS __tidemark_q",
                job.sql
            );
            let batches = collect(&ctx, &sql, &what).await?;
            let (batches, out) = split_window(batches, *unit, *window)?;
            dropped = out;
            let batches = with_schema(batches, &ctx, &sql, &what, true).await?;
            let checked = check(&ctx, &batches, job).await?;
            if let Some(refused) = refused(read_version, &checked) {
                return Ok(refused);
            }
            measured = Some(checked);
            // A table that does not exist yet is created in a commit of its own first (racing
            // creators agree on one), so that even the first batch goes through the window
            // commit, whose conflict rules let batches of other windows land side by side.
            // Left to delta-rs's write, two first batches of a new table failed each other's
            // commit ("Metadata changed since last commit") on every first apply.
            // Creators take turns on the table's lock and look again once they hold it: left
            // to delta-rs, a losing create is retried as a second metadata commit, which every
            // writer that read only the first then takes for a schema change.
            if open.read_to().is_none() {
                let (_held, table) = whole_table_turn(engine, path).await?;
                let created =
                    ensure_created(table, path, &batches, &[PARTITION_COLUMN], &ctx).await?;
                open.advance(created).await?;
            }
            let keys = window_keys(&job.write).unwrap_or_default();
            let window = commit::Window {
                keys: &keys,
                app_id,
                txn_version,
                info: std::collections::HashMap::from([("tidemark".to_string(), tag.clone())]),
            };
            match commit::overwrite_window(&mut open, path, batches, &window).await? {
                commit::Outcome::Written(version, bytes) => {
                    fast = Some((version, bytes));
                    None
                }
                commit::Outcome::NotHere(batches) => {
                    // The table exists by now (created above if it did not).
                    let table = open.current().await?;
                    Some(
                        table
                            .write(batches)
                            .with_save_mode(SaveMode::Overwrite)
                            .with_replace_where(window_predicate(&keys))
                            .with_partition_columns([PARTITION_COLUMN])
                            .with_session_state(Arc::new(ctx.state()))
                            .with_commit_properties(props)
                            .await
                            .map_err(|e| failed_delta(&what(), e))?,
                    )
                }
            }
        }
        WriteMode::Full | WriteMode::Seed { .. } => {
            let batches = match &job.write {
                WriteMode::Seed { path, columns } => {
                    plain_types(super::seed::read(&ctx, path, columns).await?)?
                }
                _ => {
                    let b = collect(&ctx, &job.sql, &what).await?;
                    with_schema(b, &ctx, &job.sql, &what, false).await?
                }
            };
            let checked = check(&ctx, &batches, job).await?;
            if let Some(refused) = refused(read_version, &checked) {
                return Ok(refused);
            }
            measured = Some(checked);
            let (_lock, table) = whole_table_turn(engine, path).await?;
            let table = ensure_created(table, path, &batches, &[], &ctx).await?;
            Some(
                table
                    .write(batches)
                    .with_save_mode(SaveMode::Overwrite)
                    .with_schema_mode(SchemaMode::Overwrite)
                    .with_session_state(Arc::new(ctx.state()))
                    .with_commit_properties(props)
                    .await
                    .map_err(|e| failed_delta(&what(), e))?,
            )
        }
        WriteMode::UniqueKey { key } => {
            let batches = collect(&ctx, &job.sql, &what).await?;
            let batches = with_schema(batches, &ctx, &job.sql, &what, false).await?;
            // Audits see the batch's source rows; the checksum is the merged table's (below).
            let checked = check(&ctx, &batches, job).await?;
            if let Some(refused) = refused(read_version, &checked) {
                return Ok(refused);
            }
            audits = checked.audits;
            let (_lock, table) = whole_table_turn(engine, path).await?;
            // Created empty first (never absent here: `with_schema` always yields a batch), so
            // even the first batch is a merge, checked against concurrent writers.
            let table = ensure_created(table, path, &batches, &[], &ctx).await?;
            let source = ctx
                .read_batches(batches.clone())
                .map_err(|e| failed(&what(), e))?;
            let columns: Vec<String> = batches
                .first()
                .map(|b| {
                    b.schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect()
                })
                .unwrap_or_default();
            let on = key
                .iter()
                .map(|k| format!("target.\"{k}\" = source.\"{k}\""))
                .collect::<Vec<_>>()
                .join(" AND ");
            let cols = columns.clone();
            let (t, _) = table
                .merge(source, on)
                .with_source_alias("source")
                .with_target_alias("target")
                .with_session_state(Arc::new(ctx.state()))
                .with_commit_properties(props)
                .when_matched_update(|mut u| {
                    for c in &columns {
                        u = u.update(c.as_str(), format!("source.\"{c}\""));
                    }
                    u
                })
                .and_then(|m| {
                    m.when_not_matched_insert(|mut i| {
                        for c in &cols {
                            i = i.set(c.as_str(), format!("source.\"{c}\""));
                        }
                        i
                    })
                })
                .map_err(|e| failed(&what(), e))?
                .await
                .map_err(|e| failed_delta(&what(), e))?;
            Some(t)
        }
    };
    let (version, bytes) = match (written, fast) {
        (Some(table), _) => {
            let version = table.version().unwrap_or_default();
            open.advance(table.clone()).await?;
            (version, bytes_added(&table, version).await?)
        }
        (None, Some(fast)) => fast,
        (None, None) => return Err(Error::Bug("a batch wrote nothing".into())),
    };
    engine.tables.keep(path, &open)?;
    let mut report = match measured {
        Some(m) => BatchReport {
            rows: m.sum.rows,
            dropped: 0,
            bytes,
            checksum: m.sum.hex(),
            table_version: version,
            already_committed: false,
            audits: m.audits,
        },
        None => {
            let mut r = measure(path, job, version).await?;
            r.audits = audits;
            r
        }
    };
    report.dropped = dropped;
    Ok(report)
}

/// Rows, checksum and audit outcomes of a batch's rows, before they are written.
struct Checked {
    sum: Checksum,
    audits: Vec<AuditResult>,
}

/// Measure and audit `batches` (the partition column left out) in memory. Audits run in the
/// batch's own session, so they may also read the model's inputs.
async fn check(ctx: &SessionContext, batches: &[RecordBatch], job: &BatchJob) -> Result<Checked> {
    let mut sum = Checksum::default();
    sum.add(batches, &[PARTITION_COLUMN])?;
    if job.audits.is_empty() {
        return Ok(Checked {
            sum,
            audits: Vec::new(),
        });
    }
    let df = ctx
        .read_batches(batches.to_vec())
        .map_err(|e| Error::Bug(format!("auditing the batch: {e}")))?;
    let has_partition = batches.first().is_some_and(|b| {
        b.schema()
            .fields()
            .iter()
            .any(|f| f.name() == PARTITION_COLUMN)
    });
    let df = if has_partition {
        df.drop_columns(&[PARTITION_COLUMN])
            .map_err(|e| Error::Bug(format!("auditing the batch: {e}")))?
    } else {
        df
    };
    ctx.register_table(AUDITED, df.into_view())
        .map_err(|e| Error::Bug(e.to_string()))?;
    let mut audits = Vec::new();
    for a in &job.audits {
        let out = session::run_sql(ctx, &a.sql).await.map_err(|e| {
            Error::from(Diagnostic::error(format!(
                "audit {} of {} could not run: {}",
                a.name,
                job.model,
                first_message(&e)
            )))
        })?;
        audits.push(AuditResult {
            name: a.name.clone(),
            failures: out.iter().map(|b| b.num_rows() as u64).sum(),
            blocking: a.blocking,
        });
    }
    Ok(Checked { sum, audits })
}

/// The report of a batch whose blocking audit failed: nothing is committed.
fn refused(read_version: u64, checked: &Checked) -> Option<BatchReport> {
    checked
        .audits
        .iter()
        .any(|a| a.blocking && a.failures > 0)
        .then(|| BatchReport {
            rows: checked.sum.rows,
            dropped: 0,
            bytes: 0,
            checksum: checked.sum.hex(),
            table_version: read_version,
            already_committed: false,
            audits: checked.audits.clone(),
        })
}

/// Bytes of the data files the commit `version` added.
async fn bytes_added(table: &DeltaTable, version: u64) -> Result<u64> {
    Ok(super::tables::commit_actions(table, version)
        .await?
        .iter()
        .filter_map(|a| match a {
            deltalake::kernel::Action::Add(add) => u64::try_from(add.size).ok(),
            _ => None,
        })
        .sum())
}

/// The report of a batch whose commit had landed before.
async fn report_existing(path: &Path, job: &BatchJob) -> Result<BatchReport> {
    let version = table_info(path)
        .await?
        .map(|i| i.version)
        .unwrap_or_default();
    let mut r = measure(path, job, version).await?;
    r.already_committed = true;
    Ok(r)
}

/// Rows, checksum and bytes of what `job` wrote, read back at `version` (audits ran before the
/// commit).
async fn measure(path: &Path, job: &BatchJob, version: u64) -> Result<BatchReport> {
    let ctx = new_context();
    let provider = provider(&ctx, path, Some(version))
        .await
        .map_err(|e| failed(&format!("cannot read back {}", job.model), e))?;
    let keys = window_keys(&job.write);
    let filter = keys
        .as_ref()
        .map(|k| format!(" WHERE {}", window_predicate(k)))
        .unwrap_or_default();
    ctx.register_table("__tidemark_raw", provider)
        .map_err(|e| Error::Bug(e.to_string()))?;
    let batches = ctx
        .sql(&format!("SELECT * FROM __tidemark_raw{filter}"))
        .await
        .map_err(|e| failed("reading back", e))?
        .collect()
        .await
        .map_err(|e| failed("reading back", e))?;
    let mut sum = Checksum::default();
    sum.add(&batches, &[PARTITION_COLUMN])?;
    Ok(BatchReport {
        rows: sum.rows,
        dropped: 0,
        bytes: bytes_in(path, version, keys.as_ref()).await?,
        checksum: sum.hex(),
        table_version: version,
        already_committed: false,
        audits: Vec::new(),
    })
}

fn first_message(e: &Error) -> String {
    match e {
        Error::User(d) => d.first().map(Diagnostic::summary).unwrap_or_default(),
        Error::Bug(m) => m.clone(),
    }
}

/// Bytes of the data files of `version` (within the window's partitions, if any).
async fn bytes_in(path: &Path, version: u64, keys: Option<&(String, String)>) -> Result<u64> {
    let table = deltalake::open_table_with_version(url_of(path)?, version)
        .await
        .map_err(|e| failed("reading the table's files", e))?;
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

async fn collect(
    ctx: &SessionContext,
    sql: &str,
    what: &dyn Fn() -> String,
) -> Result<Vec<RecordBatch>> {
    let df = ctx
        .sql_with_options(sql, session::read_only())
        .await
        .map_err(|e| failed(&what(), e))?;
    let batches = df.collect().await.map_err(|e| failed(&what(), e))?;
    plain_types(batches)
}

/// At least one (possibly empty) batch, so that a first write can create the table.
async fn with_schema(
    batches: Vec<RecordBatch>,
    ctx: &SessionContext,
    sql: &str,
    what: &dyn Fn() -> String,
    partitioned: bool,
) -> Result<Vec<RecordBatch>> {
    if !batches.is_empty() {
        return Ok(batches);
    }
    let df = ctx
        .sql_with_options(sql, session::read_only())
        .await
        .map_err(|e| failed(&what(), e))?;
    let mut fields: Vec<Field> = df
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != "__tidemark_ts")
        .map(|f| Field::new(f.name(), plain_type(f.data_type()), true))
        .collect();
    if partitioned {
        fields.push(Field::new(PARTITION_COLUMN, DataType::Utf8, true));
    }
    Ok(vec![RecordBatch::new_empty(Arc::new(Schema::new(fields)))])
}

/// Create `to` as a zero-copy clone of `from` at `version` (see the module invariants).
pub async fn clone_table(from: &Path, version: u64, to: &Path) -> Result<u64> {
    if to.join("_delta_log").exists() {
        // An earlier, interrupted attempt got as far as committing the clone.
        return table_info(to)
            .await
            .map(|i| i.map(|i| i.version).unwrap_or_default());
    }
    let source = deltalake::open_table_with_version(url_of(from)?, version)
        .await
        .map_err(|e| {
            failed(
                &format!("cannot read {} at version {version}", from.display()),
                e,
            )
        })?;
    let snapshot = source
        .snapshot()
        .map_err(|e| failed("cannot read the table state", e))?;
    let schema = snapshot.schema();
    let partition_columns = snapshot.metadata().partition_columns().to_vec();
    let files: Vec<_> = source
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(|e| failed("reading the table's files", e))?;
    let mut actions = Vec::with_capacity(files.len());
    for f in &files {
        let rel = f.path().to_string();
        if rel.contains("://") || rel.starts_with('/') || rel.split('/').any(|p| p == "..") {
            return Err(Error::Bug(format!("unexpected data file path {rel}")));
        }
        let (src, dst) = (from.join(&rel), to.join(&rel));
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::from(crate::error::io_error("create", parent, &e)))?;
        }
        match std::fs::hard_link(&src, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(crate::error::io_error("link", &dst, &e).into()),
        }
        #[allow(deprecated)]
        let add = f.add_action();
        actions.push(deltalake::kernel::Action::Add(add));
    }
    let target = open(to).await?;
    let table = target
        .create()
        .with_columns(schema.fields().cloned())
        .with_partition_columns(partition_columns)
        .with_actions(actions)
        .with_save_mode(SaveMode::ErrorIfExists)
        .await
        .map_err(|e| failed(&format!("cannot create the clone {}", to.display()), e))?;
    Ok(table.version().unwrap_or_default())
}

/// Rows and checksum per partition at `version` (see [`super::Engine::partition_stats`]).
pub async fn partition_stats(
    path: &Path,
    version: u64,
) -> Result<std::collections::BTreeMap<String, Checksum>> {
    let ctx = new_context();
    let provider = provider(&ctx, path, Some(version))
        .await
        .map_err(|e| failed(&format!("cannot read {}", path.display()), e))?;
    let partitioned = provider
        .schema()
        .fields()
        .iter()
        .any(|f| f.name() == PARTITION_COLUMN);
    let df = ctx
        .read_table(provider)
        .map_err(|e| failed("reading the table", e))?;
    let batches = df
        .collect()
        .await
        .map_err(|e| failed("reading the table", e))?;
    if partitioned {
        return Checksum::grouped(&batches, PARTITION_COLUMN);
    }
    let mut c = Checksum::default();
    c.add(&batches, &[])?;
    Ok(std::collections::BTreeMap::from([("all".to_string(), c)]))
}

/// Vacuum files that no version in `keep` needs and that were removed over an hour ago (an apply
/// may be reading them right now); returns how many files are (or would be)
/// deleted.
pub async fn vacuum(path: &Path, keep: &[u64], dry_run: bool) -> Result<u64> {
    if table_info(path).await?.is_none() {
        return Ok(0);
    }
    let table = open(path).await?;
    let (_, metrics) = table
        .vacuum()
        .with_mode(VacuumMode::Lite)
        .with_retention_period(chrono::Duration::hours(1))
        .with_enforce_retention_duration(false)
        .with_keep_versions(keep)
        .with_dry_run(dry_run)
        .await
        .map_err(|e| failed(&format!("cannot vacuum {}", path.display()), e))?;
    Ok(metrics.files_deleted.len() as u64)
}
