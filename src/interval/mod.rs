//! Time: interval units, cron schedules, and parsing of user-given instants.
//!
//! Invariants:
//! - Every instant is UTC. Intervals are half-open `[start, end)` and aligned to their unit.
//! - A model's interval unit is derived from its cron: the largest unit whose length is at most
//!   the shortest gap between two consecutive cron runs. Weeks start on Monday 00:00 UTC.
//! - Parsing never panics on user input; failures are plain `String` reasons that callers turn
//!   into located diagnostics.

mod cron;
mod set;
mod time;

pub use cron::Schedule;
pub use set::IntervalSet;
pub use time::{
    Instant, exclusive_end, format_ts, parse_instant, parse_relative, parse_window, timestamp,
};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// The granularity of a model's intervals (partitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalUnit {
    /// Five minutes.
    FiveMinute,
    /// Fifteen minutes.
    QuarterHour,
    /// Thirty minutes.
    HalfHour,
    /// One hour.
    Hour,
    /// One day.
    Day,
    /// One ISO week, Monday to Monday.
    Week,
    /// One calendar month.
    Month,
    /// One calendar year.
    Year,
}

impl IntervalUnit {
    /// All units, finest first.
    pub const ALL: [IntervalUnit; 8] = [
        IntervalUnit::FiveMinute,
        IntervalUnit::QuarterHour,
        IntervalUnit::HalfHour,
        IntervalUnit::Hour,
        IntervalUnit::Day,
        IntervalUnit::Week,
        IntervalUnit::Month,
        IntervalUnit::Year,
    ];

    /// Name used in output and fingerprints.
    pub fn as_str(self) -> &'static str {
        match self {
            IntervalUnit::FiveMinute => "five_minute",
            IntervalUnit::QuarterHour => "quarter_hour",
            IntervalUnit::HalfHour => "half_hour",
            IntervalUnit::Hour => "hour",
            IntervalUnit::Day => "day",
            IntervalUnit::Week => "week",
            IntervalUnit::Month => "month",
            IntervalUnit::Year => "year",
        }
    }

    /// The shortest length an interval of this unit can have (months: 28 days, years: 365).
    pub fn min_length(self) -> Duration {
        match self {
            IntervalUnit::FiveMinute => Duration::minutes(5),
            IntervalUnit::QuarterHour => Duration::minutes(15),
            IntervalUnit::HalfHour => Duration::minutes(30),
            IntervalUnit::Hour => Duration::hours(1),
            IntervalUnit::Day => Duration::days(1),
            IntervalUnit::Week => Duration::days(7),
            IntervalUnit::Month => Duration::days(28),
            IntervalUnit::Year => Duration::days(365),
        }
    }

    /// The start of the interval that contains `t`.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let minutes_floor = |step: u32| {
            let m = t.minute() - t.minute() % step;
            utc(t.year(), t.month(), t.day(), t.hour(), m)
        };
        match self {
            IntervalUnit::FiveMinute => minutes_floor(5),
            IntervalUnit::QuarterHour => minutes_floor(15),
            IntervalUnit::HalfHour => minutes_floor(30),
            IntervalUnit::Hour => utc(t.year(), t.month(), t.day(), t.hour(), 0),
            IntervalUnit::Day => utc(t.year(), t.month(), t.day(), 0, 0),
            IntervalUnit::Week => {
                let day = utc(t.year(), t.month(), t.day(), 0, 0);
                day - Duration::days(i64::from(t.weekday().num_days_from_monday()))
            }
            IntervalUnit::Month => utc(t.year(), t.month(), 1, 0, 0),
            IntervalUnit::Year => utc(t.year(), 1, 1, 0, 0),
        }
    }

    /// The start of the interval after the one that starts at `start` (which must be aligned).
    pub fn next(self, start: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            IntervalUnit::Month => {
                let (y, m) = if start.month() == 12 {
                    (start.year() + 1, 1)
                } else {
                    (start.year(), start.month() + 1)
                };
                utc(y, m, 1, 0, 0)
            }
            IntervalUnit::Year => utc(start.year() + 1, 1, 1, 0, 0),
            fixed => start + fixed.min_length(),
        }
    }

    /// The smallest aligned instant `>= t`.
    pub fn ceil(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let f = self.floor(t);
        if f == t { f } else { self.next(f) }
    }

    /// The start of the interval before the one that starts at `start` (which must be aligned).
    pub fn prev(self, start: DateTime<Utc>) -> DateTime<Utc> {
        self.floor(start - Duration::microseconds(1))
    }

    /// The last complete interval before `now`.
    pub fn last_complete(self, now: DateTime<Utc>) -> Interval {
        let end = self.floor(now);
        Interval::new(self.prev(end), end)
    }

    /// Widen `w` to whole intervals of this unit.
    pub fn align(self, w: Interval) -> Interval {
        Interval::new(self.floor(w.start), self.ceil(w.end))
    }

    /// The largest unit whose length is at most `gap` (`None` when the gap is under five minutes).
    pub fn fitting(gap: Duration) -> Option<IntervalUnit> {
        IntervalUnit::ALL
            .iter()
            .rev()
            .copied()
            .find(|u| u.min_length() <= gap)
    }
}

