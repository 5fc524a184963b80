//! Interval sets: sorted, merged, half-open ranges of time — the currency of plans and state.
//!
//! Invariants (checked by property tests below):
//! - The ranges of an [`IntervalSet`] are non-empty, sorted, pairwise disjoint and not adjacent
//!   (touching ranges are merged), so two sets covering the same instants are equal.
//! - Every operation returns a set with the same invariant; none panics.
//! - Unit-based operations ([`IntervalSet::align`], [`IntervalSet::partitions`],
//!   [`IntervalSet::batches`]) only ever produce ranges aligned to the unit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Interval, IntervalUnit, format_ts, parse_instant};

/// A set of instants stored as merged half-open ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IntervalSet {
    ranges: Vec<Interval>,
}

impl IntervalSet {
    /// The empty set.
    pub fn new() -> IntervalSet {
        IntervalSet::default()
    }

    /// The set covering exactly `i` (empty if `i` is empty).
    pub fn of(i: Interval) -> IntervalSet {
        IntervalSet::from_iter([i])
    }

    /// The merged ranges, in order.
    pub fn ranges(&self) -> &[Interval] {
        &self.ranges
    }

    /// Nothing covered?
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The smallest interval covering the set.
    pub fn span(&self) -> Option<Interval> {
        Some(Interval::new(
            self.ranges.first()?.start,
            self.ranges.last()?.end,
        ))
    }

    /// Is `t` covered?
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= t);
        self.ranges.get(i).is_some_and(|r| r.start <= t)
    }

    /// Is all of `w` covered?
    pub fn covers(&self, w: Interval) -> bool {
        if w.start >= w.end {
            return true;
        }
        let i = self.ranges.partition_point(|r| r.end <= w.start);
        self.ranges
            .get(i)
            .is_some_and(|r| r.start <= w.start && w.end <= r.end)
    }

    /// Add a range.
    pub fn insert(&mut self, i: Interval) {
        if i.start >= i.end {
            return;
        }
        // First range that ends at or after i.start (may touch) and last that starts at or
        // before i.end (may touch): everything between merges with i.
        let lo = self.ranges.partition_point(|r| r.end < i.start);
        let hi = self.ranges.partition_point(|r| r.start <= i.end);
        let mut merged = i;
        if lo < hi {
            merged.start = merged.start.min(self.ranges[lo].start);
            merged.end = merged.end.max(self.ranges[hi - 1].end);
        }
        self.ranges.splice(lo..hi, [merged]);
    }

    /// Everything in either set.
    pub fn union(&self, other: &IntervalSet) -> IntervalSet {
        let mut all: Vec<Interval> = self.ranges.iter().chain(&other.ranges).copied().collect();
        all.sort();
        IntervalSet::from_sorted(all)
    }

    /// Everything in `self` and not in `other`.
    pub fn subtract(&self, other: &IntervalSet) -> IntervalSet {
        let mut out = Vec::new();
        let mut j = 0;
        for r in &self.ranges {
            let mut start = r.start;
            while j < other.ranges.len() && other.ranges[j].end <= start {
                j += 1;
            }
            let mut k = j;
            while start < r.end {
                match other.ranges.get(k) {
                    Some(o) if o.start < r.end => {
                        if o.start > start {
                            out.push(Interval::new(start, o.start));
                        }
                        start = start.max(o.end);
                        k += 1;
                    }
                    _ => {
                        out.push(Interval::new(start, r.end));
                        start = r.end;
                    }
                }
            }
        }
        IntervalSet { ranges: out }
    }

    /// Everything in both sets.
    pub fn intersect(&self, other: &IntervalSet) -> IntervalSet {
        let (mut i, mut j) = (0, 0);
        let mut out = Vec::new();
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a, b) = (self.ranges[i], other.ranges[j]);
            let start = a.start.max(b.start);
            let end = a.end.min(b.end);
            if start < end {
                out.push(Interval::new(start, end));
            }
            if a.end < b.end { i += 1 } else { j += 1 }
        }
        IntervalSet::from_sorted(out)
    }

    /// Only the part inside `w`.
    pub fn clamp(&self, w: Interval) -> IntervalSet {
        self.intersect(&IntervalSet::of(w))
    }

    /// Each range widened outwards to whole intervals of `unit`.
    pub fn align(&self, unit: IntervalUnit) -> IntervalSet {
        IntervalSet::from_sorted(self.ranges.iter().map(|r| unit.align(*r)).collect())
    }

    /// Only the whole intervals of `unit` inside the set (partial ones at the edges dropped).
    pub fn shrink(&self, unit: IntervalUnit) -> IntervalSet {
        let ranges = self
            .ranges
            .iter()
            .map(|r| Interval::new(unit.ceil(r.start), unit.floor(r.end)))
            .filter(|r| r.start < r.end)
            .collect();
        IntervalSet::from_sorted(ranges)
    }

    /// The unit intervals (partitions) covered, in order. The set should be aligned to `unit`.
    pub fn partitions(&self, unit: IntervalUnit) -> impl Iterator<Item = Interval> + '_ {
        self.ranges.iter().flat_map(move |r| {
            let mut t = unit.floor(r.start);
            std::iter::from_fn(move || {
                if t >= r.end {
                    return None;
                }
                let next = unit.next(t);
                let i = Interval::new(t, next);
                t = next;
                Some(i)
            })
        })
    }

    /// How many unit intervals the (aligned) set covers.
    pub fn count(&self, unit: IntervalUnit) -> u64 {
        self.ranges.iter().map(|r| unit_count(unit, *r)).sum()
    }

    /// Consecutive partitions grouped into batches of at most `size` intervals, never crossing a
    /// gap, oldest first.
    pub fn batches(&self, unit: IntervalUnit, size: u32) -> Vec<Interval> {
        let size = size.max(1);
        let mut out = Vec::new();
        for r in &self.ranges {
            let mut t = unit.floor(r.start);
            while t < r.end {
                let start = t;
                for _ in 0..size {
                    if t >= r.end {
                        break;
                    }
                    t = unit.next(t);
                }
                out.push(Interval::new(start, t.min(r.end)));
            }
        }
        out
    }

    /// How many batches [`IntervalSet::batches`] would produce, without building them.
    pub fn batch_count(&self, unit: IntervalUnit, size: u32) -> u64 {
        let size = u64::from(size.max(1));
        self.ranges
            .iter()
            .map(|r| unit_count(unit, *r).div_ceil(size))
            .sum()
    }

    /// Build from ranges sorted by start (empty ones are dropped).
    fn from_sorted(sorted: Vec<Interval>) -> IntervalSet {
        let mut ranges: Vec<Interval> = Vec::with_capacity(sorted.len());
        for r in sorted {
            if r.start >= r.end {
                continue;
            }
            match ranges.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => ranges.push(r),
            }
        }
        IntervalSet { ranges }
    }
}

