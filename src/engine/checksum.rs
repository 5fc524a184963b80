//! Order-independent checksums of rows.
//!
//! Invariant: the checksum of a set of rows does not depend on their order or on how they are
//! split into record batches: each row is encoded with Arrow's row format, hashed with XXH64,
//! and the hashes are summed (wrapping). Duplicated rows count twice.
//! - The hex form names the algorithm (`x64:` + 16 hex digits). Checksums recorded by earlier
//!   builds (16 bare hex digits, blake3 prefixes) are not comparable: [`Checksum::from_hex`]
//!   refuses them, and reconciliation compares only their row counts.
//! - Nor on the Arrow types a reader chooses for the same values: columns are cast to one
//!   canonical type first (string views and large strings to strings, timestamps to
//!   microseconds without time zone), so rows hashed in memory before a commit and the same rows
//!   read back from Parquet give the same checksum.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};

/// The type a column is hashed as (see the module invariants).
fn canonical(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Dictionary(_, v) => canonical(v),
        other => other.clone(),
    }
}

/// The columns `keep` of a batch, cast to their canonical types.
fn columns(b: &RecordBatch, keep: &[usize]) -> Result<Vec<ArrayRef>> {
    keep.iter()
        .map(|&i| {
            let c = b.column(i);
            let t = canonical(c.data_type());
            if &t == c.data_type() {
                Ok(c.clone())
            } else {
                cast(c, &t).map_err(|e| Error::Bug(format!("checksum cast: {e}")))
            }
        })
        .collect()
}

use crate::error::{Error, Result};

/// The algorithm tag of [`Checksum::hex`].
const PREFIX: &str = "x64:";

/// A running checksum over rows of one schema.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    /// Rows seen.
    pub rows: u64,
    sum: u64,
}

