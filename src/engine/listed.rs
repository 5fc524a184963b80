//! Tables read at a pinned version from the file list the engine follows
//! ([`super::tables::Tables::files_at`]), instead of loading that version through delta-rs and
//! letting its scan replay the log a second time to choose the files.
//!
//! A batch reads each parent at the version pinned when it was planned, almost always a version
//! this process has just written or read. Loading it through delta-rs replays the log from the
//! last checkpoint (~5 ms a parent a batch), and delta-rs's scan then replays it again while
//! planning. Here the file list is already in memory; the provider is a plain Parquet scan.
//!
//! Invariants:
//! - A [`Listed`] table reads exactly the active files of the pinned version whose partition
//!   value the caller keeps (all of them for an unpartitioned table), nothing else.
//! - Its columns are those delta-rs's own provider exposes for the table (same names, order and
//!   types, string columns as views), less the physical partition column.
//! - Only tables a plain Parquet reader reads correctly are read this way: no column mapping, no
//!   deletion vectors, no reader feature this module does not know ([`readable`]). For any other
//!   table, or a version the file list cannot answer, [`provider`] returns `None` and the caller
//!   reads through delta-rs.
//! - Files are skipped at planning only on bounds that hold ([`Bounds`]): the integer, date and
//!   timestamp minimums and maximums of the files' Delta statistics, timestamp maximums widened
//!   by the millisecond those statistics truncate. Other columns never skip a file. The bounds
//!   are never handed to DataFusion, which would answer `MIN`/`MAX` from exact statistics; it
//!   sees the files' row counts and sizes only.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PrunableStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use object_store::ObjectMeta;
use object_store::path::Path;

use super::tables::{FileMeta, Tables, in_keys};
use super::{Location, PARTITION_COLUMN};
use crate::error::Result;

/// A provider of the table at `at` as of `version` (only the partitions in `keys`, if given)
/// read from the followed file list; `None`: read it through delta-rs instead (see the module
/// invariants).
pub async fn provider(
    tables: &Tables,
    ctx: &SessionContext,
    at: &Location,
    version: u64,
    keys: Option<&BTreeSet<String>>,
) -> Result<Option<Arc<dyn TableProvider>>> {
    // Files without a partition value are dropped from a partitioned table's reads in `of`.
    let Some((table, files)) = tables.files_at(at, version, in_keys(keys)).await? else {
        return Ok(None);
    };
    let Some(listed) = Listed::of(ctx, at, &table, files, keys.is_some()).await else {
        return Ok(None);
    };
    Ok(Some(Arc::new(listed)))
}

/// Whether a plain Parquet reader reads `table`'s files correctly.
fn readable(table: &DeltaTable) -> bool {
    let Ok(state) = table.snapshot() else {
        return false;
    };
    let protocol = state.protocol();
    if protocol.min_reader_version() <= 1 {
        return true;
    }
    let mapped = state
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        .is_some_and(|m| !m.eq_ignore_ascii_case("none"));
    let known = protocol.reader_features().is_none_or(|features| {
        features.iter().all(|f| {
            matches!(
                f.to_string().as_str(),
                "timestampNtz"
                    | "typeWidening"
                    | "typeWidening-preview"
                    | "v2Checkpoint"
                    | "vacuumProtocolCheck"
            )
        })
    });
    known && !mapped
}

/// A table at a pinned version, read from an explicit list of Parquet files.
#[derive(Debug)]
pub struct Listed {
    schema: SchemaRef,
    store: ObjectStoreUrl,
    files: Vec<File>,
}

#[derive(Debug)]
struct File {
    path: Path,
    size: u64,
    /// Rows, from the file's statistics.
    rows: Option<usize>,
    /// The file's statistics as written (JSON), read when a query has filters.
    stats: Option<Arc<str>>,
}

