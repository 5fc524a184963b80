//! Window overwrites of time-partitioned tables, and whole-table replaces of unpartitioned
//! ones, committed to the Delta log directly.
//!
//! delta-rs 1.1 re-reads a table's whole file list for every write (its `replaceWhere` planner)
//! and again after every commit (its post-commit snapshot update), so a batch cost grew with
//! the table: 146 ms a partition on average over 1,095 daily partitions. This path keeps the
//! file list of each open table itself ([`super::tables::Files`], followed commit by commit)
//! and writes a batch as: Parquet files through delta-rs's `RecordBatchWriter` (statistics
//! included; streamed by a [`TableWriter`], its open files finished every [`FLUSH_BYTES`] of
//! rows), then one commit entry of `commitInfo`, `txn`, a `remove` for every active file
//! of the window's partitions (of the whole table, for a FULL model's replace) and an `add`
//! for every new file, put into `_delta_log` with put-if-absent. Streaming is also what bounds a
//! batch's memory: rows go to files as they are computed, never collected.
//!
//! Invariants:
//! - It is taken only for a table of the expected [`Layout`] (partitioned by exactly
//!   [`PARTITION_COLUMN`], every file with a value; or not partitioned), with writer protocol
//!   ≤ 2, not append-only, whose file list is known up to a version, and for rows whose
//!   columns are the table's (same names and order, types equal up to the plain Delta form);
//!   anything else (a FULL model whose columns changed, say) goes through delta-rs's own write.
//! - The conflict rules are Delta's for a partition-window overwrite: a commit that landed
//!   since our read conflicts when it adds or removes a file in one of our partitions (or a
//!   file without a partition value), commits our application transaction, or changes the
//!   table's metadata or protocol. A conflict is transient: the batch is retried from a fresh
//!   read, where the transaction check finds work already done. Any other commit is read into
//!   the file list and the entry is put at the next version.
//! - The Parquet files of a batch whose commit conflicted are referenced by no commit; readers
//!   never see them and `vacuum` removes them (as with delta-rs's own failed writes). Files of
//!   a batch refused before any commit was tried are deleted at once ([`discard`]); those of a
//!   failed commit never are, since whether a put that failed landed is not always known.
//! - Every `checkpointInterval`-th version (10 for the tables tidemark creates) is checkpointed by whoever wrote
//!   it, as delta-rs does, so readers' log replay stays short. A failed checkpoint does not
//!   fail the batch (the commit has landed; the next interval retries).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use deltalake::kernel::transaction::TransactionError;
use deltalake::kernel::{Action, Add, CommitInfo, Remove, Transaction};
use deltalake::logstore::CommitOrBytes;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};

use super::checksum::{CHECKSUM_TAG, Checksum, ROWS_TAG, Running};
use super::tables::{Open, commit_actions, partition_of};
use super::{Location, PARTITION_COLUMN, failed};
use crate::error::{Diagnostic, Error, Result};

/// What a commit replaces.
#[derive(Clone, Copy)]
pub enum Scope<'a> {
    /// The partitions whose values are in `[lo, hi)`.
    Window(&'a (String, String)),
    /// Every file of the table (an unpartitioned table's whole-table replace).
    Table,
}

/// What a window overwrite commits besides its rows.
pub struct Window<'a> {
    /// What the commit replaces.
    pub scope: Scope<'a>,
    /// The batch's application transaction.
    pub app_id: &'a str,
    /// Its version.
    pub txn_version: i64,
    /// Extra `commitInfo` entries.
    pub info: HashMap<String, serde_json::Value>,
}

/// Rows (in Arrow bytes) a [`TableWriter`] lets its open files take in before it finishes
/// them: the bound on a batch's buffered output, whatever the batch's size (a larger batch gets
/// more files per partition, not more memory). Each open Parquet file holds its row group's
/// pages until finished, so what bounds memory is the rows written since the last flush, not
/// the encoded bytes.
pub const FLUSH_BYTES: usize = 64 * 1024 * 1024;

