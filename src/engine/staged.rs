//! Files a remote engine staged for one batch: listed, checked, measured, turned into Delta
//! `add` actions, or deleted.
//!
//! A remote batch writes Parquet, partitioned Hive-style by [`PARTITION_COLUMN`] when the
//! table is time-partitioned, under `<table>/staging-<id>/` (a name that starts with neither
//! `_` nor `.`, so Delta readers and Spark's listing treat it as data, and the janitor finds
//! orphans by name).
//!
//! Invariants:
//! - Only objects ending in `.parquet` whose name starts with neither `_` nor `.` are data
//!   (Spark also writes `_SUCCESS` markers and `.crc` side files).
//! - Every data file of a time-partitioned batch sits in exactly one `PARTITION_COLUMN=value`
//!   directory. A value the batch's window allows is kept; the [`OUTSIDE`] value holds the rows
//!   the query returned outside the window (counted, then deleted); any other value, or a file
//!   outside the layout, refuses the whole batch: the engine wrote where it must not.
//! - Rows, checksum and statistics come from reading every kept file back here, through the
//!   same Arrow decoding as the local engine's rows, so a table built remotely and the same
//!   table built locally reconcile as equal.
//! - An `add` path is the object's key relative to the table root, percent-encoded the way
//!   the Delta log stores paths (delta-rs decodes it once back into the key).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::kernel::Add;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::rows::plain_type;
use super::{Checksum, Location, PARTITION_COLUMN};
use crate::error::{Diagnostic, Error, Result};

/// The partition value a remote batch gives rows outside its window.
pub const OUTSIDE: &str = "__outside__";

/// The name prefix of staging directories.
pub const STAGING_PREFIX: &str = "staging-";

/// The staging directory of one attempt at a batch of transaction `app_id`.
pub fn staging_name(app_id: &str) -> String {
    let h = blake3::hash(app_id.as_bytes()).to_hex();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{STAGING_PREFIX}{}-{}", &h[..16], &nonce[..12])
}

/// One staged data file, read back.
pub struct File {
    /// The `add` action committing it.
    pub add: Add,
    /// Its path as the engine reads it.
    pub url: String,
}

/// What a staging directory holds, checked and measured.
#[derive(Default)]
pub struct Staged {
    /// Files to commit.
    pub files: Vec<File>,
    /// Rows written outside the window (in [`OUTSIDE`] files, not committed).
    pub dropped: u64,
    /// Rows and checksum of the files to commit.
    pub sum: Checksum,
    /// The files' schema in plain Delta types (`None`: no file).
    pub schema: Option<SchemaRef>,
    /// Bytes of the files to commit.
    pub bytes: u64,
}

