//! The batch pipeline: compute a batch's rows, measure and audit them, write them in one Delta
//! commit, and report what was written. One function per write mode.
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
//! - Rows, checksum and audits are computed before the commit; a failing blocking audit means
//!   no commit. Incremental and FULL batches on tidemark's log writer stream: their rows are
//!   counted and hashed as they are written to not-yet-committed files (memory bounded by
//!   [`commit::FLUSH_BYTES`], not by the batch's size), and their audits read those files back
//!   (a refused batch's files are deleted). SEED loads stream the same way. UNIQUE_KEY batches
//!   are held in memory up to a limit, else staged in local files and merged by sorting
//!   ([`super::merge`]); so are the rows of a FULL or SEED model whose columns changed, which
//!   delta-rs then writes from the staged rows.
//!   Only UNIQUE_KEY batches (whose checksum is the merged table's) and batches found already
//!   committed are read back after the commit.
//! - A whole-table write (unique-key MERGE, FULL, SEED) commits holding the table's writer lock
//!   ([`super::lock`]) and against the table as read after taking it, so writers of one table
//!   take turns instead of failing each other's commits. Creating a table takes the same turn.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;

use super::checksum::Running;
use super::delta::{
    bytes_in, ensure_created, failed_delta, provider, window_keys, window_predicate,
};
use super::ops::table_info;
use super::phases::{Clock, Phase};
use super::rows::{empty_batch, plain_types, split_window};
use super::session::{self, new_context};
use super::tables::Open;
use super::{
    AUDITED, AuditResult, BatchJob, BatchReport, Checksum, LocalEngine, Location, PARTITION_COLUMN,
    WriteMode, failed,
};
use super::{commit, lock, merge};
use crate::error::{Diagnostic, Error, Result};
use crate::interval::{Interval, IntervalUnit};

/// Wait for this writer's turn at a whole-table write of `at` ([`lock`]), then read the
/// table as of now, so the commit is checked against what the previous holder wrote.
async fn whole_table_turn(
    engine: &LocalEngine,
    at: &Location,
) -> Result<(lock::TableLock, DeltaTable)> {
    let held = lock::exclusive(at).await?;
    let table = engine.tables.latest(at).await?.current().await?;
    Ok((held, table))
}

/// Create the table at `b.at` with `empty`'s columns in a commit of its own, unless `open`
/// knows it exists, by one writer at a time under the table's lock. Even the first batch then
/// goes through the direct commit ([`commit`]), whose conflict rules let batches of other
/// windows land side by side. Left to delta-rs, a losing create was retried as a second
/// metadata commit, which every writer that had read only the first took for a schema change
/// ("Metadata changed since last commit" on every first apply).
async fn create_first(
    b: &Batch<'_>,
    open: &mut Open,
    empty: &RecordBatch,
    partition_columns: &[&str],
) -> Result<()> {
    if open.read_to().is_some() {
        return Ok(());
    }
    let (_held, table) = whole_table_turn(b.engine, b.at).await?;
    let created = ensure_created(
        table,
        b.at,
        std::slice::from_ref(empty),
        partition_columns,
        &b.ctx,
    )
    .await?;
    open.advance(created).await
}

/// Compute and write one batch (see the module invariants).
pub async fn run(engine: &LocalEngine, at: &Location, job: &BatchJob) -> Result<BatchReport> {
    let mut clock = Clock::start();
    let mut open = engine.tables.latest(at).await?;
    if let Some(landed) = open.landed(&job.txn.0).await?
        && landed >= job.txn.1
    {
        return report_existing(at, job).await;
    }
    clock.lap(Phase::Open);
    let b = Batch {
        engine,
        at,
        job,
        ctx: session::context(engine, &job.inputs).await?,
        read_version: open.read_to().unwrap_or_default(),
    };
    clock.lap(Phase::Inputs);
    let written = match &job.write {
        WriteMode::TimeRange {
            time_column,
            format,
            unit,
            window,
        } => {
            let range = Range {
                time_column,
                format: format.as_deref(),
                unit: *unit,
                window: *window,
            };
            time_range(&b, &mut open, &range).await?
        }
        WriteMode::Full | WriteMode::Seed { .. } => whole(&b, &mut open).await?,
        WriteMode::UniqueKey { key } => merge(&b, key).await?,
    };
    let mut clock = Clock::start();
    let report = match written {
        Written::Refused(report) => Ok(report),
        Written::Committed(c) => finish(&b, open, c).await,
    };
    clock.lap(Phase::Finish);
    super::phases::batch_done();
    report
}

