//! Shaping a batch's rows for Delta: the plain types Delta stores, and the split of an
//! incremental batch's rows into its window's partitions.
//!
//! Invariants:
//! - Rows outside the window (or with a NULL time) are dropped and counted, never written.
//! - Rows of one partition come in runs in practice; the partition key is computed once per
//!   run, not per row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::{PARTITION_COLUMN, partition_key};
use crate::error::{Error, Result};
use crate::interval::Interval;

/// The type Delta stores for `t`: string and binary views become plain strings and binaries,
/// nanosecond timestamps become microseconds (Delta's resolution).
pub fn plain_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Timestamp(
            TimeUnit::Nanosecond | TimeUnit::Millisecond | TimeUnit::Second,
            tz,
        ) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
        other => other.clone(),
    }
}

pub fn plain_types(batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .map(|b| {
            let schema = b.schema();
            if schema
                .fields()
                .iter()
                .all(|f| plain_type(f.data_type()) == *f.data_type())
            {
                return Ok(b);
            }
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), plain_type(f.data_type()), f.is_nullable()))
                .collect();
            let columns = b
                .columns()
                .iter()
                .zip(&fields)
                .map(|(c, f)| cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Bug(format!("converting column types: {e}")))?;
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
                .map_err(|e| Error::Bug(format!("converting column types: {e}")))
        })
        .collect()
}

/// Drop rows outside `window` (returning how many) and replace the helper timestamp column
/// `__tidemark_ts` with the partition column.
pub fn split_window(
    batches: Vec<RecordBatch>,
    unit: crate::interval::IntervalUnit,
    window: Interval,
) -> Result<(Vec<RecordBatch>, u64)> {
    let bug = |e: datafusion::arrow::error::ArrowError| Error::Bug(format!("window split: {e}"));
    let mut out = Vec::with_capacity(batches.len());
    let mut dropped = 0u64;
    let (w_start, w_end) = (
        window.start.timestamp_micros(),
        window.end.timestamp_micros(),
    );
    for b in batches {
        let schema = b.schema();
        let Some(ts_idx) = schema
            .fields()
            .iter()
            .position(|f| f.name() == "__tidemark_ts")
        else {
            return Err(Error::Bug("no __tidemark_ts column".into()));
        };
        let ts = cast(
            b.column(ts_idx),
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )
        .map_err(bug)?;
        let ts = ts
            .as_any()
            .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
            .ok_or_else(|| Error::Bug("timestamp cast".into()))?;
        let mut keep = Vec::with_capacity(ts.len());
        let mut keys = datafusion::arrow::array::StringBuilder::with_capacity(ts.len(), 0);
        // Rows of one partition come in runs: its bounds and key are computed once per run.
        let mut current: Option<(i64, i64, String)> = None;
        for i in 0..ts.len() {
            let v = (!ts.is_null(i)).then(|| ts.value(i));
            match v {
                Some(v) if (w_start..w_end).contains(&v) => {
                    let fresh = match &current {
                        Some((s, e, _)) => !(*s..*e).contains(&v),
                        None => true,
                    };
                    if fresh {
                        let t = chrono::DateTime::from_timestamp_micros(v)
                            .ok_or_else(|| Error::Bug(format!("timestamp {v} out of range")))?;
                        let floor = unit.floor(t);
                        current = Some((
                            floor.timestamp_micros(),
                            unit.next(floor).timestamp_micros(),
                            partition_key(unit, floor),
                        ));
                    }
                    keep.push(true);
                    keys.append_option(current.as_ref().map(|c| c.2.as_str()));
                }
                _ => {
                    keep.push(false);
                    keys.append_null();
                    dropped += 1;
                }
            }
        }
        let mut fields: Vec<Field> = Vec::new();
        let mut columns = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if i != ts_idx {
                fields.push(f.as_ref().clone());
                columns.push(b.column(i).clone());
            }
        }
        fields.push(Field::new(PARTITION_COLUMN, DataType::Utf8, true));
        columns.push(Arc::new(keys.finish()));
        let with_key = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(bug)?;
        let filtered = filter_record_batch(&with_key, &BooleanArray::from(keep)).map_err(bug)?;
        if filtered.num_rows() > 0 {
            out.push(filtered);
        }
    }
    Ok((out, dropped))
}

/// An empty batch of a query's columns in their plain Delta types (without the helper
/// `__tidemark_ts`; with the partition column when `partitioned`).
pub(super) fn empty_batch(schema: &Schema, partitioned: bool) -> RecordBatch {
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != "__tidemark_ts")
        .map(|f| Field::new(f.name(), plain_type(f.data_type()), true))
        .collect();
    if partitioned {
        fields.push(Field::new(PARTITION_COLUMN, DataType::Utf8, true));
    }
    RecordBatch::new_empty(Arc::new(Schema::new(fields)))
}

/// Bytes of `b`'s rows in Arrow's memory layout: of its slice of each buffer (a record batch
/// sliced from a larger one shares its buffers, whose whole size
/// `RecordBatch::get_array_memory_size` counts for every slice).
pub(super) fn bytes_of(b: &RecordBatch) -> usize {
    b.columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}