/// List, check and read back the staging directory `dir` of the table at `at`; `allowed` are
/// the window's partition values (`None`: an unpartitioned table).
pub async fn read(at: &Location, dir: &str, allowed: Option<&BTreeSet<String>>) -> Result<Staged> {
    let (store, root) = super::location::store_of(at)?;
    let prefix = Path::parse(format!("{root}/{dir}"))
        .map_err(|e| Error::Bug(format!("staging path {dir}: {e}")))?;
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.map_err(|e| {
        Error::transient(Diagnostic::error(format!("cannot list `{at}{dir}`")).caused_by(e))
    })?;
    let mut staged = Staged::default();
    let mut sorted: Vec<_> = listed.into_iter().collect();
    sorted.sort_by(|a, b| a.location.cmp(&b.location));
    for meta in sorted {
        let Some(rel) = meta
            .location
            .as_ref()
            .strip_prefix(&format!("{}/", prefix.as_ref()))
            .map(str::to_string)
        else {
            continue;
        };
        if !is_data(&rel) {
            continue;
        }
        let dirs: Vec<&str> = rel.split('/').collect();
        let key = match allowed {
            None => {
                if dirs.len() != 1 {
                    return Err(outside(
                        at,
                        &rel,
                        "a partition directory in an unpartitioned table",
                    ));
                }
                None
            }
            Some(allowed) => {
                let value = match dirs.as_slice() {
                    [d, _] => d
                        .strip_prefix(&format!("{PARTITION_COLUMN}="))
                        .map(unescape),
                    _ => None,
                };
                let Some(value) = value else {
                    return Err(outside(at, &rel, "no partition directory"));
                };
                if value != OUTSIDE && !allowed.contains(&value) {
                    return Err(outside(at, &rel, &format!("partition `{value}`")));
                }
                Some(value)
            }
        };
        let data = store
            .get(&meta.location)
            .await
            .map_err(|e| read_failed(at, &rel, e))?
            .bytes()
            .await
            .map_err(|e| read_failed(at, &rel, e))?;
        let rows = decode(data, at, &rel)?;
        let n: u64 = rows.iter().map(|b| b.num_rows() as u64).sum();
        if key.as_deref() == Some(OUTSIDE) {
            staged.dropped += n;
            continue;
        }
        if let Some(b) = rows.first() {
            let plain = plain_schema(&b.schema());
            match &staged.schema {
                Some(s) if !same_columns(s, &plain) => {
                    return Err(Diagnostic::error(format!(
                        "the engine staged files of different schemas for one batch of `{at}`"
                    ))
                    .caused_by(format!("{rel}: {plain:?}"))
                    .into());
                }
                Some(_) => {}
                None => staged.schema = Some(plain),
            }
        }
        staged.sum.add(&rows, &[PARTITION_COLUMN])?;
        let size = meta.size;
        staged.bytes += size;
        let rel_to_table = format!("{dir}/{rel}");
        staged.files.push(File {
            add: add(&rel_to_table, key.as_deref(), size, &rows)?,
            url: at.engine_path(&rel_to_table),
        });
    }
    Ok(staged)
}

/// Delete the staging directory `dir` of the table at `at` (best effort: an orphan is the
/// janitor's).
pub async fn remove(at: &Location, dir: &str) {
    if let Some(local) = at.local_path() {
        let _ = std::fs::remove_dir_all(local.join(dir));
        return;
    }
    if let Some((store, _, listed)) = listing(at, dir).await {
        for p in listed {
            let _ = store.delete(&p).await;
        }
    }
}