impl Listed {
    /// The provider of `files` of `table` (whose metadata is that of the pinned version);
    /// `None` when a plain Parquet reader cannot read it.
    async fn of(
        ctx: &SessionContext,
        at: &Location,
        table: &DeltaTable,
        files: Vec<(Option<String>, String, FileMeta)>,
        by_key: bool,
    ) -> Option<Listed> {
        if !readable(table) {
            return None;
        }
        // The table's store, registered as delta-rs registers it for its own scans.
        table.update_datafusion_session(&ctx.state()).ok()?;
        let full = table.table_provider().await.ok()?.schema();
        // Reading some partitions of a partitioned table, a file without a partition value is
        // in none of them.
        let partitioned = full.fields().iter().any(|f| f.name() == PARTITION_COLUMN);
        let files = files
            .into_iter()
            .filter(|(k, _, _)| !(by_key && partitioned && k.is_none()));
        let fields: Vec<_> = full
            .fields()
            .iter()
            .filter(|f| f.name() != PARTITION_COLUMN)
            .cloned()
            .collect();
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new_with_metadata(
            fields,
            full.metadata().clone(),
        ));
        let store = ObjectStoreUrl::parse(at.store_url().as_str()).ok()?;
        let mut listed = Vec::new();
        for (_, rel, meta) in files {
            listed.push(File {
                path: object_path(at, &rel)?,
                size: u64::try_from(meta.size).ok()?,
                rows: meta.stats.as_deref().and_then(num_records),
                stats: meta.stats,
            });
        }
        Some(Listed {
            schema,
            store,
            files: listed,
        })
    }

    /// Which files may hold rows matching `filters` (all, unless their bounds rule them out).
    fn kept(&self, state: &dyn Session, filters: &[Expr]) -> Vec<bool> {
        let all = vec![true; self.files.len()];
        let Some(predicate) = conjunction(filters.iter().cloned()) else {
            return all;
        };
        let Ok(df_schema) = DFSchema::try_from(self.schema.as_ref().clone()) else {
            return all;
        };
        let Ok(physical) = state.create_physical_expr(predicate, &df_schema) else {
            return all;
        };
        let Some(pruning) = PruningPredicateBuilder::new()
            .with_file_schema(self.schema.clone())
            .build(physical)
        else {
            return all;
        };
        let bounds = self
            .files
            .iter()
            .map(|f| Arc::new(bounds(&self.schema, f.stats.as_deref())))
            .collect();
        pruning
            .prune(&PrunableStatistics::new(bounds, self.schema.clone()))
            .unwrap_or(all)
    }
}

/// The file `rel` (a path relative to the table, as the log holds it, decoded) in its store.
fn object_path(at: &Location, rel: &str) -> Option<Path> {
    if rel.contains("://") {
        return None;
    }
    let mut url = at.url().clone();
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(rel.split('/'));
    Path::from_url_path(url.path()).ok()
}

/// `numRecords` of a file's statistics.
fn num_records(stats: &str) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_str(stats).ok()?;
    usize::try_from(v.get("numRecords")?.as_u64()?).ok()
}

/// Bounds of a file's columns that hold, as "exact" statistics for pruning only (see the
/// module invariants); every other statistic is unknown.
fn bounds(schema: &SchemaRef, stats: Option<&str>) -> Statistics {
    let mut out = Statistics::new_unknown(schema);
    let Some(v) = stats.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok()) else {
        return out;
    };
    let (Some(mins), Some(maxs)) = (
        v.get("minValues").and_then(|m| m.as_object()),
        v.get("maxValues").and_then(|m| m.as_object()),
    ) else {
        return out;
    };
    for (i, field) in schema.fields().iter().enumerate() {
        let t = field.data_type();
        let min = mins.get(field.name()).and_then(|v| bound(v, t, false));
        let max = maxs.get(field.name()).and_then(|v| bound(v, t, true));
        if let (Some(min), Some(max)) = (min, max) {
            out.column_statistics[i] = ColumnStatistics {
                min_value: Precision::Exact(min),
                max_value: Precision::Exact(max),
                ..ColumnStatistics::new_unknown()
            };
        }
    }
    out
}

