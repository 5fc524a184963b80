//! Parsing and printing of instants given by users (`--start`, `start '...'`, `--execution-time`).

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};

use super::Interval;

/// A parsed instant, remembering whether it was written as a bare date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant {
    /// The instant, UTC.
    pub at: DateTime<Utc>,
    /// `true` for `YYYY-MM-DD`: as an *end* it means "through the end of that day".
    pub date_only: bool,
}

/// Parse `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS[.ffffff]]`, RFC 3339 (`2024-01-01T00:00:00Z`,
/// offsets converted to UTC) or epoch milliseconds. Timestamps without an offset are UTC.
pub fn parse_instant(s: &str) -> Result<Instant, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("an empty string is not a date or timestamp".into());
    }
    // RFC 3339 first: it is the form the state and plans are written in (read by the
    // thousand), and no other form below is also RFC 3339.
    if s.len() > 10
        && let Ok(dt) = DateTime::parse_from_rfc3339(s)
    {
        return Ok(Instant {
            at: dt.with_timezone(&Utc),
            date_only: false,
        });
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && s.len() == 10
    {
        let at = date.and_hms_opt(0, 0, 0).map(|n| Utc.from_utc_datetime(&n));
        return at
            .map(|at| Instant {
                at,
                date_only: true,
            })
            .ok_or_else(|| bad(s));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = s.parse().map_err(|_| bad(s))?;
        return DateTime::from_timestamp_millis(ms)
            .map(|at| Instant {
                at,
                date_only: false,
            })
            .ok_or_else(|| bad(s));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(Instant {
                at: Utc.from_utc_datetime(&n),
                date_only: false,
            });
        }
    }
    Err(bad(s))
}

fn bad(s: &str) -> String {
    format!(
        "`{s}` is not a date (YYYY-MM-DD) or timestamp (YYYY-MM-DD HH:MM:SS, RFC 3339, or epoch milliseconds)"
    )
}

/// The half-open window for a user's `start`/`end` pair: a date end is inclusive (through the
/// end of that day), a timestamp end is exclusive.
pub fn parse_window(start: &str, end: &str) -> Result<Interval, String> {
    let s = parse_instant(start)?;
    let e = parse_instant(end)?;
    let end_excl = exclusive_end(e);
    if end_excl <= s.at {
        return Err(format!(
            "the window is empty: start {} is not before end {} (exclusive)",
            format_ts(s.at),
            format_ts(end_excl)
        ));
    }
    Ok(Interval::new(s.at, end_excl))
}

/// The exclusive end an instant stands for when used as an end.
pub fn exclusive_end(e: Instant) -> DateTime<Utc> {
    if e.date_only {
        e.at + Duration::days(1)
    } else {
        e.at
    }
}

