//! The rows of an INCREMENTAL_BY_UNIQUE_KEY batch on their way to delta-rs's MERGE (which
//! [`super::batch`] runs and commits), staged so that memory is bounded by neither the batch's
//! rows nor the table's, and the session that merges them.
//!
//! Invariants:
//! - The query's rows are computed once and counted and hashed as they come ([`stage`]). Up to
//!   [`HASHED_SOURCE`] bytes of rows are held in memory; beyond, every row streams into
//!   Parquet files of a private local staging directory (the open file finished every
//!   [`commit::FLUSH_BYTES`] of rows). The audits read the staged rows, and the MERGE reads
//!   them as its source ([`Staged::read`]). The directory is deleted when the [`Staged`] rows
//!   are dropped, whatever the outcome.
//! - delta-rs's MERGE holds its source as the build side of a hash join. A source of more than
//!   [`HASHED_SOURCE`] bytes of rows is therefore merged in a session whose joins sort instead
//!   of hashing, and whose sorts spill to disk beyond [`MERGE_MEMORY`] (one pool shared by
//!   every such merge of the process; [`session_for`]): a year in one batch needed a year of
//!   rows in memory. A smaller source keeps the hash join, which is about twice as fast.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use super::checksum::{Checksum, Running};
use super::rows::bytes_of;
use super::{PARTITION_COLUMN, commit, failed};
use crate::error::{Error, Result};

/// The memory pool of every sorting MERGE of the process: what its sorts may hold before they
/// spill.
pub const MERGE_MEMORY: usize = 256 * 1024 * 1024;

/// The largest source (bytes of Arrow rows) merged by a hash join, held in memory.
pub const HASHED_SOURCE: usize = 64 * 1024 * 1024;

/// The environment variable that sets the largest unique-key batch merged in memory, in MiB
/// of rows (default [`HASHED_SOURCE`]; `0`: every batch is staged and merged by sorting).
pub const HASHED_SOURCE_ENV: &str = "TIDEMARK_MERGE_IN_MEMORY_MIB";

/// The largest source merged by a hash join: [`HASHED_SOURCE_ENV`] if set, else
/// [`HASHED_SOURCE`].
pub fn hashed_source_from_env() -> Result<usize> {
    let Ok(text) = std::env::var(HASHED_SOURCE_ENV) else {
        return Ok(HASHED_SOURCE);
    };
    text.trim()
        .parse::<usize>()
        .ok()
        .and_then(|mib| mib.checked_mul(1024 * 1024))
        .ok_or_else(|| {
            Error::from(
                crate::error::Diagnostic::error(format!(
                    "`{HASHED_SOURCE_ENV}` is `{text}`, not a number of MiB"
                ))
                .hint(format!(
                    "set it to a whole number such as `{}`, or unset it",
                    HASHED_SOURCE / (1024 * 1024)
                )),
            )
        })
}

/// `ctx`'s session for a MERGE of a source of `bytes`: `ctx`'s own up to `hashed` bytes
/// ([`HASHED_SOURCE`]); beyond, one that joins by sorting (delta-rs's hash join would build
/// its table from the whole source), in the process's merge runtime, whose memory pool makes
/// the sorts spill to disk beyond [`MERGE_MEMORY`]. It shares `ctx`'s object stores. Should
/// that runtime not build (its disk manager's temporary directory), `ctx`'s is used: the
/// merge still sorts, without a bound.
pub(super) fn session_for(
    ctx: &SessionContext,
    bytes: usize,
    hashed: usize,
) -> Arc<dyn datafusion::catalog::Session> {
    if bytes <= hashed {
        return Arc::new(ctx.state());
    }
    static RUNTIME: OnceLock<Arc<RuntimeEnv>> = OnceLock::new();
    let state = ctx.state();
    let env = RUNTIME.get_or_init(|| {
        let stores = Arc::clone(&state.runtime_env().object_store_registry);
        RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(MERGE_MEMORY)))
            .with_object_store_registry(stores)
            .build_arc()
            .unwrap_or_else(|_| Arc::clone(state.runtime_env()))
    });
    let mut state = SessionStateBuilder::new_from_existing(state)
        .with_runtime_env(Arc::clone(env))
        .build();
    state.config_mut().options_mut().optimizer.prefer_hash_join = false;
    Arc::new(state)
}