/// One statistic as a bound of a column of type `t` (`upper`: a maximum), if it is one that
/// holds. Timestamps are written truncated to milliseconds, so a maximum finer than that is
/// widened by one millisecond.
fn bound(v: &serde_json::Value, t: &DataType, upper: bool) -> Option<ScalarValue> {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => ScalarValue::Int64(Some(v.as_i64()?)).cast_to(t).ok(),
        DataType::Date32 => ScalarValue::Utf8(Some(v.as_str()?.to_string()))
            .cast_to(t)
            .ok(),
        DataType::Timestamp(..) => {
            let parsed = ScalarValue::Utf8(Some(v.as_str()?.to_string()))
                .cast_to(t)
                .ok()?;
            Some(match parsed {
                ScalarValue::TimestampMicrosecond(Some(ts), tz) if upper => {
                    ScalarValue::TimestampMicrosecond(Some(ts.checked_add(1_000)?), tz)
                }
                ScalarValue::TimestampNanosecond(Some(ts), tz) if upper => {
                    ScalarValue::TimestampNanosecond(Some(ts.checked_add(1_000_000)?), tz)
                }
                other if other.is_null() => return None,
                other => other,
            })
        }
        _ => None,
    }
}

#[async_trait]
impl TableProvider for Listed {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        // Filters skip files and row groups; DataFusion still applies them to every row.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let kept = self.kept(state, filters);
        let width = self.schema.fields().len();
        let files: Vec<PartitionedFile> = self
            .files
            .iter()
            .zip(kept)
            .filter(|(_, keep)| *keep)
            .map(|(f, _)| {
                let mut file = PartitionedFile::from(ObjectMeta {
                    location: f.path.clone(),
                    last_modified: Utc.timestamp_nanos(0),
                    size: f.size,
                    e_tag: None,
                    version: None,
                });
                file.statistics = Some(Arc::new(Statistics {
                    num_rows: f.rows.map_or(Precision::Absent, Precision::Exact),
                    total_byte_size: Precision::Inexact(usize::try_from(f.size).unwrap_or(0)),
                    column_statistics: vec![ColumnStatistics::new_unknown(); width],
                }));
                file
            })
            .collect();
        if files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let statistics = Statistics {
            num_rows: files
                .iter()
                .map(|f| f.statistics.as_ref().map(|s| s.num_rows))
                .try_fold(0usize, |sum, rows| match rows {
                    Some(Precision::Exact(n)) => Some(sum + n),
                    _ => None,
                })
                .map_or(Precision::Absent, Precision::Exact),
            total_byte_size: Precision::Inexact(
                files
                    .iter()
                    .map(|f| usize::try_from(f.object_meta.size).unwrap_or(0))
                    .sum(),
            ),
            column_statistics: vec![ColumnStatistics::new_unknown(); width],
        };
        let groups = state.config().target_partitions().clamp(1, files.len());
        let mut file_groups = vec![Vec::new(); groups];
        for (i, f) in files.into_iter().enumerate() {
            file_groups[i % groups].push(f);
        }
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let source = format.file_source(TableSchema::from(self.schema.clone()));
        let config = FileScanConfigBuilder::new(self.store.clone(), source)
            .with_file_groups(file_groups.into_iter().map(FileGroup::new).collect())
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Date32Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use deltalake::protocol::SaveMode;