/// Rows streamed into Parquet files of the table's form as they are computed: delta-rs's
/// `RecordBatchWriter` (statistics included) streams each file to storage, and the open files
/// are finished whenever [`FLUSH_BYTES`] are buffered. The files are referenced by no commit
/// until [`commit_files`] puts them in one.
pub struct TableWriter {
    writer: RecordBatchWriter,
    schema: SchemaRef,
    adds: Vec<Add>,
    what: String,
    /// Arrow bytes written since the last flush.
    buffered: usize,
    /// Checksums of the rows written since the last flush (by partition value).
    since_flush: Running,
    /// Checksums of the rows of the files finished so far: all, and by partition value.
    sum: Checksum,
    partitions: BTreeMap<String, Checksum>,
}

/// What a [`TableWriter`] wrote: its files, and the checksums of their rows (the partition
/// column left out), in all and by partition value (empty for an unpartitioned table).
pub struct Finished {
    pub adds: Vec<Add>,
    pub sum: Checksum,
    pub partitions: BTreeMap<String, Checksum>,
}

/// The layout of the table a [`TableWriter`] writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    /// Partitioned by exactly [`PARTITION_COLUMN`], every file with a value (a time-range
    /// model's table; its commits replace a [`Scope::Window`]).
    Partitioned,
    /// Not partitioned (a FULL model's table; its commits replace the whole [`Scope::Table`]).
    Unpartitioned,
}

/// A [`TableWriter`] for `open`'s table and rows of schema `rows`, when this path applies to
/// the table (see the module invariants); `None`: write through delta-rs.
pub async fn table_writer(
    open: &mut Open,
    at: &Location,
    rows: &SchemaRef,
    layout: Layout,
) -> Result<Option<TableWriter>> {
    let Some(writer) = direct(open, at, rows, layout).await? else {
        return Ok(None);
    };
    let schema = writer.arrow_schema();
    Ok(Some(TableWriter {
        writer,
        schema,
        adds: Vec::new(),
        what: format!("cannot write `{at}`"),
        buffered: 0,
        since_flush: Running::new(&[], Some(PARTITION_COLUMN)),
        sum: Checksum::default(),
        partitions: BTreeMap::new(),
    }))
}

/// Whether this path still applies to `open`'s table for rows of schema `rows` (checked again
/// under the table's lock before a whole-table commit: a writer that held it meanwhile may
/// have changed the table's columns).
pub async fn applies(
    open: &mut Open,
    at: &Location,
    rows: &SchemaRef,
    layout: Layout,
) -> Result<bool> {
    Ok(direct(open, at, rows, layout).await?.is_some())
}

/// delta-rs's Parquet writer for `open`'s table, when this path applies (see
/// [`table_writer`]).
async fn direct(
    open: &mut Open,
    at: &Location,
    rows: &SchemaRef,
    layout: Layout,
) -> Result<Option<RecordBatchWriter>> {
    if open.read_to().is_none()
        || (layout == Layout::Partitioned && open.files().has_unpartitioned())
    {
        return Ok(None);
    }
    let table = open.shaped().await?;
    let state = table
        .snapshot()
        .map_err(|e| failed("cannot read the table state", e))?;
    let (metadata, protocol) = (state.metadata(), state.protocol());
    let append_only = metadata
        .configuration()
        .get("delta.appendOnly")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let partitioning = metadata.partition_columns();
    let laid_out = match layout {
        Layout::Partitioned => partitioning.len() == 1 && partitioning[0] == PARTITION_COLUMN,
        Layout::Unpartitioned => partitioning.is_empty(),
    };
    if !laid_out || protocol.min_writer_version() > 2 || append_only {
        return Ok(None);
    }
    let writer = RecordBatchWriter::for_table(&table)
        .map_err(|e| failed(&format!("cannot write `{at}`"), e))?
        .with_writer_properties(writer_properties());
    Ok(fits(rows, &writer.arrow_schema()).then_some(writer))
}

/// Parquet writer properties of a window's files: delta-rs's (Snappy) with a 64 KiB
/// dictionary page limit instead of 1 MiB, so that a high-cardinality column falls back to
/// plain encoding after a few thousand values instead of interning most of a partition's (the
/// dictionary interner was a tenth of a backfill's CPU); low-cardinality columns keep their
/// dictionary.
fn writer_properties() -> datafusion::parquet::file::properties::WriterProperties {
    datafusion::parquet::file::properties::WriterProperties::builder()
        .set_created_by(format!("tidemark {}", env!("CARGO_PKG_VERSION")))
        .set_compression(datafusion::parquet::basic::Compression::SNAPPY)
        .set_dictionary_page_size_limit(64 * 1024)
        .build()
}

