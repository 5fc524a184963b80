//! Cron schedules (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`, or five fields) and
//! the interval unit each implies.

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use super::IntervalUnit;

/// A validated cron schedule together with its interval unit.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    /// Shared: a project repeats a handful of schedules thousands of times.
    cron: std::sync::Arc<Cron>,
    unit: IntervalUnit,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Eq for Schedule {}

/// Stored as its expression (the project's analysis cache); read back through [`Schedule::parse`].
impl serde::Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expr)
    }
}

impl<'de> serde::Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expr = <String as serde::Deserialize>::deserialize(d)?;
        Schedule::parse(&expr).map_err(serde::de::Error::custom)
    }
}

impl Schedule {
    /// Parse a cron expression. Errors are human-readable reasons without location.
    ///
    /// Results are cached per thread: a project repeats a handful of expressions thousands of
    /// times, and inferring the unit samples many runs.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        thread_local! {
            static CACHE: std::cell::RefCell<std::collections::HashMap<String, Result<Schedule, String>>> =
                std::cell::RefCell::new(std::collections::HashMap::new());
        }
        if let Some(hit) = CACHE.with(|c| c.borrow().get(expr).cloned()) {
            return hit;
        }
        let result = Schedule::parse_uncached(expr);
        CACHE.with(|c| c.borrow_mut().insert(expr.to_string(), result.clone()));
        result
    }

    fn parse_uncached(expr: &str) -> Result<Schedule, String> {
        let expr = expr.trim();
        let lower = expr.to_ascii_lowercase();
        let normalized = match lower.as_str() {
            "@hourly" | "@daily" | "@weekly" | "@monthly" | "@yearly" | "@annually" => {
                lower.clone()
            }
            "@midnight" => "@daily".to_string(),
            s if s.starts_with('@') => {
                return Err(format!(
                    "`{expr}` is not a known cron shortcut (use @hourly, @daily, @weekly, @monthly, @yearly or five fields)"
                ));
            }
            _ => {
                let fields = expr.split_whitespace().count();
                if fields != 5 {
                    return Err(format!(
                        "`{expr}` has {fields} field{}; a cron expression has five: minute hour day-of-month month day-of-week",
                        if fields == 1 { "" } else { "s" }
                    ));
                }
                expr.split_whitespace().collect::<Vec<_>>().join(" ")
            }
        };
        let parser = CronParser::builder().seconds(Seconds::Disallowed).build();
        let cron = parser
            .parse(&normalized)
            .map_err(|e| format!("`{expr}` is not a valid cron expression: {e}"))?;
        let unit = infer_unit(&cron).map_err(|e| format!("`{expr}`: {e}"))?;
        Ok(Schedule {
            expr: normalized,
            cron: std::sync::Arc::new(cron),
            unit,
        })
    }

    /// The expression as written (whitespace-normalized, shortcuts lowercased).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The interval unit of models on this schedule.
    pub fn unit(&self) -> IntervalUnit {
        self.unit
    }

    /// The latest cron tick at or before `t` (when the model was last due).
    pub fn floor(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_previous_occurrence(&t, true).ok()
    }
}

/// The shortest gap between consecutive runs over a sample of a year's worth of runs decides the
/// unit: every unit boundary that the cron skips would otherwise make an interval never due.
fn infer_unit(cron: &Cron) -> Result<IntervalUnit, String> {
    // A fixed, leap-year reference so inference never depends on the wall clock.
    let reference = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .ok_or("bad reference time")?;
    let mut prev: Option<DateTime<Utc>> = None;
    let mut min_gap: Option<chrono::Duration> = None;
    let mut t = reference;
    for _ in 0..64 {
        let next = cron
            .find_next_occurrence(&t, prev.is_none())
            .map_err(|e| format!("the schedule never runs ({e})"))?;
        if let Some(p) = prev {
            let gap = next - p;
            min_gap = Some(min_gap.map_or(gap, |g| g.min(gap)));
        }
        prev = Some(next);
        t = next;
    }
    let gap = min_gap.ok_or("the schedule never runs")?;
    IntervalUnit::fitting(gap).ok_or_else(|| {
        "runs more often than every five minutes, the finest interval unit".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcuts_and_units() {
        let cases = [
            ("@hourly", IntervalUnit::Hour),
            ("@daily", IntervalUnit::Day),
            ("@DAILY", IntervalUnit::Day),
            ("@weekly", IntervalUnit::Week),
            ("@monthly", IntervalUnit::Month),
            ("@yearly", IntervalUnit::Year),
            ("0 0 * * *", IntervalUnit::Day),
            ("30 6 * * *", IntervalUnit::Day),
            ("0 0 * * 1-5", IntervalUnit::Day),
            ("0 0 * * 1", IntervalUnit::Week),
            ("*/15 * * * *", IntervalUnit::QuarterHour),
            ("*/5 * * * *", IntervalUnit::FiveMinute),
            ("0 */2 * * *", IntervalUnit::Hour),
            ("0 0 1 * *", IntervalUnit::Month),
        ];
        for (expr, unit) in cases {
            assert_eq!(Schedule::parse(expr).unwrap().unit(), unit, "{expr}");
        }
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in [
            "",
            "@often",
            "* * *",
            "0 0 * * * *",
            "61 * * * *",
            "* * * * *",
            "x y z w v",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }
}
