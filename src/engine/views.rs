//! The inputs of a remote batch as temporary views of its Spark session.
//!
//! Invariants:
//! - A Delta table (a model's, or a Delta source) is read at exactly the version the job pins,
//!   as the explicit list of the Parquet files active at that version, with the DDL schema of
//!   the table's data columns; partition columns other than tidemark's own are added back as
//!   typed literals, one group of files per partition value. The engine needs no Delta reader
//!   and does no time travel.
//! - Only tables whose data files are plain Parquet are read this way (reader version 1, or 3
//!   with features such as `timestampNtz` only: no column mapping, no deletion vectors);
//!   others are refused rather than read wrong.
//! - [`PARTITION_COLUMN`] is never visible to SQL (it is not in the data files).
//! - SQL reaches the views through [`rename`]: each input's logical name is replaced by its
//!   view's name, so a query can read nothing but the job's inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::TryStreamExt;

use super::remote::SparkEngine;
use super::spark::Session;
use super::{Input, Location, PARTITION_COLUMN, delta, failed};
use crate::error::{Diagnostic, Error, Result};
use crate::project::SourceFormat;
use crate::sql::Dialect;

/// Delta reader features under which data files are still plain Parquet (a type, or rules for
/// writers and the log only).
const PLAIN_READER_FEATURES: [&str; 3] = ["timestampNtz", "vacuumProtocolCheck", "v2Checkpoint"];

/// `sql` with the job's input names renamed to their views.
pub fn rename(sql: &str, names: &BTreeMap<String, String>) -> Result<String> {
    crate::sql::rename_tables(sql, Dialect::Spark, &|n| names.get(n).cloned()).map_err(Error::from)
}

/// Register every input as a view of the session; returns logical name → view name.
pub async fn register(
    e: &SparkEngine,
    s: &Session,
    inputs: &[Input],
) -> Result<BTreeMap<String, String>> {
    let mut names = BTreeMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let name = input.name();
        let view = format!("__tm_{i}_{}", name.as_str().replace('.', "_"));
        match input {
            Input::Table { table, version, .. } => {
                let at = e.table_location(table);
                files_view(s, &view, &at, *version, None).await?;
            }
            Input::Partitions {
                table,
                version,
                keys,
                ..
            } => {
                let at = e.table_location(table);
                files_view(s, &view, &at, Some(*version), Some(keys)).await?;
            }
            Input::View { sql, .. } => s.view_of_sql(&view, &rename(sql, &names)?).await?,
            Input::Empty { columns, .. } => {
                let typed = columns
                    .iter()
                    .map(|(c, t)| (c.as_str(), spark_type_name(t)));
                s.view_of_sql(&view, &no_rows(typed)).await?
            }
            Input::Source {
                path,
                format,
                columns,
                version,
                ..
            } => {
                let raw = format!("{view}_raw");
                match format {
                    SourceFormat::Delta => {
                        files_view(s, &raw, &Location::parse(path)?, *version, None).await?
                    }
                    SourceFormat::Parquet => {
                        s.view_of_files(&raw, "parquet", vec![path.clone()], None, &[])
                            .await?
                    }
                    SourceFormat::Csv => {
                        s.view_of_files(
                            &raw,
                            "csv",
                            vec![path.clone()],
                            None,
                            &[("header", "true")],
                        )
                        .await?
                    }
                }
                let projection = if columns.is_empty() {
                    "*".to_string()
                } else {
                    columns
                        .iter()
                        .map(|(c, t)| {
                            let c = c.replace('`', "``");
                            format!("CAST(`{c}` AS {}) AS `{c}`", spark_type_name(t))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                s.view_of_sql(&view, &format!("SELECT {projection} FROM {raw}"))
                    .await?;
            }
        }
        names.insert(name.as_str().to_string(), view);
    }
    Ok(names)
}

/// A declared source column type (DataFusion SQL) as Spark names it.
fn spark_type_name(t: &str) -> String {
    let upper = t.to_ascii_uppercase();
    match upper.as_str() {
        "VARCHAR" | "TEXT" | "CHAR" => "STRING".to_string(),
        "REAL" => "FLOAT".to_string(),
        _ => upper,
    }
}

/// Register `view` as the Delta table at `at` at `version` (`None`: latest): its active files
/// read as Parquet, partition columns other than [`PARTITION_COLUMN`] added as literals;
/// `only`: just the files of those partitions (of a table partitioned by it).
pub async fn files_view(
    s: &Session,
    view: &str,
    at: &Location,
    version: Option<u64>,
    only: Option<&BTreeSet<String>>,
) -> Result<()> {
    let table = match version {
        Some(v) => delta::open_at(at, v).await?,
        None => delta::open(at).await?,
    };
    if table.version().is_none() {
        return Err(Diagnostic::error(format!("`{at}` is not a Delta table"))
            .hint("check the source's `path` and `format` in tidemark.toml")
            .into());
    }
    let snap = table
        .snapshot()
        .map_err(|e| failed("cannot read the table state", e))?;
    // Plain Parquet data files mean the same read directly: reader version 1, or version 3
    // with only features that leave them so (not column mapping or deletion vectors, which
    // change what a data file means).
    let protocol = snap.protocol();
    let blocking: Vec<String> = match protocol.min_reader_version() {
        1 => Vec::new(),
        3 => protocol
            .reader_features()
            .unwrap_or_default()
            .iter()
            .map(|f| f.to_string())
            .filter(|f| !PLAIN_READER_FEATURES.contains(&f.as_str()))
            .collect(),
        v => vec![format!("reader version {v}")],
    };
    if !blocking.is_empty() {
        return Err(Diagnostic::error(format!(
            "the Delta table at `{at}` uses {}, which the Spark engine cannot read as plain Parquet files",
            blocking.join(", ")
        ))
        .note("column mapping and deletion vectors change what a data file means")
        .hint("read it through a table without those features (e.g. a copy made with `REORG TABLE … APPLY (PURGE)` and column mapping off), or use the built-in engine")
        .into());
    }
    let schema = snap.snapshot().arrow_schema();
    let partition_columns: Vec<String> = snap.metadata().partition_columns().to_vec();
    let data = Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| !partition_columns.contains(f.name()))
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    );
    let mut files: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(|e| failed("reading the table's files", e))?;
    if let Some(keys) = only.filter(|_| partition_columns.iter().any(|c| c == PARTITION_COLUMN)) {
        files.retain(|f| {
            f.partition_values_map()
                .get(PARTITION_COLUMN)
                .cloned()
                .flatten()
                .is_some_and(|v| keys.contains(&v))
        });
    }
    let shown: Vec<&Field> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != PARTITION_COLUMN)
        .map(|f| f.as_ref())
        .collect();
    if files.is_empty() {
        let visible = Schema::new(shown.into_iter().cloned().collect::<Vec<_>>());
        return s
            .view_of_sql(view, &empty_select(&Arc::new(visible))?)
            .await;
    }
    let literal_columns: Vec<&String> = partition_columns
        .iter()
        .filter(|c| c.as_str() != PARTITION_COLUMN)
        .collect();
    let mut groups: BTreeMap<Vec<Option<String>>, Vec<String>> = BTreeMap::new();
    for f in &files {
        let values = f.partition_values_map();
        let key = literal_columns
            .iter()
            .map(|c| values.get(c.as_str()).cloned().flatten())
            .collect();
        groups
            .entry(key)
            .or_default()
            .push(at.engine_path(&f.path()));
    }
    let data = Arc::new(data);
    if literal_columns.is_empty() {
        let urls = groups.into_values().flatten().collect();
        return s
            .view_of_files(view, "parquet", urls, ddl(&data), &[])
            .await;
    }
    let mut parts = Vec::new();
    for (j, (values, urls)) in groups.into_iter().enumerate() {
        let raw = format!("{view}_g{j}");
        s.view_of_files(&raw, "parquet", urls, ddl(&data), &[])
            .await?;
        let lits = literal_columns
            .iter()
            .zip(&values)
            .map(|(c, v)| {
                let t = schema
                    .field_with_name(c)
                    .ok()
                    .and_then(|f| spark_type(f.data_type()))
                    .unwrap_or_else(|| "STRING".into());
                let v = match v {
                    Some(v) => format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'")),
                    None => "NULL".into(),
                };
                format!("CAST({v} AS {t}) AS `{}`", c.replace('`', "``"))
            })
            .collect::<Vec<_>>()
            .join(", ");
        parts.push(format!("SELECT *, {lits} FROM {raw}"));
    }
    s.view_of_sql(view, &parts.join(" UNION ALL ")).await
}