/// Number of unit intervals that intersect `r`.
fn unit_count(unit: IntervalUnit, r: Interval) -> u64 {
    if r.start >= r.end {
        return 0;
    }
    let start = unit.floor(r.start);
    let end = unit.ceil(r.end);
    match unit {
        IntervalUnit::Month | IntervalUnit::Year => {
            use chrono::Datelike;
            let months = |t: DateTime<Utc>| i64::from(t.year()) * 12 + i64::from(t.month0());
            let m = months(end) - months(start);
            let n = if unit == IntervalUnit::Year {
                m / 12
            } else {
                m
            };
            u64::try_from(n).unwrap_or(0)
        }
        _ => {
            let len = unit.min_length().num_seconds().max(1);
            u64::try_from((end - start).num_seconds() / len).unwrap_or(0)
        }
    }
}

impl FromIterator<Interval> for IntervalSet {
    fn from_iter<T: IntoIterator<Item = Interval>>(iter: T) -> Self {
        let mut all: Vec<Interval> = iter.into_iter().collect();
        all.sort();
        IntervalSet::from_sorted(all)
    }
}

impl std::fmt::Display for IntervalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ranges.is_empty() {
            return f.write_str("(none)");
        }
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// The JSON shape of an interval: `{"start": "…Z", "end": "…Z"}`.
#[derive(Serialize, Deserialize)]
struct Wire {
    start: String,
    end: String,
}

impl Serialize for Interval {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            start: format_ts(self.start),
            end: format_ts(self.end),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let start = parse_instant(&w.start)
            .map_err(serde::de::Error::custom)?
            .at;
        let end = parse_instant(&w.end).map_err(serde::de::Error::custom)?.at;
        if end < start {
            return Err(serde::de::Error::custom(format!(
                "interval end {} is before its start {}",
                w.end, w.start
            )));
        }
        Ok(Interval::new(start, end))
    }
}

impl Serialize for IntervalSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.ranges.serialize(s)
    }
}