impl Checksum {
    /// Add every row of `batches` (all of one schema); columns named in `skip` are left out.
    pub fn add(&mut self, batches: &[RecordBatch], skip: &[&str]) -> Result<()> {
        let Some(first) = batches.first() else {
            return Ok(());
        };
        let keep: Vec<usize> = first
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !skip.contains(&f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let fields = keep
            .iter()
            .map(|&i| SortField::new(canonical(first.schema().field(i).data_type())))
            .collect();
        let converter = RowConverter::new(fields)
            .map_err(|e| Error::Bug(format!("checksum row converter: {e}")))?;
        for b in batches {
            let cols = columns(b, &keep)?;
            let rows = converter
                .convert_columns(&cols)
                .map_err(|e| Error::Bug(format!("checksum rows: {e}")))?;
            for row in rows.iter() {
                self.add_row(row.as_ref());
            }
        }
        Ok(())
    }

    /// Checksums of `batches` per value of the string column `group` (left out of the rows'
    /// hashes, so each group's checksum equals [`Checksum::add`] over its rows without it).
    pub fn grouped(
        batches: &[RecordBatch],
        group: &str,
    ) -> Result<std::collections::BTreeMap<String, Checksum>> {
        use datafusion::arrow::array::{Array, AsArray};
        let mut out: std::collections::BTreeMap<String, Checksum> = Default::default();
        let Some(first) = batches.first() else {
            return Ok(out);
        };
        let schema = first.schema();
        let gi = schema
            .index_of(group)
            .map_err(|e| Error::Bug(format!("checksum group column: {e}")))?;
        let keep: Vec<usize> = (0..schema.fields().len()).filter(|&i| i != gi).collect();
        let fields = keep
            .iter()
            .map(|&i| SortField::new(canonical(schema.field(i).data_type())))
            .collect();
        let converter = RowConverter::new(fields)
            .map_err(|e| Error::Bug(format!("checksum row converter: {e}")))?;
        for b in batches {
            let keys = datafusion::arrow::compute::cast(
                b.column(gi),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .map_err(|e| Error::Bug(format!("checksum group: {e}")))?;
            let keys = keys.as_string::<i32>();
            let cols = columns(b, &keep)?;
            let rows = converter
                .convert_columns(&cols)
                .map_err(|e| Error::Bug(format!("checksum rows: {e}")))?;
            for (i, row) in rows.iter().enumerate() {
                let key = if keys.is_null(i) { "" } else { keys.value(i) };
                let c = out.entry(key.to_string()).or_default();
                c.add_row(row.as_ref());
            }
        }
        Ok(out)
    }

    fn add_row(&mut self, row: &[u8]) {
        let h = twox_hash::XxHash64::oneshot(0, row);
        self.sum = self.sum.wrapping_add(h);
        self.rows += 1;
    }

    /// The checksum of the union of two row sets.
    pub fn merge(&mut self, other: &Checksum) {
        self.sum = self.sum.wrapping_add(other.sum);
        self.rows += other.rows;
    }

    /// A recorded checksum (`rows` and [`Checksum::hex`]); `None` if the hex is malformed or
    /// made by another algorithm (see [`Checksum::comparable`]).
    pub fn from_hex(rows: u64, hex: &str) -> Option<Checksum> {
        let digits = hex.strip_prefix(PREFIX)?;
        u64::from_str_radix(digits, 16)
            .ok()
            .map(|sum| Checksum { rows, sum })
    }

    /// Was `hex` made by this algorithm? (Earlier builds wrote bare hex of another hash.)
    pub fn comparable(hex: &str) -> bool {
        hex.starts_with(PREFIX)
    }

    /// Hex form with the algorithm's prefix, as recorded and reported.
    pub fn hex(&self) -> String {
        format!("{PREFIX}{:016x}", self.sum)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(ids: &[i64], names: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn order_and_batching_do_not_matter_but_content_does() {
        let mut a = Checksum::default();
        a.add(&[batch(&[1, 2, 3], &["a", "b", "c"])], &[]).unwrap();
        let mut b = Checksum::default();
        b.add(&[batch(&[3], &["c"]), batch(&[2, 1], &["b", "a"])], &[])
            .unwrap();
        assert_eq!(a, b);
        let mut c = Checksum::default();
        c.add(&[batch(&[1, 2, 3], &["a", "b", "x"])], &[]).unwrap();
        assert_ne!(a.hex(), c.hex());
        let mut d = Checksum::default();
        d.add(&[batch(&[1, 2, 3], &["a", "b", "x"])], &["name"])
            .unwrap();
        let mut e = Checksum::default();
        e.add(&[batch(&[1, 2, 3], &["a", "b", "c"])], &["name"])
            .unwrap();
        assert_eq!(d, e);
        assert_eq!(a.rows, 3);
        // Per-group checksums merge into the whole's.
        let g = Checksum::grouped(&[batch(&[1, 2, 3], &["a", "b", "a"])], "name").unwrap();
        let mut merged = Checksum::default();
        for c in g.values() {
            merged.merge(c);
        }
        let mut whole = Checksum::default();
        whole
            .add(&[batch(&[1, 2, 3], &["a", "b", "a"])], &["name"])
            .unwrap();
        assert_eq!(merged, whole);
        assert_eq!(g["a"].rows, 2);
        assert_eq!(Checksum::from_hex(3, &whole.hex()), Some(whole));
    }

    #[test]
    fn the_readers_choice_of_string_type_does_not_matter() {
        use datafusion::arrow::array::StringViewArray;
        let plain = batch(&[1, 2], &["a", "b"]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8View, false),
        ]));
        let view = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![2, 1])),
                Arc::new(StringViewArray::from(vec!["b", "a"])),
            ],
        )
        .unwrap();
        let (mut a, mut b) = (Checksum::default(), Checksum::default());
        a.add(&[plain], &[]).unwrap();
        b.add(&[view], &[]).unwrap();
        assert_eq!(a, b);
    }
}