/// A batch's rows: held in memory up to a limit, else in Parquet files of a private local
/// staging directory (deleted when dropped).
pub(super) struct Staged {
    /// The rows while they fit under the limit.
    held: Vec<RecordBatch>,
    /// The staging directory and its open file, once the rows outgrew the limit.
    dir: Option<tempfile::TempDir>,
    writer: Option<ArrowWriter<std::fs::File>>,
    files: usize,
    /// Arrow bytes written to the open file since it was opened.
    buffered: usize,
    /// Bytes of every row in Arrow's memory layout (what a hash join would hold).
    pub(super) bytes: usize,
    /// Rows and checksum of every row.
    pub(super) sum: Checksum,
    schema: SchemaRef,
}

impl Staged {
    /// The staged rows as a DataFrame of `ctx` (no rows, of the batch's columns, when there
    /// were none).
    pub(super) async fn read(
        &self,
        ctx: &SessionContext,
        what: &dyn Fn() -> String,
    ) -> Result<datafusion::dataframe::DataFrame> {
        let Some(dir) = &self.dir else {
            let held = if self.held.is_empty() {
                vec![RecordBatch::new_empty(Arc::clone(&self.schema))]
            } else {
                self.held.clone()
            };
            return ctx.read_batches(held).map_err(|e| failed(&what(), e));
        };
        let dir = dir.path().to_string_lossy().into_owned();
        let options = ParquetReadOptions::default().schema(&self.schema);
        ctx.read_parquet(dir, options)
            .await
            .map_err(|e| failed(&what(), e))
    }

    /// Write `rows` to the open staging file (opening the directory and a file as needed);
    /// the file is finished every [`commit::FLUSH_BYTES`] of rows.
    fn write(&mut self, rows: &RecordBatch) -> std::io::Result<()> {
        let dir = match &self.dir {
            Some(d) => d,
            None => self.dir.insert(
                tempfile::Builder::new()
                    .prefix("tidemark-merge-")
                    .tempdir()?,
            ),
        };
        let writer = match &mut self.writer {
            Some(w) => w,
            None => {
                let path = dir.path().join(format!("{:05}.parquet", self.files));
                let file = std::fs::File::create(path)?;
                self.files += 1;
                self.buffered = 0;
                self.writer.insert(
                    ArrowWriter::try_new(file, Arc::clone(&self.schema), None)
                        .map_err(std::io::Error::other)?,
                )
            }
        };
        writer.write(rows).map_err(std::io::Error::other)?;
        self.buffered += bytes_of(rows);
        if self.buffered >= commit::FLUSH_BYTES {
            self.finish()?;
        }
        Ok(())
    }

    /// Finish the open staging file, if any.
    fn finish(&mut self) -> std::io::Result<()> {
        if let Some(w) = self.writer.take() {
            w.close().map_err(std::io::Error::other)?;
        }
        Ok(())
    }
}