/// The store of `at`, the path of its staging directory `dir`, and every object in it; `None`
/// when they cannot be had (best-effort callers give up).
async fn listing(at: &Location, dir: &str) -> Option<(Arc<dyn ObjectStore>, Path, Vec<Path>)> {
    let (store, root) = super::location::store_of(at).ok()?;
    let prefix = Path::parse(format!("{root}/{dir}")).ok()?;
    let listed = store
        .list(Some(&prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .ok()?;
    Some((store, prefix, listed))
}

/// Delete what a committed staging directory `dir` holds besides its committed files: the
/// rows outside the window and the engine's markers (best effort).
pub async fn tidy(at: &Location, dir: &str) {
    let Some((store, prefix, listed)) = listing(at, dir).await else {
        return;
    };
    let outside = format!("{PARTITION_COLUMN}={OUTSIDE}/");
    for p in listed {
        let rel = p.as_ref().strip_prefix(prefix.as_ref()).unwrap_or_default();
        if !is_data(rel.trim_start_matches('/')) || rel.contains(&outside) {
            let _ = store.delete(&p).await;
        }
    }
    if let Some(local) = at.local_path() {
        let _ = std::fs::remove_dir_all(local.join(dir).join(outside.trim_end_matches('/')));
    }
}

/// Whether the staged object at `rel` is a data file (see the module invariants).
fn is_data(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or_default();
    name.ends_with(".parquet") && !name.starts_with('_') && !name.starts_with('.')
}

/// Delete the staging directories of the table at `at` that no active file lies in and that
/// nothing was written to for an hour (an attempt may still be running); returns how many
/// files are (or would be) deleted.
pub async fn clean_orphans(at: &Location, live: &BTreeSet<String>, dry_run: bool) -> Result<u64> {
    let (store, root) = super::location::store_of(at)?;
    let failed = |e: object_store::Error| {
        Error::transient(Diagnostic::error(format!("cannot list `{at}`")).caused_by(e))
    };
    let listed = store
        .list_with_delimiter(Some(&root))
        .await
        .map_err(failed)?;
    let cutoff = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut deleted = 0;
    for dir in listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .filter(|d| d.starts_with(STAGING_PREFIX) && !live.contains(d))
    {
        let prefix = Path::parse(format!("{root}/{dir}"))
            .map_err(|e| Error::Bug(format!("staging path {dir}: {e}")))?;
        let objects: Vec<_> = store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(failed)?;
        if objects.iter().any(|o| o.last_modified > cutoff) {
            continue;
        }
        deleted += objects.len() as u64;
        if !dry_run {
            remove(at, &dir).await;
        }
    }
    Ok(deleted)
}

fn outside(at: &Location, rel: &str, what: &str) -> Error {
    Diagnostic::error(format!(
        "the engine wrote rows where this batch may not write ({what}); nothing was committed to `{at}`"
    ))
    .caused_by(format!("staged file `{rel}`"))
    .hint("a Spark engine must write only the Parquet files tidemark asks for; check the server's version and configuration")
    .into()
}

fn read_failed(at: &Location, rel: &str, e: object_store::Error) -> Error {
    Error::transient(
        Diagnostic::error(format!("cannot read the staged file `{at}{rel}`")).caused_by(e),
    )
}

fn decode(data: Bytes, at: &Location, rel: &str) -> Result<Vec<RecordBatch>> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::from(
            Diagnostic::error(format!(
                "the engine staged an unreadable Parquet file in `{at}`"
            ))
            .caused_by(format!("{rel}: {e}")),
        )
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(data)
        .and_then(|b| b.build())
        .map_err(|e| bad(&e))?;
    let rows = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    super::rows::plain_types(rows)
}

/// `schema` in plain Delta types, every column nullable (a Delta table's columns are).
pub fn plain_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                datafusion::arrow::datatypes::Field::new(f.name(), plain_type(f.data_type()), true)
            })
            .collect::<Vec<_>>(),
    ))
}

fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// `%XX` sequences of a Hive partition directory value decoded.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `add` of the staged file at `rel` (relative to the table root) holding `rows`, with
/// Delta statistics: row count, null counts, and minimum and maximum of integer, date and
/// string columns (other types carry none, which readers take as "unknown").
fn add(rel: &str, key: Option<&str>, size: u64, rows: &[RecordBatch]) -> Result<Add> {
    let mut null_count = serde_json::Map::new();
    let mut min_values = serde_json::Map::new();
    let mut max_values = serde_json::Map::new();
    if let Some(first) = rows.first() {
        for (i, f) in first.schema().fields().iter().enumerate() {
            let columns: Vec<ArrayRef> = rows.iter().map(|b| b.column(i).clone()).collect();
            let nulls: usize = columns.iter().map(|c| c.null_count()).sum();
            null_count.insert(f.name().clone(), nulls.into());
            if let Some((lo, hi)) = min_max(f.data_type(), &columns) {
                min_values.insert(f.name().clone(), lo);
                max_values.insert(f.name().clone(), hi);
            }
        }
    }
    let n: usize = rows.iter().map(RecordBatch::num_rows).sum();
    let stats = serde_json::json!({
        "numRecords": n,
        "minValues": min_values,
        "maxValues": max_values,
        "nullCount": null_count,
    });
    Ok(Add {
        // The key itself: the log writer escapes it (delta-rs's `Add` serializes its path
        // URL-encoded, as the Delta protocol stores it, and readers decode it back).
        path: rel.to_string(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        partition_values: key
            .map(|k| HashMap::from([(PARTITION_COLUMN.to_string(), Some(k.to_string()))]))
            .unwrap_or_default(),
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(stats.to_string()),
        ..Default::default()
    })
}

/// Minimum and maximum of the non-null values of `columns` (all of type `t`) as Delta writes
/// them in statistics, for the types handled exactly; `None` otherwise or when all are null.
fn min_max(t: &DataType, columns: &[ArrayRef]) -> Option<(serde_json::Value, serde_json::Value)> {
    use datafusion::arrow::array::{AsArray, Date32Array};
    use datafusion::arrow::compute::{max, max_string, min, min_string};
    use datafusion::arrow::datatypes::{Int8Type, Int16Type, Int32Type, Int64Type};
    let fold =
        |vals: Vec<(serde_json::Value, serde_json::Value)>,
         cmp: &dyn Fn(&serde_json::Value, &serde_json::Value) -> std::cmp::Ordering| {
            let lo = vals.iter().map(|v| &v.0).min_by(|a, b| cmp(a, b))?.clone();
            let hi = vals.iter().map(|v| &v.1).max_by(|a, b| cmp(a, b))?.clone();
            Some((lo, hi))
        };
    let num = |a: &serde_json::Value, b: &serde_json::Value| {
        a.as_i64()
            .unwrap_or_default()
            .cmp(&b.as_i64().unwrap_or_default())
    };
    let text = |a: &serde_json::Value, b: &serde_json::Value| {
        a.as_str()
            .unwrap_or_default()
            .cmp(b.as_str().unwrap_or_default())
    };
    macro_rules! ints {
        ($ty:ty) => {{
            let vals: Vec<_> = columns
                .iter()
                .filter_map(|c| {
                    let a = c.as_primitive::<$ty>();
                    Some((
                        serde_json::json!(i64::from(min(a)?)),
                        serde_json::json!(i64::from(max(a)?)),
                    ))
                })
                .collect();
            fold(vals, &num)
        }};
    }
    match t {
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::Date32 => {
            let day = |d: i32| {
                chrono::DateTime::from_timestamp(i64::from(d) * 86_400, 0)
                    .map(|t| t.format("%Y-%m-%d").to_string())
            };
            let vals: Vec<_> = columns
                .iter()
                .filter_map(|c| {
                    let a: &Date32Array = c.as_primitive();
                    Some((
                        serde_json::json!(day(min(a)?)?),
                        serde_json::json!(day(max(a)?)?),
                    ))
                })
                .collect();
            fold(vals, &text)
        }
        DataType::Utf8 => {
            let vals: Vec<_> = columns
                .iter()
                .filter_map(|c| {
                    let a = c.as_string::<i32>();
                    Some((
                        serde_json::json!(min_string(a)?),
                        serde_json::json!(max_string(a)?),
                    ))
                })
                .collect();
            fold(vals, &text)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_values_are_unescaped_and_staging_names_unique() {
        assert_eq!(unescape("2024-01-01T05%3A00"), "2024-01-01T05:00");
        assert_eq!(unescape("2024-01-01"), "2024-01-01");
        assert_eq!(unescape("50%"), "50%");
        let a = staging_name("tidemark:t:w");
        let b = staging_name("tidemark:t:w");
        assert!(
            a.starts_with(STAGING_PREFIX) && a != b && a[..24] == b[..24],
            "{a} {b}"
        );
    }

    #[test]
    fn statistics_of_staged_rows() {
        use datafusion::arrow::array::{Date32Array, Int64Array, StringArray};
        use datafusion::arrow::datatypes::Field;
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("d", DataType::Date32, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let b = |n: Vec<Option<i64>>, d: Vec<i32>, s: Vec<&str>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(n)),
                    Arc::new(Date32Array::from(d)),
                    Arc::new(StringArray::from(s)),
                ],
            )
            .unwrap()
        };
        let rows = vec![
            b(vec![Some(5), None], vec![19723, 19724], vec!["b", "a"]),
            b(vec![Some(-2), Some(9)], vec![19725, 19722], vec!["c", "bb"]),
        ];
        let add = add("staging-x/f.parquet", Some("2024-01-01"), 10, &rows).unwrap();
        let stats: serde_json::Value = serde_json::from_str(add.stats.as_deref().unwrap()).unwrap();
        assert_eq!(
            stats,
            serde_json::json!({
                "numRecords": 4,
                "minValues": {"n": -2, "d": "2023-12-31", "s": "a"},
                "maxValues": {"n": 9, "d": "2024-01-03", "s": "c"},
                "nullCount": {"n": 1, "d": 0, "s": 0},
            })
        );
        assert_eq!(
            add.partition_values[PARTITION_COLUMN].as_deref(),
            Some("2024-01-01")
        );
    }

    fn write_parquet(path: &std::path::Path, n: i64) {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::Field;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..n))],
        )
        .unwrap();
        let f = std::fs::File::create(path).unwrap();
        let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    /// What an engine staged is checked before anything is committed: rows outside the window
    /// are counted and left out, a file in a partition the window does not hold (or outside the
    /// layout) refuses the batch, markers are ignored, and a committed directory is tidied.
    #[tokio::test]
    async fn staged_files_are_checked_against_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let at = Location::local(dir.path()).unwrap();
        let stage = dir.path().join("staging-a");
        write_parquet(
            &stage.join(format!("{PARTITION_COLUMN}=2024-01-01/part-0.parquet")),
            3,
        );
        write_parquet(
            &stage.join(format!("{PARTITION_COLUMN}=2024-01-02/part-0.parquet")),
            2,
        );
        write_parquet(
            &stage.join(format!("{PARTITION_COLUMN}={OUTSIDE}/part-0.parquet")),
            4,
        );
        std::fs::write(stage.join("_SUCCESS"), "").unwrap();
        std::fs::write(
            stage.join(format!("{PARTITION_COLUMN}=2024-01-01/.part-0.parquet.crc")),
            "x",
        )
        .unwrap();
        let window: BTreeSet<String> = ["2024-01-01", "2024-01-02", "2024-01-03"]
            .map(String::from)
            .into();
        let staged = read(&at, "staging-a", Some(&window)).await.unwrap();
        assert_eq!(
            (staged.sum.rows, staged.dropped, staged.files.len()),
            (5, 4, 2)
        );
        assert_eq!(
            staged.files[0].add.path,
            format!("staging-a/{PARTITION_COLUMN}=2024-01-01/part-0.parquet")
        );
        assert_eq!(
            staged.files[1].add.partition_values[PARTITION_COLUMN].as_deref(),
            Some("2024-01-02")
        );
        tidy(&at, "staging-a").await;
        assert!(!stage.join(format!("{PARTITION_COLUMN}={OUTSIDE}")).exists());
        assert!(!stage.join("_SUCCESS").exists());
        assert!(
            stage
                .join(format!("{PARTITION_COLUMN}=2024-01-02/part-0.parquet"))
                .exists()
        );

        // A partition the window does not hold: refused, whatever else is right.
        write_parquet(
            &stage.join(format!("{PARTITION_COLUMN}=2024-01-09/part-0.parquet")),
            1,
        );
        let err = read(&at, "staging-a", Some(&window)).await.err().unwrap();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("partition `2024-01-09`"), "{err}");
        // A file outside the partition layout of a partitioned table.
        let other = dir.path().join("staging-b");
        write_parquet(&other.join("part-0.parquet"), 1);
        let err = read(&at, "staging-b", Some(&window)).await.err().unwrap();
        assert!(err.to_string().contains("no partition directory"), "{err}");
        // ...which is how an unpartitioned table's files are laid out.
        let staged = read(&at, "staging-b", None).await.unwrap();
        assert_eq!(staged.sum.rows, 1);
        assert!(staged.files[0].add.partition_values.is_empty());

        // Orphans: staging directories no version uses, once nothing was written for an hour.
        let live = BTreeSet::from(["staging-a".to_string()]);
        assert_eq!(
            clean_orphans(&at, &live, false).await.unwrap(),
            0,
            "too recent"
        );
        remove(&at, "staging-b").await;
        assert!(!other.exists());
    }
}