/// One batch on its way: what every write mode needs.
struct Batch<'a> {
    engine: &'a LocalEngine,
    at: &'a Location,
    job: &'a BatchJob,
    /// The batch's session, its inputs registered.
    ctx: SessionContext,
    /// The table version the batch was checked against.
    read_version: u64,
}

impl Batch<'_> {
    /// "`model` failed", the headline of a failed query or write.
    fn what(&self) -> String {
        format!("{} failed", self.job.model)
    }

    /// The `commitInfo` tag: which model and transaction wrote the commit.
    fn tag(&self) -> serde_json::Value {
        serde_json::json!({"model": self.job.model.as_str(), "txn": self.job.txn.0})
    }

    /// What tidemark's own log writer commits besides the rows: the transaction and the tag.
    fn direct_commit<'s>(&'s self, scope: commit::Scope<'s>) -> commit::Window<'s> {
        commit::Window {
            scope,
            app_id: &self.job.txn.0,
            txn_version: self.job.txn.1,
            info: std::collections::HashMap::from([("tidemark".to_string(), self.tag())]),
        }
    }

    /// delta-rs commit properties: the application transaction and the tag.
    fn props(&self) -> CommitProperties {
        CommitProperties::default()
            .with_application_transaction(Transaction::new(&self.job.txn.0, self.job.txn.1))
            .with_metadata([("tidemark".to_string(), self.tag())])
    }
}

/// The time range of an incremental batch.
struct Range<'a> {
    time_column: &'a str,
    format: Option<&'a str>,
    unit: IntervalUnit,
    window: Interval,
}

/// What a write mode did.
enum Written {
    /// A blocking audit failed: nothing was committed.
    Refused(BatchReport),
    /// One commit landed.
    Committed(Committed),
}

/// A landed commit, with what is known of the rows it wrote.
struct Committed {
    how: Commit,
    /// Rows, checksum and audits of what was written, when known before the commit.
    measured: Option<Checked>,
    /// Audit outcomes when the rows are measured after the commit (a merge).
    audits: Vec<AuditResult>,
    /// Rows the query returned outside the batch's window (not written).
    dropped: u64,
}

/// Who committed.
enum Commit {
    /// delta-rs: the table as it left it.
    DeltaRs(DeltaTable),
    /// Our own log writer ([`commit`]): the version and the bytes added.
    Direct { version: u64, bytes: u64 },
}

/// An incremental batch: the window's rows replace the window's partitions. Where tidemark's
/// own log writer applies, the rows stream from the query into the table's files (memory
/// bounded by [`commit::FLUSH_BYTES`], whatever the batch's size), are measured on the way and
/// audited on the written files before the commit; otherwise they are collected and written
/// by delta-rs.
async fn time_range(b: &Batch<'_>, open: &mut Open, r: &Range<'_>) -> Result<Written> {
    let what = || b.what();
    let ts = match r.format {
        Some(f) => format!(
            "to_timestamp(\"{}\", '{}')",
            r.time_column,
            f.replace('\'', "''")
        ),
        None => format!("CAST(\"{}\" AS TIMESTAMP)", r.time_column),
    };
    let sql = format!(
        "SELECT *, {ts} AS __tidemark_ts FROM ({}) AS __tidemark_q",
        b.job.sql
    );
    let (stream, empty) = rows_of(b, &sql, true).await?;
    create_first(b, open, &empty, &[PARTITION_COLUMN]).await?;
    let keys = window_keys(&b.job.write).unwrap_or_default();
    let window = b.direct_commit(commit::Scope::Window(&keys));
    let layout = commit::Layout::Partitioned;
    if let Some(writer) = commit::table_writer(open, b.at, empty.schema_ref(), layout).await? {
        return streamed(b, open, stream, writer, Some(r), &window).await;
    }
    let batches = collect_stream(stream, &what).await?;
    let (batches, dropped) = split_window(plain_types(batches)?, r.unit, r.window)?;
    let batches = if batches.is_empty() {
        vec![empty]
    } else {
        batches
    };
    let checked = check(&b.ctx, &batches, b.job).await?;
    if let Some(report) = refused(b.read_version, &checked) {
        return Ok(Written::Refused(report));
    }
    let table = open.current().await?;
    let table = table
        .write(batches)
        .with_save_mode(SaveMode::Overwrite)
        .with_replace_where(window_predicate(&keys))
        .with_partition_columns([PARTITION_COLUMN])
        .with_session_state(Arc::new(b.ctx.state()))
        .with_commit_properties(b.props())
        .await
        .map_err(|e| failed_delta(&what(), e))?;
    Ok(Written::Committed(Committed {
        how: Commit::DeltaRs(table),
        measured: Some(checked),
        audits: Vec::new(),
        dropped,
    }))
}