/// Stage the rows of a batch of `model` (`stream`), columns `schema` (plain types, every
/// column nullable): held in memory while they total up to `hashed` bytes, else streamed into
/// Parquet files; counted and hashed on the way.
pub(super) async fn stage(
    model: &crate::names::ModelName,
    mut stream: SendableRecordBatchStream,
    schema: SchemaRef,
    hashed: usize,
) -> Result<Staged> {
    use futures::StreamExt;
    let what = || format!("{model} failed");
    let cannot = |e: std::io::Error| {
        Error::from(
            crate::error::Diagnostic::error(format!(
                "cannot stage the rows of a batch of `{model}` on local disk"
            ))
            .caused_by(&e)
            .hint("check that the temporary directory (`TMPDIR`) is writable and has room"),
        )
    };
    let mut staged = Staged {
        held: Vec::new(),
        dir: None,
        writer: None,
        files: 0,
        buffered: 0,
        bytes: 0,
        sum: Checksum::default(),
        schema: Arc::clone(&schema),
    };
    let mut running = Running::new(&[], Some(PARTITION_COLUMN));
    while let Some(next) = stream.next().await {
        let rows = commit::conform(next.map_err(|e| failed(&what(), e))?, &schema)?;
        if rows.num_rows() == 0 {
            continue;
        }
        running.add(&rows)?;
        staged.bytes += bytes_of(&rows);
        if staged.dir.is_none() && staged.bytes <= hashed {
            staged.held.push(rows);
            continue;
        }
        for held in std::mem::take(&mut staged.held) {
            staged.write(&held).map_err(cannot)?;
        }
        staged.write(&rows).map_err(cannot)?;
    }
    staged.finish().map_err(cannot)?;
    staged.sum = running.total;
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use super::super::{BatchJob, Engine, Input, LocalEngine, Location, WriteMode};
    use crate::names::{ModelName, TableId};

    fn job(table: &TableId, n: i64, rows: &str) -> BatchJob {
        BatchJob {
            model: ModelName::parse("shop.items").unwrap(),
            table: table.clone(),
            sql: format!("SELECT * FROM (VALUES {rows}) AS t(id, v)"),
            inputs: Vec::new(),
            write: WriteMode::UniqueKey {
                key: vec!["id".to_string()],
            },
            txn: (format!("test-{n}"), n),
            audits: Vec::new(),
        }
    }

    /// An engine on a fresh warehouse that merges sources of up to `hashed` bytes in memory,
    /// and the table the tests write.
    fn engine_merging_in_memory_up_to(hashed: usize) -> (tempfile::TempDir, LocalEngine, TableId) {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = LocalEngine::new(Location::local(dir.path()).unwrap()).unwrap();
        engine.hashed_source = hashed;
        (dir, engine, TableId::parse("shop/items__0a1b__g1").unwrap())
    }

    /// A blocking audit that finds the rows whose `column` is null.
    fn blocking_not_null(column: &str) -> super::super::AuditJob {
        super::super::AuditJob {
            name: "not_null".to_string(),
            sql: format!(
                "SELECT * FROM {} WHERE {column} IS NULL",
                super::super::AUDITED
            ),
            blocking: true,
        }
    }

    /// `sql` over the table as `shop.items`.
    fn query(
        engine: &LocalEngine,
        table: &TableId,
        sql: &str,
    ) -> Vec<datafusion::arrow::array::RecordBatch> {
        let input = Input::Table {
            name: ModelName::parse("shop.items").unwrap(),
            table: table.clone(),
            version: None,
        };
        engine.query(&[input], sql).unwrap()
    }

    /// The table's rows, `id=v` in key order.
    fn rows(engine: &LocalEngine, table: &TableId) -> Vec<String> {
        let out = query(
            engine,
            table,
            "SELECT CAST(id AS VARCHAR) || '=' || v AS r FROM shop.items ORDER BY id",
        );
        let mut all = Vec::new();
        for b in out {
            let col = datafusion::arrow::compute::cast(
                b.column(0),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let col = col
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .unwrap();
            all.extend(col.iter().map(|s| s.unwrap_or_default().to_string()));
        }
        all
    }

    /// The same merges by a hash join of rows held in memory and by the sorting, spilling join
    /// of staged files: updates of matched keys, inserts of new ones, a source that matches one
    /// target row twice (an error), and a batch a blocking audit refuses (nothing merged).
    #[test]
    fn a_merge_by_sorting_gives_what_a_merge_by_hashing_gives() {
        let mut outcomes = Vec::new();
        for hashed in [usize::MAX, 0] {
            let (_dir, engine, table) = engine_merging_in_memory_up_to(hashed);
            let first = engine
                .run_batch(&job(&table, 1, "(1, 'a'), (2, 'b'), (3, 'c')"))
                .unwrap();
            assert_eq!(first.rows, 3);
            let second = engine
                .run_batch(&job(&table, 2, "(2, 'B'), (4, 'd'), (5, 'e')"))
                .unwrap();
            assert_eq!(second.rows, 5, "the merged table's rows");
            let twice = engine
                .run_batch(&job(&table, 3, "(1, 'x'), (1, 'y')"))
                .unwrap_err()
                .to_string();
            // A blocking audit that finds a staged row refuses the batch: nothing is merged.
            let mut audited = job(&table, 4, "(6, 'f'), (7, CAST(NULL AS VARCHAR))");
            audited.audits.push(blocking_not_null("v"));
            let refused = engine.run_batch(&audited).unwrap();
            assert_eq!(refused.audits[0].failures, 1);
            assert_eq!(refused.rows, 2, "the refused batch's rows");
            outcomes.push((rows(&engine, &table), second.checksum, twice));
        }
        assert_eq!(
            outcomes[0].0,
            ["1=a", "2=B", "3=c", "4=d", "5=e"],
            "merged by hashing"
        );
        assert_eq!(outcomes[0].0, outcomes[1].0, "merged by sorting");
        assert_eq!(outcomes[0].1, outcomes[1].1, "the same checksum");
        for (_, _, twice) in &outcomes {
            assert!(twice.contains("multiple source rows"), "{twice}");
        }
    }

    /// Rows held in memory until they outgrow the limit are all staged with the rest: the
    /// staged rows read back are every row, with the running checksum of them all.
    #[test]
    fn rows_held_before_the_limit_is_crossed_are_staged_with_the_rest() {
        use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        let batch = |from: i64| {
            let ids: Vec<i64> = (from..from + 3).collect();
            let vs: Vec<String> = ids.iter().map(|i| format!("v{i}")).collect();
            RecordBatch::try_new(
                std::sync::Arc::clone(&schema),
                vec![
                    std::sync::Arc::new(Int64Array::from(ids)) as ArrayRef,
                    std::sync::Arc::new(StringArray::from(vs)) as ArrayRef,
                ],
            )
            .unwrap()
        };
        let batches = vec![batch(0), batch(3), batch(6)];
        let one = super::bytes_of(&batches[0]);
        let mut all = super::Running::new(&[], None);
        for b in &batches {
            all.add(b).unwrap();
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let model = ModelName::parse("shop.items").unwrap();
        // Two batches fit under `2 * one`: they are held, and the third sends all three to
        // files. All three fit under `3 * one`. Nothing fits under 0.
        for (hashed, on_disk) in [(2 * one, true), (3 * one, false), (0, true)] {
            let stream: datafusion::execution::SendableRecordBatchStream = Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                    std::sync::Arc::clone(&schema),
                    futures::stream::iter(batches.clone().into_iter().map(Ok)),
                ),
            );
            let staged = rt
                .block_on(super::stage(
                    &model,
                    stream,
                    std::sync::Arc::clone(&schema),
                    hashed,
                ))
                .unwrap();
            assert_eq!(staged.dir.is_some(), on_disk, "limit {hashed}");
            assert_eq!(staged.held.is_empty(), on_disk, "limit {hashed}");
            assert_eq!(staged.sum.hex(), all.total.hex(), "limit {hashed}");
            let ctx = super::super::session::new_context();
            let read = rt
                .block_on(async {
                    let df = staged.read(&ctx, &|| "test".to_string()).await?;
                    df.collect().await.map_err(|e| super::failed("read", e))
                })
                .unwrap();
            let mut back = super::Running::new(&[], None);
            let mut rows = 0;
            for b in &read {
                back.add(b).unwrap();
                rows += b.num_rows();
            }
            assert_eq!(rows, 9, "limit {hashed}");
            assert_eq!(back.total.hex(), all.total.hex(), "limit {hashed}");
        }
    }

    /// A FULL batch whose columns differ from its table's is staged like a merge's rows (held
    /// in memory, or in files at a limit of 0), audited there, and written from there with the
    /// table's schema replaced: both ways give the same rows and checksum, and a batch a
    /// blocking audit refuses leaves the table's columns and rows as they were.
    #[test]
    fn a_full_batch_whose_columns_changed_is_staged_then_replaces_the_table() {
        let mut outcomes = Vec::new();
        for hashed in [usize::MAX, 0] {
            let (_dir, engine, table) = engine_merging_in_memory_up_to(hashed);
            let full = |n: i64, rows: &str, columns: &str| BatchJob {
                sql: format!("SELECT * FROM (VALUES {rows}) AS t({columns})"),
                write: WriteMode::Full,
                ..job(&table, n, "")
            };
            engine
                .run_batch(&full(1, "(1, 'a'), (2, 'b')", "id, v"))
                .unwrap();
            let mut audited = full(
                2,
                "(1, 'a', 10), (2, 'b', CAST(NULL AS BIGINT))",
                "id, v, w",
            );
            audited.audits.push(blocking_not_null("w"));
            let refused = engine.run_batch(&audited).unwrap();
            assert_eq!(refused.audits[0].failures, 1);
            assert_eq!(rows(&engine, &table), ["1=a", "2=b"], "refused: unchanged");
            let changed = engine
                .run_batch(&full(
                    3,
                    "(1, 'a', 10), (2, 'B', 20), (3, 'c', 30)",
                    "id, v, w",
                ))
                .unwrap();
            assert_eq!(changed.rows, 3);
            let w = query(
                &engine,
                &table,
                "SELECT CAST(SUM(w) AS BIGINT) AS w FROM shop.items",
            );
            let w = w[0]
                .column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .unwrap()
                .value(0);
            outcomes.push((rows(&engine, &table), w, changed.checksum));
        }
        assert_eq!(outcomes[0].0, ["1=a", "2=B", "3=c"]);
        assert_eq!(outcomes[0].1, 60, "the new column's values");
        assert_eq!(outcomes[0], outcomes[1], "held and staged in files");
    }

    #[test]
    fn only_a_large_source_is_merged_by_sorting_in_the_bounded_pool() {
        let ctx = super::super::session::new_context();
        let small = super::session_for(&ctx, 10, 10);
        assert!(small.config().options().optimizer.prefer_hash_join);
        let large = super::session_for(&ctx, 11, 10);
        assert!(!large.config().options().optimizer.prefer_hash_join);
        let pool = large.runtime_env().memory_pool.memory_limit();
        assert!(matches!(
            pool,
            datafusion::execution::memory_pool::MemoryLimit::Finite(n) if n == super::MERGE_MEMORY
        ));
    }
}