/// The Spark SQL name of an Arrow type, for the types Delta tables hold.
fn spark_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "STRING".into(),
        DataType::Binary | DataType::BinaryView | DataType::LargeBinary => "BINARY".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, Some(_)) => {
            "TIMESTAMP".into()
        }
        DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, None) => {
            "TIMESTAMP_NTZ".into()
        }
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        _ => return None,
    })
}

/// The DDL schema Spark reads files with (`None`: a type without a plain Spark name; the
/// engine then infers it from the files).
pub fn ddl(schema: &SchemaRef) -> Option<String> {
    schema
        .fields()
        .iter()
        .map(|f| {
            spark_type(f.data_type()).map(|t| format!("`{}` {t}", f.name().replace('`', "``")))
        })
        .collect::<Option<Vec<_>>>()
        .map(|cols| cols.join(", "))
}

/// A query of no rows with `schema`'s columns.
pub fn empty_select(schema: &SchemaRef) -> Result<String> {
    let typed = schema
        .fields()
        .iter()
        .map(|f| {
            let t = spark_type(f.data_type()).ok_or_else(|| {
                Error::from(Diagnostic::error(format!(
                    "the column `{}` has a type ({}) the Spark engine cannot declare",
                    f.name(),
                    f.data_type()
                )))
            })?;
            Ok((f.name().as_str(), t))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(no_rows(typed))
}

/// `SELECT` of no rows with the columns (name, Spark type).
fn no_rows<'a>(columns: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let cols: Vec<String> = columns
        .into_iter()
        .map(|(c, t)| format!("CAST(NULL AS {t}) AS `{}`", c.replace('`', "``")))
        .collect();
    format!("SELECT {} WHERE FALSE", cols.join(", "))
}