/// RFC 3339 in UTC with a `Z`, fractional seconds only when present.
pub fn format_ts(t: DateTime<Utc>) -> String {
    if t.nanosecond() == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

/// Serde for an instant in the one text form of [`format_ts`] (`2024-01-08T00:00:00Z`, with
/// microseconds when it has any): `#[serde(with = "crate::interval::timestamp")]`.
pub mod timestamp {
    use chrono::{DateTime, Utc};

    /// Write `t` as [`super::format_ts`] does.
    pub fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_ts(*t))
    }

    /// Read an instant in any form [`super::parse_instant`] accepts.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        super::parse_instant(&text)
            .map(|i| i.at)
            .map_err(serde::de::Error::custom)
    }

    /// The same for an optional instant.
    pub mod option {
        use chrono::{DateTime, Utc};

        /// Write `t` (or `null`).
        pub fn serialize<S: serde::Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        /// Read an instant or `null`.
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            let text = <Option<String> as serde::Deserialize>::deserialize(d)?;
            text.map(|t| {
                super::super::parse_instant(&t)
                    .map(|i| i.at)
                    .map_err(serde::de::Error::custom)
            })
            .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let d = parse_instant("2024-01-07").unwrap();
        assert!(d.date_only);
        assert_eq!(format_ts(d.at), "2024-01-07T00:00:00Z");
        assert_eq!(
            format_ts(parse_instant("2024-01-07 12:30").unwrap().at),
            "2024-01-07T12:30:00Z"
        );
        assert_eq!(
            format_ts(parse_instant("2024-01-07T12:30:00+02:00").unwrap().at),
            "2024-01-07T10:30:00Z"
        );
        assert_eq!(
            format_ts(parse_instant("1704067200000").unwrap().at),
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            format_ts(parse_instant("2024-01-07 00:00:00.5").unwrap().at),
            "2024-01-07T00:00:00.500000Z"
        );
        for bad in [
            "",
            "2024-13-01",
            "2024-02-30",
            "yesterday",
            "2024-1-1",
            "-5",
        ] {
            assert!(parse_instant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn date_end_is_inclusive_timestamp_end_exclusive() {
        let w = parse_window("2024-01-01", "2024-01-07").unwrap();
        assert_eq!(
            w.to_string(),
            "[2024-01-01T00:00:00Z, 2024-01-08T00:00:00Z)"
        );
        let w = parse_window("2024-01-01", "2024-01-07 00:00:00").unwrap();
        assert_eq!(
            w.to_string(),
            "[2024-01-01T00:00:00Z, 2024-01-07T00:00:00Z)"
        );
        assert!(parse_window("2024-01-08", "2024-01-07").is_err());
        assert!(parse_window("2024-01-07 00:00", "2024-01-07 00:00").is_err());
    }
}

/// A relative time as SQLMesh writes starts (`'1 year ago'`, `'2 weeks ago'`, `'yesterday'`,
/// `'today'`), resolved against `now`: days and longer to UTC midnight. `None`: not one.
pub fn parse_relative(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let s = s.trim().to_ascii_lowercase();
    let midnight = |t: DateTime<Utc>| {
        t.date_naive()
            .and_hms_opt(0, 0, 0)
            .map(|n| Utc.from_utc_datetime(&n))
    };
    match s.as_str() {
        "today" => return midnight(now),
        "yesterday" => return midnight(now - Duration::days(1)),
        "now" => return Some(now),
        _ => {}
    }
    let rest = s.strip_suffix(" ago")?;
    let (n, unit) = rest.split_once(' ')?;
    let n: i64 = n.trim().parse().ok().filter(|n| *n >= 0)?;
    let unit = unit.trim().trim_end_matches('s');
    let t = match unit {
        "minute" => return Some(now - Duration::minutes(n)),
        "hour" => return Some(now - Duration::hours(n)),
        "day" => now - Duration::days(n),
        "week" => now - Duration::weeks(n),
        "month" => now.checked_sub_months(chrono::Months::new(u32::try_from(n).ok()?))?,
        "year" => {
            now.checked_sub_months(chrono::Months::new(u32::try_from(n.checked_mul(12)?).ok()?))?
        }
        _ => return None,
    };
    midnight(t)
}

#[cfg(test)]
mod relative_tests {
    use super::*;

    #[test]
    fn relative_starts_resolve_against_now() {
        let now = Utc.with_ymd_and_hms(2024, 3, 15, 10, 30, 0).unwrap();
        let day = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap();
        assert_eq!(parse_relative("1 year ago", now), Some(day(2023, 3, 15)));
        assert_eq!(parse_relative("2 weeks ago", now), Some(day(2024, 3, 1)));
        assert_eq!(parse_relative("3 months ago", now), Some(day(2023, 12, 15)));
        assert_eq!(parse_relative("Yesterday", now), Some(day(2024, 3, 14)));
        assert_eq!(
            parse_relative("5 hours ago", now),
            Some(now - Duration::hours(5))
        );
        assert_eq!(parse_relative("soon", now), None);
        assert_eq!(parse_relative("-1 days ago", now), None);
    }
}