    /// Rows `(id, ts µs since 2024-01-01, name)`, in the partition of their day.
    fn rows(rows: &[(i64, i64, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("d", DataType::Date32, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
            Field::new(PARTITION_COLUMN, DataType::Utf8, false),
        ]));
        let jan1 = 1_704_067_200_000_000i64;
        let day = 86_400_000_000i64;
        let cols: Vec<datafusion::arrow::array::ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| jan1 + r.1))
                    .with_timezone("UTC"),
            ),
            Arc::new(Date32Array::from_iter_values(
                rows.iter()
                    .map(|r| 19_723 + i32::try_from(r.1 / day).unwrap()),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.0 as f64 / 2.0),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| format!("2024-01-0{}", 1 + r.1 / day)),
            )),
        ];
        RecordBatch::try_new(schema, cols).unwrap()
    }

    async fn query(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    }

    /// Every version of a table with adds, an overwrite and filters on each kind of column:
    /// the listed provider returns what delta-rs's returns, and skips files only when their
    /// bounds rule them out. The rows sit a fraction of a millisecond after the millisecond
    /// their statistics record, so an unwidened maximum would lose them.
    #[test]
    fn a_listed_table_reads_what_delta_rs_reads_at_every_version() {
        let dir = tempfile::tempdir().unwrap();
        let at = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let day = 86_400_000_000i64;
            let tables = Tables::default();
            type Write<'a> = (Vec<(i64, i64, &'a str)>, Option<&'a str>);
            let writes: Vec<Write> = vec![
                (vec![(1, 900, "a"), (2, 3_600_000_900, "b")], None),
                (vec![(3, day + 999_999, "c"), (4, day + 500, "d")], None),
                (
                    vec![(5, 2 * day + 700, "e"), (6, 2 * day + 1_000_400, "f")],
                    None,
                ),
                (
                    vec![(7, day + 1_500, "g")],
                    Some("_tidemark_partition = '2024-01-02'"),
                ),
                (vec![(8, 2 * day + 10, "h")], None),
            ];
            for (batch, replace) in &writes {
                let table = super::super::delta::open(&at).await.unwrap();
                let write = table
                    .write(vec![rows(batch)])
                    .with_partition_columns([PARTITION_COLUMN]);
                match replace {
                    Some(p) => write
                        .with_save_mode(SaveMode::Overwrite)
                        .with_replace_where(*p)
                        .await
                        .unwrap(),
                    None => write.with_save_mode(SaveMode::Append).await.unwrap(),
                };
                tables.latest(&at).await.unwrap();
            }
            let filters = [
                "",
                "WHERE ts > TIMESTAMP '2024-01-02T00:00:00.999500Z'",
                "WHERE ts <= TIMESTAMP '2024-01-01T00:00:00.000800Z'",
                "WHERE ts >= TIMESTAMP '2024-01-03T00:00:00.000600Z' AND id < 8",
                "WHERE ts > TIMESTAMP '2024-01-02T00:00:00.001200Z'",
                "WHERE id >= 6",
                "WHERE d = DATE '2024-01-02'",
                "WHERE name = 'c'",
                "WHERE amount > 2.0",
            ];
            for version in 0..writes.len() as u64 {
                let ctx = super::super::session::new_context();
                let mine = provider(&tables, &ctx, &at, version, None)
                    .await
                    .unwrap()
                    .expect("answered from the file list");
                ctx.register_table("listed", mine).unwrap();
                let theirs = deltalake::open_table_with_version(at.url().clone(), version)
                    .await
                    .unwrap();
                let theirs = super::super::delta::provider_of(&ctx, theirs)
                    .await
                    .unwrap();
                ctx.register_table("delta", theirs).unwrap();
                for f in filters {
                    let expected = query(
                        &ctx,
                        &format!(
                            "SELECT * EXCLUDE ({PARTITION_COLUMN}) FROM delta {f} ORDER BY id"
                        ),
                    )
                    .await;
                    let got = query(&ctx, &format!("SELECT * FROM listed {f} ORDER BY id")).await;
                    assert_eq!(got, expected, "version {version}, `{f}`");
                }
            }
            // Bounds skip files: of the last version's four files (one a day, two on the
            // third), a filter on the third day's timestamps keeps just those two.
            let ctx = super::super::session::new_context();
            let last = writes.len() as u64 - 1;
            let listed = provider(&tables, &ctx, &at, last, None)
                .await
                .unwrap()
                .unwrap();
            let any: &dyn std::any::Any = listed.as_ref();
            let listed = any.downcast_ref::<Listed>().unwrap();
            let state = ctx.state();
            let df_schema = DFSchema::try_from(listed.schema.as_ref().clone()).unwrap();
            let expr = state
                .create_logical_expr("ts >= TIMESTAMP '2024-01-03T00:00:00Z'", &df_schema)
                .unwrap();
            let kept = listed.kept(&state, &[expr]);
            assert_eq!(kept.len(), 4);
            assert_eq!(kept.iter().filter(|k| **k).count(), 2, "{kept:?}");
            // Some partitions: only their files.
            let keys = BTreeSet::from(["2024-01-02".to_string()]);
            let ctx = super::super::session::new_context();
            let some = provider(&tables, &ctx, &at, last, Some(&keys))
                .await
                .unwrap()
                .unwrap();
            ctx.register_table("some", some).unwrap();
            assert!(query(&ctx, "SELECT id FROM some").await.contains("| 7  |"));
            assert_eq!(
                query(&ctx, "SELECT count(*) AS n FROM some").await,
                query(&ctx, "SELECT 1 AS n").await
            );
        });
    }
}