/// The streaming write of [`time_range`] and [`whole`]: each record batch of the query is
/// split to the window (`window`; none for a whole-table replace), added to the checksum and
/// written as it comes; the audits read the written files; a refused batch's files are deleted
/// (they were never committed). A whole-table replace commits under the table's lock, against
/// the table as read after taking it.
async fn streamed(
    b: &Batch<'_>,
    open: &mut Open,
    mut stream: SendableRecordBatchStream,
    mut writer: commit::TableWriter,
    window: Option<&Range<'_>>,
    commit: &commit::Window<'_>,
) -> Result<Written> {
    use futures::StreamExt;
    let what = || b.what();
    let mut dropped = 0;
    let mut clock = Clock::start();
    let wrote: Result<()> = async {
        while let Some(next) = stream.next().await {
            let batch = plain_types(vec![next.map_err(|e| failed(&what(), e))?])?;
            let rows = match window {
                Some(r) => {
                    let (rows, outside) = split_window(batch, r.unit, r.window)?;
                    dropped += outside;
                    rows
                }
                None => batch,
            };
            for rows in rows {
                writer.write(rows).await?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = wrote {
        // Nothing is committed; the files finished so far are deleted.
        commit::discard(b.at, &writer.abort()).await;
        return Err(e);
    }
    clock.lap(Phase::Write);
    let schema = writer.schema();
    let commit::Finished {
        adds,
        sum,
        partitions,
    } = writer.finish().await?;
    clock.lap(Phase::Flush);
    let audits = if b.job.audits.is_empty() {
        Vec::new()
    } else {
        audit(&b.ctx, written_rows(b, &adds, &schema).await?, b.job).await?
    };
    clock.lap(Phase::Audits);
    let checked = Checked {
        sum,
        partitions,
        audits,
    };
    if let Some(report) = refused(b.read_version, &checked) {
        commit::discard(b.at, &adds).await;
        return Ok(Written::Refused(report));
    }
    // A failed commit leaves its files to `vacuum`: whether a commit whose put failed landed
    // is not always known (a timeout of the store), and deleting a committed file loses data.
    let version = match commit.scope {
        commit::Scope::Window(_) => commit::commit_files(open, b.at, &adds, commit).await?,
        commit::Scope::Table => replace_table(b, open, &adds, &schema, commit).await?,
    };
    clock.lap(Phase::Commit);
    let bytes = adds.iter().filter_map(|a| u64::try_from(a.size).ok()).sum();
    Ok(Written::Committed(Committed {
        how: Commit::Direct { version, bytes },
        measured: Some(checked),
        audits: Vec::new(),
        dropped,
    }))
}

/// Commit `adds` as the whole table's new content: in this writer's turn at the table's lock
/// ([`lock`]), against the table as read after taking it, and only if its columns are still
/// the ones the files were written with (else the files are deleted and the error is
/// transient: the retry recomputes).
async fn replace_table(
    b: &Batch<'_>,
    open: &mut Open,
    adds: &[deltalake::kernel::Add],
    schema: &datafusion::arrow::datatypes::SchemaRef,
    commit: &commit::Window<'_>,
) -> Result<u64> {
    let _held = lock::exclusive(b.at).await?;
    *open = b.engine.tables.latest(b.at).await?;
    if !commit::applies(open, b.at, schema, commit::Layout::Unpartitioned).await? {
        // Not committed, and never will be: the retry writes files of the new columns.
        commit::discard(b.at, adds).await;
        return Err(Error::transient(Diagnostic::error(format!(
            "`{}`: another writer changed the table's columns while {} was computed",
            b.at, b.job.model
        ))));
    }
    commit::commit_files(open, b.at, adds, commit).await
}

/// The rows of the files `adds` wrote into the table at `b.at` (no commit references them
/// yet), for the audits (which leave out the partition column): read back as Parquet, or no
/// rows of the files' columns (`schema`) when nothing was written.
async fn written_rows(
    b: &Batch<'_>,
    adds: &[deltalake::kernel::Add],
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<datafusion::dataframe::DataFrame> {
    let what = || format!("reading back the files of {}", b.job.model);
    if adds.is_empty() {
        // Nothing written: audits see no rows, with the columns the files would have had.
        return b
            .ctx
            .read_batch(RecordBatch::new_empty(Arc::clone(schema)))
            .map_err(|e| Error::Bug(format!("auditing the batch: {e}")));
    }
    if b.at.local_path().is_none() {
        let (store, _) = super::location::store_of(b.at)?;
        b.ctx.register_object_store(&b.at.store_url(), store);
    }
    // `add.path` is the object's name as written (a partition value's escapes, such as `%3A`,
    // are literal characters of it): a local file's path, or a URL with `%` escaped.
    let urls: Vec<String> = match b.at.local_path() {
        Some(dir) => adds
            .iter()
            .map(|a| dir.join(&a.path).to_string_lossy().into_owned())
            .collect(),
        None => {
            let base = b.at.url().as_str().trim_end_matches('/').to_string();
            adds.iter()
                .map(|a| format!("{base}/{}", a.path.replace('%', "%25")))
                .collect()
        }
    };
    b.ctx
        .read_parquet(urls, datafusion::prelude::ParquetReadOptions::default())
        .await
        .map_err(|e| failed(&what(), e))
}

/// A FULL or SEED batch: its rows replace the whole table. The rows (the model's query, or a
/// seed's CSV file, read as it is parsed) stream into the table's files as they come
/// ([`streamed`]) when the table exists (it is created empty first) with their columns;
/// otherwise (its columns changed) they are staged ([`merge::stage`]: in memory up to a limit,
/// else in local files), audited there, and written from there by delta-rs, the table's
/// schema replaced.
async fn whole(b: &Batch<'_>, open: &mut Open) -> Result<Written> {
    let what = || b.what();
    let (stream, empty) = match &b.job.write {
        WriteMode::Seed { path, columns } => {
            executed(b, super::seed::read(&b.ctx, path, columns).await?, false).await?
        }
        _ => rows_of(b, &b.job.sql, false).await?,
    };
    create_first(b, open, &empty, &[]).await?;
    let layout = commit::Layout::Unpartitioned;
    if let Some(writer) = commit::table_writer(open, b.at, empty.schema_ref(), layout).await? {
        let replace = b.direct_commit(commit::Scope::Table);
        return streamed(b, open, stream, writer, None, &replace).await;
    }
    // The columns changed: delta-rs writes the rows and replaces the schema. They are staged
    // first (in memory up to the merge limit, else in local files), audited there, and
    // streamed from there into the table.
    let staged = merge::stage(&b.job.model, stream, empty.schema(), b.engine.hashed_source).await?;
    let source = staged.read(&b.ctx, &what).await?;
    let checked = Checked {
        sum: staged.sum,
        partitions: std::collections::BTreeMap::new(),
        audits: audit(&b.ctx, source.clone(), b.job).await?,
    };
    if let Some(report) = refused(b.read_version, &checked) {
        return Ok(Written::Refused(report));
    }
    let (_lock, table) = whole_table_turn(b.engine, b.at).await?;
    let table = ensure_created(table, b.at, &[empty], &[], &b.ctx).await?;
    let table = table
        .write(Vec::new())
        .with_input_plan(source.logical_plan().clone())
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(SchemaMode::Overwrite)
        .with_session_state(Arc::new(b.ctx.state()))
        .with_commit_properties(b.props())
        .await
        .map_err(|e| failed_delta(&what(), e))?;
    Ok(Written::Committed(Committed {
        how: Commit::DeltaRs(table),
        measured: Some(checked),
        audits: Vec::new(),
        dropped: 0,
    }))
}

/// An INCREMENTAL_BY_UNIQUE_KEY batch: one MERGE on `key`. The rows are staged
/// ([`merge::stage`]: in memory up to a limit, else in local files) and audited there; the
/// MERGE reads them in the session [`merge::session_for`] gives for their size; the checksum
/// is the merged table's, read back after the commit.
async fn merge(b: &Batch<'_>, key: &[String]) -> Result<Written> {
    let what = || b.what();
    let (stream, empty) = rows_of(b, &b.job.sql, false).await?;
    let staged = merge::stage(&b.job.model, stream, empty.schema(), b.engine.hashed_source).await?;
    let source = staged.read(&b.ctx, &what).await?;
    let audits = audit(&b.ctx, source.clone(), b.job).await?;
    let checked = Checked {
        sum: staged.sum,
        partitions: std::collections::BTreeMap::new(),
        audits,
    };
    if let Some(report) = refused(b.read_version, &checked) {
        return Ok(Written::Refused(report));
    }
    let (_lock, table) = whole_table_turn(b.engine, b.at).await?;
    // Created empty first, so even the first batch is a merge, checked against concurrent
    // writers.
    let table = ensure_created(table, b.at, std::slice::from_ref(&empty), &[], &b.ctx).await?;
    let columns: Vec<String> = empty
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let on = key
        .iter()
        .map(|k| format!("target.\"{k}\" = source.\"{k}\""))
        .collect::<Vec<_>>()
        .join(" AND ");
    let (table, _) = table
        .merge(source, on)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_session_state(merge::session_for(
            &b.ctx,
            staged.bytes,
            b.engine.hashed_source,
        ))
        .with_commit_properties(b.props())
        .when_matched_update(|mut u| {
            for c in &columns {
                u = u.update(c.as_str(), format!("source.\"{c}\""));
            }
            u
        })
        .and_then(|m| {
            m.when_not_matched_insert(|mut i| {
                for c in &columns {
                    i = i.set(c.as_str(), format!("source.\"{c}\""));
                }
                i
            })
        })
        .map_err(|e| failed(&what(), e))?
        .await
        .map_err(|e| failed_delta(&what(), e))?;
    // The staged files were read by the MERGE; they go now.
    drop(staged);
    Ok(Written::Committed(Committed {
        how: Commit::DeltaRs(table),
        measured: None,
        audits: checked.audits,
        dropped: 0,
    }))
}

/// Follow the commit in the open table and report what it wrote.
async fn finish(b: &Batch<'_>, mut open: Open, c: Committed) -> Result<BatchReport> {
    let (version, bytes) = match c.how {
        Commit::DeltaRs(table) => {
            let version = table.version().unwrap_or_default();
            let bytes = bytes_added(&table, version).await?;
            open.advance(table).await?;
            (version, bytes)
        }
        Commit::Direct { version, bytes } => (version, bytes),
    };
    b.engine.tables.keep(b.at, &open)?;
    let mut report = match c.measured {
        Some(m) => BatchReport {
            rows: m.sum.rows,
            dropped: 0,
            bytes,
            checksum: m.sum.hex(),
            table_version: version,
            already_committed: false,
            audits: m.audits,
            partitions: window_keys(&b.job.write).map(|_| m.partitions),
        },
        None => {
            let mut r = measure(b.at, b.job, version).await?;
            r.audits = c.audits;
            r
        }
    };
    report.dropped = c.dropped;
    Ok(report)
}

/// Rows, checksum and audit outcomes of a batch's rows, before they are written.
struct Checked {
    sum: Checksum,
    /// Per partition (empty for an unpartitioned table).
    partitions: std::collections::BTreeMap<String, Checksum>,
    audits: Vec<AuditResult>,
}

/// Measure and audit `batches` (the partition column left out) in memory. Audits run in the
/// batch's own session, so they may also read the model's inputs.
async fn check(ctx: &SessionContext, batches: &[RecordBatch], job: &BatchJob) -> Result<Checked> {
    let mut running = Running::new(&[], Some(PARTITION_COLUMN));
    for b in batches {
        running.add(b)?;
    }
    let (sum, partitions) = (running.total, running.groups);
    if job.audits.is_empty() {
        return Ok(Checked {
            sum,
            partitions,
            audits: Vec::new(),
        });
    }
    let df = ctx
        .read_batches(batches.to_vec())
        .map_err(|e| Error::Bug(format!("auditing the batch: {e}")))?;
    let audits = audit(ctx, df, job).await?;
    Ok(Checked {
        sum,
        partitions,
        audits,
    })
}

/// Run `job`'s audits on `rows` (as `@this_model`; a partition column is left out).
async fn audit(
    ctx: &SessionContext,
    rows: datafusion::dataframe::DataFrame,
    job: &BatchJob,
) -> Result<Vec<AuditResult>> {
    if job.audits.is_empty() {
        return Ok(Vec::new());
    }
    let has_partition = rows
        .schema()
        .fields()
        .iter()
        .any(|f| f.name() == PARTITION_COLUMN);
    let rows = if has_partition {
        rows.drop_columns(&[PARTITION_COLUMN])
            .map_err(|e| Error::Bug(format!("auditing the batch: {e}")))?
    } else {
        rows
    };
    ctx.register_table(AUDITED, rows.into_view())
        .map_err(|e| Error::Bug(e.to_string()))?;
    let mut audits = Vec::new();
    for a in &job.audits {
        let out = session::run_sql(ctx, &a.sql).await.map_err(|e| {
            Error::from(Diagnostic::error(format!(
                "audit {} of {} could not run: {}",
                a.name,
                job.model,
                e.summary()
            )))
        })?;
        audits.push(AuditResult {
            name: a.name.clone(),
            failures: out.iter().map(|b| b.num_rows() as u64).sum(),
            blocking: a.blocking,
        });
    }
    Ok(audits)
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
            partitions: None,
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
pub(super) async fn report_existing(at: &Location, job: &BatchJob) -> Result<BatchReport> {
    let version = table_info(at).await?.map(|i| i.version).unwrap_or_default();
    let mut r = measure(at, job, version).await?;
    r.already_committed = true;
    Ok(r)
}

/// Rows, checksum and bytes of what `job` wrote, read back at `version` (audits ran before the
/// commit).
async fn measure(at: &Location, job: &BatchJob, version: u64) -> Result<BatchReport> {
    let ctx = new_context();
    let provider = provider(&ctx, at, Some(version))
        .await
        .map_err(|e| failed(&format!("cannot read back {}", job.model), e))?;
    let keys = window_keys(&job.write);
    let filter = keys
        .as_ref()
        .map(|k| format!(" WHERE {}", window_predicate(k)))
        .unwrap_or_default();
    ctx.register_table("__tidemark_raw", provider)
        .map_err(|e| Error::Bug(e.to_string()))?;
    let mut stream = ctx
        .sql(&format!("SELECT * FROM __tidemark_raw{filter}"))
        .await
        .map_err(|e| failed("reading back", e))?
        .execute_stream()
        .await
        .map_err(|e| failed("reading back", e))?;
    let mut running = Running::new(&[], Some(PARTITION_COLUMN));
    while let Some(b) = futures::StreamExt::next(&mut stream).await {
        running.add(&b.map_err(|e| failed("reading back", e))?)?;
    }
    let sum = running.total;
    let windowed = keys.is_some();
    Ok(BatchReport {
        rows: sum.rows,
        dropped: 0,
        bytes: bytes_in(at, version, keys.as_ref()).await?,
        checksum: sum.hex(),
        table_version: version,
        already_committed: false,
        audits: Vec::new(),
        partitions: windowed.then_some(running.groups),
    })
}

/// The rows of `sql` as they are computed, and an empty batch of their columns in their plain
/// Delta types (with the partition column when `partitioned`). The columns are the physical
/// plan's, which the rows carry: the logical plan's can differ (the precision of a SUM of
/// decimals), and a table created from those would not take the rows.
async fn rows_of(
    b: &Batch<'_>,
    sql: &str,
    partitioned: bool,
) -> Result<(SendableRecordBatchStream, RecordBatch)> {
    let mut clock = Clock::start();
    let df = b
        .ctx
        .sql_with_options(sql, session::read_only())
        .await
        .map_err(|e| failed(&b.what(), e))?;
    clock.lap(Phase::LogicalPlan);
    let rows = executed(b, df, partitioned).await?;
    clock.lap(Phase::PhysicalPlan);
    Ok(rows)
}

/// The rows of `df` as they are computed, and an empty batch of their columns (see
/// [`rows_of`]).
async fn executed(
    b: &Batch<'_>,
    df: datafusion::dataframe::DataFrame,
    partitioned: bool,
) -> Result<(SendableRecordBatchStream, RecordBatch)> {
    let stream = df
        .execute_stream()
        .await
        .map_err(|e| failed(&b.what(), e))?;
    let empty = empty_batch(&stream.schema(), partitioned);
    Ok((stream, empty))
}

/// Every record batch of `stream`.
async fn collect_stream(
    stream: SendableRecordBatchStream,
    what: &dyn Fn() -> String,
) -> Result<Vec<RecordBatch>> {
    datafusion::physical_plan::common::collect(stream)
        .await
        .map_err(|e| failed(&what(), e))
}