impl std::fmt::Display for IntervalUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Midnight-based UTC constructor for values known to be valid (derived from a valid instant).
fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|date| date.and_hms_opt(h, min, 0))
        .map(|naive| Utc.from_utc_datetime(&naive))
        // Only reachable for years outside chrono's range, which parsing already rejects.
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A half-open interval `[start, end)` in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval {
    /// Inclusive start.
    pub start: DateTime<Utc>,
    /// Exclusive end.
    pub end: DateTime<Utc>,
}

impl Interval {
    /// A new interval; `start < end` is the caller's responsibility.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Interval { start, end }
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {})", format_ts(self.start), format_ts(self.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap().at
    }

    #[test]
    fn floor_and_next() {
        let x = t("2024-02-29 13:47:12");
        assert_eq!(IntervalUnit::FiveMinute.floor(x), t("2024-02-29 13:45:00"));
        assert_eq!(IntervalUnit::QuarterHour.floor(x), t("2024-02-29 13:45:00"));
        assert_eq!(IntervalUnit::HalfHour.floor(x), t("2024-02-29 13:30:00"));
        assert_eq!(IntervalUnit::Hour.floor(x), t("2024-02-29 13:00:00"));
        assert_eq!(IntervalUnit::Day.floor(x), t("2024-02-29"));
        assert_eq!(IntervalUnit::Week.floor(x), t("2024-02-26"));
        assert_eq!(IntervalUnit::Month.floor(x), t("2024-02-01"));
        assert_eq!(IntervalUnit::Year.floor(x), t("2024-01-01"));
        assert_eq!(IntervalUnit::Month.next(t("2024-12-01")), t("2025-01-01"));
        assert_eq!(IntervalUnit::Month.next(t("2024-02-01")), t("2024-03-01"));
        assert_eq!(IntervalUnit::Day.ceil(x), t("2024-03-01"));
        assert_eq!(IntervalUnit::Day.ceil(t("2024-03-01")), t("2024-03-01"));
    }

    #[test]
    fn fitting_unit() {
        assert_eq!(IntervalUnit::fitting(Duration::minutes(4)), None);
        assert_eq!(
            IntervalUnit::fitting(Duration::minutes(5)),
            Some(IntervalUnit::FiveMinute)
        );
        assert_eq!(
            IntervalUnit::fitting(Duration::hours(2)),
            Some(IntervalUnit::Hour)
        );
        assert_eq!(
            IntervalUnit::fitting(Duration::days(1)),
            Some(IntervalUnit::Day)
        );
        assert_eq!(
            IntervalUnit::fitting(Duration::days(30)),
            Some(IntervalUnit::Month)
        );
    }
}