impl<'de> Deserialize<'de> for IntervalSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Interval>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap().at
    }

    fn day(d: i64) -> DateTime<Utc> {
        t("2024-01-01") + Duration::days(d)
    }

    fn set(pairs: &[(i64, i64)]) -> IntervalSet {
        pairs
            .iter()
            .map(|&(a, b)| Interval::new(day(a), day(b)))
            .collect()
    }

    #[test]
    fn merge_subtract_batch() {
        let s = set(&[(0, 3), (3, 5), (7, 9), (8, 10)]);
        assert_eq!(s, set(&[(0, 5), (7, 10)]));
        assert_eq!(
            s.subtract(&set(&[(1, 2), (8, 20)])),
            set(&[(0, 1), (2, 5), (7, 8)])
        );
        assert_eq!(s.count(IntervalUnit::Day), 8);
        assert_eq!(
            s.batches(IntervalUnit::Day, 2),
            vec![
                Interval::new(day(0), day(2)),
                Interval::new(day(2), day(4)),
                Interval::new(day(4), day(5)),
                Interval::new(day(7), day(9)),
                Interval::new(day(9), day(10)),
            ]
        );
        assert_eq!(s.batch_count(IntervalUnit::Day, 2), 5);
        let months = IntervalSet::of(Interval::new(t("2023-11-01"), t("2024-03-01")));
        assert_eq!(months.count(IntervalUnit::Month), 4);
        assert_eq!(months.partitions(IntervalUnit::Month).count(), 4);
        assert_eq!(
            IntervalSet::of(Interval::new(t("2024-01-01 05:00"), t("2024-01-01 07:00")))
                .align(IntervalUnit::Day),
            set(&[(0, 1)])
        );
        let json = serde_json::to_string(&set(&[(0, 1)])).unwrap();
        assert_eq!(
            json,
            r#"[{"start":"2024-01-01T00:00:00Z","end":"2024-01-02T00:00:00Z"}]"#
        );
        assert_eq!(
            serde_json::from_str::<IntervalSet>(&json).unwrap(),
            set(&[(0, 1)])
        );
    }

    fn arb_set() -> impl Strategy<Value = IntervalSet> {
        prop::collection::vec((0i64..200, 1i64..20), 0..12).prop_map(|v| {
            v.into_iter()
                .map(|(a, len)| Interval::new(day(a), day(a + len)))
                .collect()
        })
    }

    /// The days covered, as a plain set: the reference model for the algebra.
    fn days(s: &IntervalSet) -> std::collections::BTreeSet<i64> {
        (0..260).filter(|&d| s.contains(day(d))).collect()
    }

    fn invariant(s: &IntervalSet) -> bool {
        s.ranges().iter().all(|r| r.start < r.end)
            && s.ranges().windows(2).all(|w| w[0].end < w[1].start)
    }

    proptest! {
        #[test]
        fn algebra_matches_sets(a in arb_set(), b in arb_set()) {
            let (da, db) = (days(&a), days(&b));
            let u = a.union(&b);
            let s = a.subtract(&b);
            let i = a.intersect(&b);
            prop_assert!(invariant(&u) && invariant(&s) && invariant(&i));
            prop_assert_eq!(days(&u), da.union(&db).copied().collect());
            prop_assert_eq!(days(&s), da.difference(&db).copied().collect());
            prop_assert_eq!(days(&i), da.intersection(&db).copied().collect());
            prop_assert_eq!(s.union(&i), a.clone());
            let mut inserted = a.clone();
            for r in b.ranges() {
                inserted.insert(*r);
            }
            prop_assert_eq!(inserted, u);
        }

        #[test]
        fn batches_partition_the_set(a in arb_set(), size in 1u32..10) {
            let batches = a.batches(IntervalUnit::Day, size);
            prop_assert_eq!(batches.len() as u64, a.batch_count(IntervalUnit::Day, size));
            prop_assert!(batches.windows(2).all(|w| w[0].end <= w[1].start));
            let sizes_ok = batches.iter().all(|b| {
                let n = IntervalSet::of(*b).count(IntervalUnit::Day);
                n >= 1 && n <= u64::from(size) && a.covers(*b)
            });
            prop_assert!(sizes_ok);
            let total: u64 = batches.iter().map(|b| IntervalSet::of(*b).count(IntervalUnit::Day)).sum();
            prop_assert_eq!(total, a.count(IntervalUnit::Day));
            prop_assert_eq!(batches.into_iter().collect::<IntervalSet>(), a);
        }

        #[test]
        fn align_and_shrink(hours in prop::collection::vec((0i64..2000, 1i64..80), 0..8)) {
            let base = t("2024-01-01");
            let s: IntervalSet = hours.iter()
                .map(|&(a, l)| Interval::new(base + Duration::hours(a), base + Duration::hours(a + l)))
                .collect();
            let wide = s.align(IntervalUnit::Day);
            let narrow = s.shrink(IntervalUnit::Day);
            prop_assert!(invariant(&wide) && invariant(&narrow));
            prop_assert_eq!(wide.union(&s), wide.clone());
            prop_assert_eq!(narrow.union(&s), s.clone());
            prop_assert!(wide.ranges().iter().all(|r| IntervalUnit::Day.floor(r.start) == r.start && IntervalUnit::Day.floor(r.end) == r.end));
            prop_assert_eq!(wide.count(IntervalUnit::Day), wide.partitions(IntervalUnit::Day).count() as u64);
        }
    }
}