impl TableWriter {
    /// The table's columns, as the files are written.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Write `b` (its columns the table's, see [`fits`]).
    pub async fn write(&mut self, b: RecordBatch) -> Result<()> {
        if !fits(b.schema_ref(), &self.schema) {
            return Err(Error::Bug(format!(
                "{}: a record batch of another schema than the query's",
                self.what
            )));
        }
        self.buffered += super::rows::bytes_of(&b);
        self.since_flush.add(&b)?;
        self.writer
            .write(conform(b, &self.schema)?)
            .await
            .map_err(|e| failed(&self.what, e))?;
        if self.buffered >= FLUSH_BYTES || self.writer.buffer_len() >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Finish the open files, keeping what they became, each tagged with its rows' checksum.
    async fn flush(&mut self) -> Result<()> {
        self.buffered = 0;
        let mut adds = self
            .writer
            .flush()
            .await
            .map_err(|e| failed(&self.what, e))?;
        let sum = std::mem::take(&mut self.since_flush.total);
        let partitions = std::mem::take(&mut self.since_flush.groups);
        tag_files(&mut adds, &sum, &partitions);
        self.sum.merge(&sum);
        for (k, c) in partitions {
            self.partitions.entry(k).or_default().merge(&c);
        }
        self.adds.extend(adds);
        Ok(())
    }

    /// Give up: the open files are abandoned (delta-rs aborts their uploads); the files
    /// finished earlier are returned, for the caller to delete.
    pub fn abort(mut self) -> Vec<Add> {
        self.writer.reset();
        self.adds
    }

    /// Finish the open files: every file written, to commit, and their rows' checksums.
    pub async fn finish(mut self) -> Result<Finished> {
        self.flush().await?;
        Ok(Finished {
            adds: self.adds,
            sum: self.sum,
            partitions: self.partitions,
        })
    }
}

/// Tag each of `adds` (the files of one flush) with the rows and checksum of the rows written
/// to it: known when it is the flush's only file of its partition value (`partitions`), or of
/// the table (`sum`, unpartitioned). A file left untagged is read when its checksum is needed.
fn tag_files(adds: &mut [Add], sum: &Checksum, partitions: &BTreeMap<String, Checksum>) {
    let mut per_key: HashMap<Option<String>, usize> = HashMap::new();
    for a in adds.iter() {
        *per_key
            .entry(partition_of(&a.partition_values))
            .or_default() += 1;
    }
    let only = adds.len() == 1;
    for a in adds.iter_mut() {
        let key = partition_of(&a.partition_values);
        let measured = match &key {
            Some(k) if per_key.get(&key) == Some(&1) => partitions.get(k),
            None if only && partitions.is_empty() => Some(sum),
            _ => None,
        };
        if let Some(c) = measured {
            let tags = a.tags.get_or_insert_with(HashMap::new);
            tags.insert(ROWS_TAG.to_string(), Some(c.rows.to_string()));
            tags.insert(CHECKSUM_TAG.to_string(), Some(c.hex()));
        }
    }
}

/// Delete the files of a batch that was not committed (best effort: unreferenced files are
/// invisible to readers and `vacuum` removes them anyway).
pub async fn discard(at: &Location, adds: &[deltalake::kernel::Add]) {
    use object_store::ObjectStoreExt;
    let Ok((store, root)) = super::location::store_of(at) else {
        return;
    };
    for a in adds {
        if let Ok(p) = object_store::path::Path::parse(format!("{root}/{}", a.path)) {
            let _ = store.delete(&p).await;
        }
        // A local partition directory left empty goes too (it fails while another file is in it).
        if let Some(dir) = at.local_path()
            && let Some(parent) = dir.join(&a.path).parent()
            && parent != dir
        {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Commit `adds` (files already in the table's directory) as the replacement of `w`'s scope,
/// for an engine that wrote them (see the module invariants; the table must exist and be
/// followed up to a version). Returns the version written.
pub async fn commit_files(
    open: &mut Open,
    at: &Location,
    adds: &[Add],
    w: &Window<'_>,
) -> Result<u64> {
    let table = open.shaped().await?;
    let state = table
        .snapshot()
        .map_err(|e| failed("cannot read the table state", e))?;
    let interval = state
        .table_config()
        .checkpoint_interval
        .map_or(100, |n| n.get());
    put(open, &table, at, adds, w, interval).await
}

/// Put one commit entry replacing `w`'s scope with `adds`, at the first free version after
/// the open table's (rebasing over commits that do not conflict), and checkpoint on the
/// interval.
async fn put(
    open: &mut Open,
    table: &deltalake::DeltaTable,
    at: &Location,
    adds: &[Add],
    w: &Window<'_>,
    interval: u64,
) -> Result<u64> {
    let Some(read_to) = open.read_to() else {
        return Err(Error::Bug(format!("committing to `{at}` before it exists")));
    };
    let what = || format!("cannot write `{at}`");
    let now = chrono::Utc::now().timestamp_millis();
    let predicate = match w.scope {
        Scope::Window(keys) => super::delta::window_predicate(keys),
        Scope::Table => String::new(),
    };
    let mut version = read_to + 1;
    loop {
        let mut actions = vec![
            Action::CommitInfo(commit_info(now, &predicate, w.scope, version - 1, &w.info)),
            Action::Txn(Transaction::new(w.app_id, w.txn_version)),
        ];
        let removes: Vec<Action> = match w.scope {
            Scope::Window(keys) => open
                .files()
                .in_range(&keys.0, &keys.1)
                .map(|(key, file, size)| Action::Remove(remove(Some(key), file, size, now)))
                .collect(),
            Scope::Table => open
                .files()
                .all()
                .map(|(key, file, size)| Action::Remove(remove(key, file, size, now)))
                .collect(),
        };
        actions.extend(removes);
        actions.extend(adds.iter().cloned().map(Action::Add));
        let entry = log_entry(&actions)?;
        let put = table
            .log_store()
            .write_commit_entry(
                version,
                CommitOrBytes::LogBytes(entry),
                uuid::Uuid::new_v4(),
            )
            .await;
        match put {
            Ok(()) => {
                open.read(version, &actions);
                break;
            }
            Err(TransactionError::VersionAlreadyExists(_)) => {
                let theirs = commit_actions(table, version).await?;
                if let Some(why) = conflict(&theirs, w) {
                    return Err(Error::transient(Diagnostic::error(format!(
                        "`{at}`: commit {version} by another writer {why}"
                    ))));
                }
                open.read(version, &theirs);
                version += 1;
            }
            Err(e @ TransactionError::ObjectStore { .. }) => {
                return Err(Error::transient(Diagnostic::error(what()).caused_by(e)));
            }
            Err(e) => return Err(failed(&what(), e)),
        }
    }
    if version % interval == 0 {
        let started = std::time::Instant::now();
        // Best effort (see the module invariants).
        let _ = deltalake::checkpoints::create_checkpoint_from_table_url_and_cleanup(
            table.table_url().clone(),
            version,
            None,
            None,
        )
        .await;
        super::phases::Phase::Checkpoint.add(started);
    }
    Ok(version)
}

/// Why `theirs` (a commit that landed since our read) conflicts with overwriting `w`.
fn conflict(theirs: &[Action], w: &Window<'_>) -> Option<&'static str> {
    let ours = |values: Option<&HashMap<String, Option<String>>>| match (
        w.scope,
        values.map(partition_of),
    ) {
        (Scope::Window(keys), Some(Some(k))) => {
            (keys.0.as_str()..keys.1.as_str()).contains(&k.as_str())
        }
        _ => true,
    };
    theirs.iter().find_map(|a| match a {
        Action::Txn(t) if t.app_id == w.app_id => Some("committed this batch's transaction"),
        Action::Metadata(_) | Action::Protocol(_) => Some("changed the table's schema or protocol"),
        Action::Add(add) if ours(Some(&add.partition_values)) => {
            Some("wrote to this batch's partitions")
        }
        Action::Remove(r) if ours(r.partition_values.as_ref()) => {
            Some("removed files of this batch's partitions")
        }
        _ => None,
    })
}

fn commit_info(
    now: i64,
    predicate: &str,
    scope: Scope<'_>,
    read_version: u64,
    info: &HashMap<String, serde_json::Value>,
) -> CommitInfo {
    CommitInfo {
        timestamp: Some(now),
        operation: Some("WRITE".to_string()),
        operation_parameters: Some(HashMap::from([
            ("mode".to_string(), serde_json::json!("Overwrite")),
            (
                "partitionBy".to_string(),
                serde_json::json!(match scope {
                    Scope::Window(_) => format!("[\"{PARTITION_COLUMN}\"]"),
                    Scope::Table => "[]".to_string(),
                }),
            ),
            ("predicate".to_string(), serde_json::json!(predicate)),
        ])),
        read_version: Some(read_version),
        is_blind_append: Some(false),
        engine_info: Some(format!("tidemark:{}", env!("CARGO_PKG_VERSION"))),
        info: info.clone(),
        ..Default::default()
    }
}

fn remove(key: Option<&str>, path: &str, size: i64, now: i64) -> Remove {
    Remove {
        path: path.to_string(),
        data_change: true,
        deletion_timestamp: Some(now),
        extended_file_metadata: Some(true),
        size: Some(size),
        partition_values: Some(match key {
            Some(key) => HashMap::from([(PARTITION_COLUMN.to_string(), Some(key.to_string()))]),
            None => HashMap::new(),
        }),
        ..Default::default()
    }
}

/// The commit entry: one JSON action per line.
fn log_entry(actions: &[Action]) -> Result<Bytes> {
    let mut out = Vec::new();
    for a in actions {
        serde_json::to_writer(&mut out, a)
            .map_err(|e| Error::Bug(format!("cannot serialise a Delta action: {e}")))?;
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

/// Whether rows of schema `have` can be written as the table's `want`: the same column names
/// in the same order, types equal up to the plain Delta form, and no nullable column where the
/// table's is not (delta-rs's write reports such nulls with their rows).
pub(super) fn fits(have: &SchemaRef, want: &SchemaRef) -> bool {
    have.fields().len() == want.fields().len()
        && have.fields().iter().zip(want.fields()).all(|(h, w)| {
            h.name() == w.name()
                && super::rows::plain_type(h.data_type()) == *w.data_type()
                && (w.is_nullable() || !h.is_nullable())
        })
}

/// `b` with the table's schema (cast where only the physical form differs); `b` must
/// [`fits`] it.
pub(super) fn conform(b: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let bug = |e: datafusion::arrow::error::ArrowError| {
        Error::Bug(format!("casting to the table's types: {e}"))
    };
    let columns = b
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                cast(c, f.data_type()).map_err(bug)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(bug)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tables::Tables;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::DeltaTable;

    fn rows(keys: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new(PARTITION_COLUMN, DataType::Utf8, true),
        ]));
        let n: Vec<i64> = (0..keys.len() as i64).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(n)),
                Arc::new(StringArray::from(keys.to_vec())),
            ],
        )
        .unwrap()
    }

    fn window<'a>(keys: &'a (String, String), app_id: &'a str) -> Window<'a> {
        Window {
            scope: Scope::Window(keys),
            app_id,
            txn_version: 1,
            info: HashMap::new(),
        }
    }

    fn keys(lo: &str, hi: &str) -> (String, String) {
        (lo.to_string(), hi.to_string())
    }

    /// Stream `batches` through a window writer and commit them: the version written.
    async fn overwrite_window(
        open: &mut Open,
        at: &Location,
        batches: Vec<RecordBatch>,
        w: &Window<'_>,
    ) -> Result<u64> {
        let mut writer = table_writer(open, at, batches[0].schema_ref(), Layout::Partitioned)
            .await?
            .expect("the direct path applies");
        for b in batches {
            writer.write(b).await?;
        }
        let adds = writer.finish().await?.adds;
        commit_files(open, at, &adds, w).await
    }

    /// A table in `dir` whose version 0 delta-rs wrote with `keys`' rows (a checkpoint every 3
    /// versions): its directory and location.
    async fn table_of(dir: &std::path::Path, keys: &[&str]) -> (std::path::PathBuf, Location) {
        let path = dir.join("t");
        std::fs::create_dir_all(&path).unwrap();
        let at = Location::local(&path).unwrap();
        let t = DeltaTable::try_from_url(at.url().clone()).await.unwrap();
        t.write(vec![rows(keys)])
            .with_partition_columns([PARTITION_COLUMN])
            .with_configuration([("delta.checkpointInterval", Some("3"))])
            .await
            .unwrap();
        (path, at)
    }

    /// Active files by partition value, as delta-rs reads the table.
    async fn files_of(at: &Location) -> Vec<(String, i64)> {
        let t = DeltaTable::try_from_url(at.url().clone()).await.unwrap();
        let mut out: Vec<(String, i64)> = t
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .map(|f| {
                (
                    partition_of(&f.partition_values_map()).unwrap(),
                    f.num_records().unwrap() as i64,
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Record batches that are slices of one large batch (as DataFusion's operators hand them
    /// out) count their own rows towards [`FLUSH_BYTES`], not their shared buffers: 300,000
    /// rows (a few MiB) in 8,192-row slices make one file per partition value, not a flush
    /// every few slices.
    #[tokio::test]
    async fn sliced_record_batches_count_their_own_bytes_towards_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (_path, at) = table_of(dir.path(), &["a"]).await;
        let tables = Tables::default();
        let mut open = tables.latest(&at).await.unwrap();
        let keys_of: Vec<&str> = (0..300_000)
            .map(|i| if i % 2 == 0 { "b" } else { "c" })
            .collect();
        let all = rows(&keys_of);
        let slices: Vec<RecordBatch> = (0..all.num_rows())
            .step_by(8192)
            .map(|o| all.slice(o, 8192.min(all.num_rows() - o)))
            .collect();
        let whole: usize = slices.iter().map(|b| b.get_array_memory_size()).sum();
        assert!(
            whole > FLUSH_BYTES,
            "the slices' shared buffers add up to {whole}"
        );
        let k = keys("b", "d");
        overwrite_window(&mut open, &at, slices, &window(&k, "w"))
            .await
            .unwrap();
        let files = files_of(&at).await;
        assert_eq!(
            files,
            vec![
                ("a".to_string(), 1),
                ("b".to_string(), 150_000),
                ("c".to_string(), 150_000)
            ]
        );
    }

    #[tokio::test]
    async fn writers_of_other_partitions_are_rebased_and_of_the_same_partition_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let (path, at) = table_of(dir.path(), &["a", "b", "b"]).await;
        // Three processes, each with its own view of the table, all as of version 0.
        let (p1, p2, p3) = (Tables::default(), Tables::default(), Tables::default());
        let mut one = p1.latest(&at).await.unwrap();
        let mut two = p2.latest(&at).await.unwrap();
        let mut three = p3.latest(&at).await.unwrap();

        // One replaces b (two rows) with one row: version 1.
        let kb = keys("b", "c");
        let written = overwrite_window(&mut one, &at, vec![rows(&["b"])], &window(&kb, "x"))
            .await
            .unwrap();
        assert_eq!(written, 1);
        // Two, still at version 0, writes c: rebased over one's commit, version 2.
        let kc = keys("c", "d");
        let written = overwrite_window(&mut two, &at, vec![rows(&["c", "c"])], &window(&kc, "y"))
            .await
            .unwrap();
        assert_eq!(written, 2);
        assert_eq!(two.read_to(), Some(2));
        // Three, still at version 0, overwrites b as well: a conflict, nothing committed.
        let err = overwrite_window(&mut three, &at, vec![rows(&["b"])], &window(&kb, "z"))
            .await
            .err()
            .unwrap();
        assert!(err.is_transient(), "{err}");
        assert!(
            err.to_string().contains("commit 1 by another writer"),
            "{err}"
        );
        // A writer from a fresh read is not held up by any of this: version 3.
        let mut four = Tables::default().latest(&at).await.unwrap();
        let kd = keys("d", "e");
        let written = overwrite_window(&mut four, &at, vec![rows(&["d"])], &window(&kd, "w"))
            .await
            .unwrap();
        // Version 3 is a multiple of the interval: checkpointed.
        assert_eq!(written, 3);
        assert!(
            path.join("_delta_log/00000000000000000003.checkpoint.parquet")
                .exists()
        );
        assert_eq!(
            files_of(&at).await,
            vec![
                ("a".to_string(), 1),
                ("b".to_string(), 1),
                ("c".to_string(), 2),
                ("d".to_string(), 1)
            ]
        );
    }
    /// Every file a window writer finishes records its rows and checksum in its tags; per
    /// partition they sum to what reading the rows finds, at every version, in this process
    /// and in a new one that loads the table from a checkpoint. Partitions holding a file
    /// written by delta-rs (no tags) are read instead.
    #[tokio::test]
    async fn written_files_record_checksums_that_sum_to_what_reading_finds() {
        use super::super::ops::{read_stats, recorded_stats};
        let dir = tempfile::tempdir().unwrap();
        // Version 0, by delta-rs: a file in `a` without tags.
        let (path, at) = table_of(dir.path(), &["a", "a"]).await;
        let tables = Tables::default();
        let mut open = tables.latest(&at).await.unwrap();
        let writes: [(&[&str], (&str, &str)); 4] = [
            (&["b", "b", "c"], ("b", "d")),
            (&["c", "d"], ("c", "e")),
            (&["b"], ("b", "c")),
            (&["d", "d", "e"], ("d", "f")),
        ];
        for (i, (ks, (lo, hi))) in writes.iter().enumerate() {
            let k = keys(lo, hi);
            let id = format!("w{i}");
            overwrite_window(&mut open, &at, vec![rows(ks)], &window(&k, &id))
                .await
                .unwrap();
            tables.keep(&at, &open).unwrap();
        }
        let tagged = std::collections::BTreeSet::from(["b", "c", "d", "e"].map(String::from));
        for fresh in [false, true] {
            // This process, or a new one (which loads the table from its checkpoint).
            let tables = &Tables::default();
            if !fresh {
                tables.keep(&at, &open).unwrap();
            }
            // A new process knows the file list of the version it loaded (the latest) and later.
            let versions = if fresh { 4..=4 } else { 1..=4 };
            for version in versions {
                let only = Some(&tagged);
                let recorded = recorded_stats(&at, version, only, tables).await.unwrap();
                let read = read_stats(&at, version, only, tables).await.unwrap();
                assert_eq!(
                    recorded.as_ref(),
                    Some(&read),
                    "version {version}, fresh {fresh}"
                );
                assert!(!read.is_empty());
                // `a` has delta-rs's untagged file: read, not recorded.
                assert_eq!(
                    recorded_stats(&at, version, None, tables).await.unwrap(),
                    None
                );
            }
        }
        assert!(
            path.join("_delta_log/00000000000000000003.checkpoint.parquet")
                .exists()
        );
    }
}

#[cfg(test)]
mod conflict_tests {
    use super::*;
    use deltalake::kernel::Add;

    fn add(key: Option<&str>) -> Action {
        Action::Add(Add {
            path: "f.parquet".into(),
            partition_values: key
                .map(|k| HashMap::from([(PARTITION_COLUMN.to_string(), Some(k.to_string()))]))
                .unwrap_or_default(),
            ..Default::default()
        })
    }

    #[test]
    fn the_conflict_rules_of_a_window_overwrite() {
        let keys = ("2024-01-02".to_string(), "2024-01-04".to_string());
        let w = Window {
            scope: Scope::Window(&keys),
            app_id: "mine",
            txn_version: 1,
            info: HashMap::new(),
        };
        let c = |actions: Vec<Action>| conflict(&actions, &w);
        assert_eq!(c(vec![add(Some("2024-01-01"))]), None, "before the window");
        assert_eq!(
            c(vec![add(Some("2024-01-04"))]),
            None,
            "the end is exclusive"
        );
        assert!(
            c(vec![add(Some("2024-01-02"))]).is_some(),
            "the start is inclusive"
        );
        assert!(c(vec![add(Some("2024-01-03"))]).is_some());
        assert!(
            c(vec![add(None)]).is_some(),
            "a file without a partition value"
        );
        let gone = |key: &str| Action::Remove(remove(Some(key), "f.parquet", 1, 0));
        assert_eq!(c(vec![gone("2024-01-05")]), None);
        assert!(c(vec![gone("2024-01-03")]).is_some());
        assert!(
            c(vec![Action::Remove(Remove {
                path: "f.parquet".into(),
                ..Default::default()
            })])
            .is_some(),
            "a remove without partition values"
        );
        assert!(c(vec![Action::Txn(Transaction::new("mine", 1))]).is_some());
        assert_eq!(c(vec![Action::Txn(Transaction::new("other", 1))]), None);
        assert!(c(vec![Action::Metadata(Default::default())]).is_some());
    }
}
