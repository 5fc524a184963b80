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
use datafusion::arrow::row::{RowConverter, Rows, SortField};

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

/// The Delta `add` tags in which tidemark records the rows and [`Checksum::hex`] of each file
/// it writes (`engine::commit`), read back with the file list (`engine::tables`).
pub const ROWS_TAG: &str = "tidemark.rows";
pub const CHECKSUM_TAG: &str = "tidemark.checksum";

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
        let mut running = Running::new(skip, None);
        for b in batches {
            running.add(b)?;
        }
        self.merge(&running.total);
        Ok(())
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

/// The row encoder of one schema, whose buffers are reused from record batch to record batch.
struct Encoder {
    schema: datafusion::arrow::datatypes::SchemaRef,
    keep: Vec<usize>,
    group: Option<usize>,
    converter: RowConverter,
    rows: Rows,
}

/// A checksum accumulated over the record batches of a stream, one at a time: the total, and
/// per value of a string group column when one is named (left out of the rows' hashes, so
/// each group's checksum equals [`Checksum::add`] over its rows without it). The same rows give
/// the same checksums however they are split into batches and in whatever order they come.
pub struct Running {
    skip: Vec<String>,
    group: Option<String>,
    encoder: Option<Encoder>,
    /// Every row added so far.
    pub total: Checksum,
    /// Per value of the group column (empty without one, or when the rows have no such column;
    /// a null value is the group `""`).
    pub groups: std::collections::BTreeMap<String, Checksum>,
}

impl Running {
    /// Nothing added yet; the columns in `skip` and the `group` column are left out of the rows'
    /// hashes.
    pub fn new(skip: &[&str], group: Option<&str>) -> Running {
        Running {
            skip: skip.iter().map(|s| s.to_string()).collect(),
            group: group.map(str::to_string),
            encoder: None,
            total: Checksum::default(),
            groups: Default::default(),
        }
    }

    /// Make the encoder of `b`'s schema, unless the current one is.
    fn prepare(&mut self, b: &RecordBatch) -> Result<()> {
        let schema = b.schema();
        let stale = self
            .encoder
            .as_ref()
            .is_none_or(|e| !std::sync::Arc::ptr_eq(&e.schema, &schema) && e.schema != schema);
        if stale {
            // Without the group column (an unpartitioned table), only the total is kept.
            let group = self.group.as_ref().and_then(|g| schema.index_of(g).ok());
            let keep: Vec<usize> = schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(i, f)| Some(*i) != group && !self.skip.iter().any(|s| s == f.name()))
                .map(|(i, _)| i)
                .collect();
            let fields = keep
                .iter()
                .map(|&i| SortField::new(canonical(schema.field(i).data_type())))
                .collect();
            let converter = RowConverter::new(fields)
                .map_err(|e| Error::Bug(format!("checksum row converter: {e}")))?;
            let rows = converter.empty_rows(0, 0);
            self.encoder = Some(Encoder {
                schema,
                keep,
                group,
                converter,
                rows,
            });
        }
        Ok(())
    }

    /// Add every row of `b`.
    pub fn add(&mut self, b: &RecordBatch) -> Result<()> {
        use datafusion::arrow::array::{Array, AsArray};
        self.prepare(b)?;
        let Running {
            encoder: Some(e),
            total,
            groups,
            ..
        } = self
        else {
            return Err(Error::Bug("checksum encoder missing".into()));
        };
        let cols = columns(b, &e.keep)?;
        e.rows.clear();
        e.converter
            .append(&mut e.rows, &cols)
            .map_err(|e| Error::Bug(format!("checksum rows: {e}")))?;
        let Some(gi) = e.group else {
            for row in e.rows.iter() {
                total.add_row(row.as_ref());
            }
            return Ok(());
        };
        let keys = cast(b.column(gi), &DataType::Utf8)
            .map_err(|e| Error::Bug(format!("checksum group: {e}")))?;
        let keys = keys.as_string::<i32>();
        // Rows of one group mostly come together: the group's entry is looked up once per run.
        let mut current: Option<(&str, Checksum)> = None;
        for (i, row) in e.rows.iter().enumerate() {
            let key = if keys.is_null(i) { "" } else { keys.value(i) };
            match &mut current {
                Some((k, c)) if *k == key => c.add_row(row.as_ref()),
                _ => {
                    if let Some((k, c)) = current.take() {
                        flush(groups, total, k, &c);
                    }
                    let mut c = Checksum::default();
                    c.add_row(row.as_ref());
                    current = Some((key, c));
                }
            }
        }
        if let Some((k, c)) = current {
            flush(groups, total, k, &c);
        }
        Ok(())
    }
}

/// Merge a run of rows of group `key` into its group and the total.
fn flush(
    groups: &mut std::collections::BTreeMap<String, Checksum>,
    total: &mut Checksum,
    key: &str,
    c: &Checksum,
) {
    total.merge(c);
    match groups.get_mut(key) {
        Some(g) => g.merge(c),
        None => {
            groups.insert(key.to_string(), *c);
        }
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
        let mut running = Running::new(&[], Some("name"));
        running.add(&batch(&[1, 2, 3], &["a", "b", "a"])).unwrap();
        let g = running.groups;
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
    fn running_groups_do_not_depend_on_how_rows_are_split_or_interleaved() {
        let ids = [1, 2, 3, 4, 5, 6, 7];
        let keys = ["a", "a", "b", "a", "c", "b", "b"];
        let mut one = Running::new(&[], Some("name"));
        one.add(&batch(&ids, &keys)).unwrap();
        let mut split = Running::new(&[], Some("name"));
        split.add(&batch(&[7, 5], &["b", "c"])).unwrap();
        split.add(&batch(&[], &[])).unwrap();
        split
            .add(&batch(&[4, 1, 6, 2, 3], &["a", "a", "b", "a", "b"]))
            .unwrap();
        assert_eq!(one.groups, split.groups);
        assert_eq!(one.total, split.total);
        assert_eq!(
            one.groups
                .iter()
                .map(|(k, c)| (k.as_str(), c.rows))
                .collect::<Vec<_>>(),
            [("a", 3), ("b", 3), ("c", 1)]
        );
        // Each group's checksum is that of its rows alone.
        let mut b = Checksum::default();
        b.add(&[batch(&[3, 6, 7], &["b", "b", "b"])], &["name"])
            .unwrap();
        assert_eq!(one.groups["b"], b);
        // Without a group, `skip` leaves the column out of the total.
        let mut plain = Running::new(&["name"], None);
        plain.add(&batch(&ids, &keys)).unwrap();
        assert_eq!(plain.total, one.total);
        assert!(plain.groups.is_empty());
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
