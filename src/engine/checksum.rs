//! Order-independent checksums of rows.
//!
//! Invariant: the checksum of a set of rows does not depend on their order or on how they are
//! split into record batches: each row is encoded with Arrow's row format, hashed with blake3,
//! and the 64-bit hash prefixes are summed (wrapping). Duplicated rows count twice.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};

use crate::error::{Error, Result};

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
            .map(|&i| SortField::new(first.schema().field(i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields)
            .map_err(|e| Error::Bug(format!("checksum row converter: {e}")))?;
        for b in batches {
            let cols: Vec<_> = keep.iter().map(|&i| b.column(i).clone()).collect();
            let rows = converter
                .convert_columns(&cols)
                .map_err(|e| Error::Bug(format!("checksum rows: {e}")))?;
            for row in rows.iter() {
                let h = blake3::hash(row.as_ref());
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&h.as_bytes()[..8]);
                self.sum = self.sum.wrapping_add(u64::from_le_bytes(prefix));
                self.rows += 1;
            }
        }
        Ok(())
    }

    /// Hex form, e.g. for reports.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.sum)
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
    }
}
