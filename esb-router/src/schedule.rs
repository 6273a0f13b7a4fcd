//! EventBridge schedule expressions: `rate(5 minutes)` and `cron(0 12 * * ? *)`, in UTC.
//!
//! Cron has six fields, as EventBridge documents them: minutes (0-59), hours (0-23),
//! day-of-month (1-31, `?`, `L`, `W`), month (1-12 or JAN-DEC), day-of-week (1-7 with 1 =
//! Sunday, or SUN-SAT, `?`, `L`, `#`) and year (1970-2199); `,` `-` `*` `/` where the field
//! allows them. One of day-of-month and day-of-week must be `?`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, Duration as Span, NaiveDate, TimeZone, Timelike, Utc};

/// A parsed `rate()` or `cron()` expression.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScheduleExpression {
    /// `rate(value unit)`: every `period`, counted from when the schedule starts.
    Rate {
        /// The period.
        period: Duration,
    },
    /// `cron(...)`: at the times the six fields match.
    Cron(Box<Cron>),
}

/// The six fields of a cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: Vec<u32>,
    hours: Vec<u32>,
    days: DayOfMonth,
    months: Vec<u32>,
    weekdays: DayOfWeek,
    years: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum DayOfMonth {
    /// `?`: the day-of-week decides.
    Any,
    /// These days.
    Days(Vec<u32>),
    /// `L`: the month's last day.
    Last,
    /// `15W`: the weekday nearest the 15th, within the month.
    NearestWeekday(u32),
    /// `LW`: the month's last weekday.
    LastWeekday,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum DayOfWeek {
    /// `?`: the day-of-month decides.
    Any,
    /// These days (1 = Sunday .. 7 = Saturday).
    Days(Vec<u32>),
    /// `5L`: the month's last Thursday (5).
    Last(u32),
    /// `3#2`: the second Tuesday (3) of the month.
    Nth(u32, u32),
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl FromStr for ScheduleExpression {
    type Err = String;

    /// Parses `rate(...)` or `cron(...)`; the error says what is wrong.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(inner) = text.strip_prefix("rate(").and_then(|t| t.strip_suffix(')')) {
            return parse_rate(inner).map(|period| ScheduleExpression::Rate { period });
        }
        if let Some(inner) = text.strip_prefix("cron(").and_then(|t| t.strip_suffix(')')) {
            return parse_cron(inner).map(|cron| ScheduleExpression::Cron(Box::new(cron)));
        }
        Err(format!(
            "{text:?} is not a schedule expression: expected rate(5 minutes) or cron(0 12 * * ? *)"
        ))
    }
}

impl fmt::Display for ScheduleExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleExpression::Rate { period } => {
                let secs = period.as_secs();
                let (value, unit) = if secs % 86_400 == 0 {
                    (secs / 86_400, "day")
                } else if secs % 3600 == 0 {
                    (secs / 3600, "hour")
                } else {
                    (secs / 60, "minute")
                };
                let plural = if value == 1 { "" } else { "s" };
                write!(f, "rate({value} {unit}{plural})")
            }
            ScheduleExpression::Cron(cron) => write!(f, "cron({})", cron.text),
        }
    }
}

fn parse_rate(inner: &str) -> Result<Duration, String> {
    let expected = "rate(VALUE UNIT): a whole number above 0 and minute(s), hour(s) or day(s)";
    let mut parts = inner.split_whitespace();
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("rate({inner}): expected {expected}"));
    };
    let value: u64 = value
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("rate({inner}): {value:?} is not {expected}"))?;
    let (secs, singular) = match unit {
        "minute" | "minutes" => (60, unit == "minute"),
        "hour" | "hours" => (3600, unit == "hour"),
        "day" | "days" => (86_400, unit == "day"),
        _ => return Err(format!("rate({inner}): unknown unit {unit:?}: {expected}")),
    };
    // EventBridge: a value of 1 takes the singular unit, any other the plural.
    if singular != (value == 1) {
        return Err(format!(
            "rate({inner}): a value of 1 takes a singular unit (minute), others a plural one (minutes)"
        ));
    }
    Ok(Duration::from_secs(value * secs))
}

/// Parses a list field of plain numbers (`*`, `a`, `a-b`, `a/b`, `a-b/c`, `*/c`, names).
fn parse_list(
    field: &str,
    name: &str,
    range: (u32, u32),
    names: &[&str],
) -> Result<Vec<u32>, String> {
    let value = |text: &str| -> Result<u32, String> {
        let upper = text.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == upper) {
            return Ok(i as u32 + range.0);
        }
        match text.parse::<u32>() {
            Ok(v) if (range.0..=range.1).contains(&v) => Ok(v),
            _ => Err(format!(
                "{name} {text:?} is outside {}-{}",
                range.0, range.1
            )),
        }
    };
    let mut out = Vec::new();
    for part in field.split(',') {
        let (span, step) = match part.split_once('/') {
            Some((span, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{name}: step {step:?} is not a number above 0"))?;
                (span, step)
            }
            None => (part, 1),
        };
        let (start, end) = if span == "*" {
            range
        } else if let Some((a, b)) = span.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let start = value(span)?;
            // `a/b` runs from a to the end of the range.
            (start, if part.contains('/') { range.1 } else { start })
        };
        if start > end {
            return Err(format!("{name}: range {span:?} runs backwards"));
        }
        out.extend((start..=end).step_by(step as usize));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn parse_cron(inner: &str) -> Result<Cron, String> {
    let fields: Vec<&str> = inner.split_whitespace().collect();
    let [minutes, hours, dom, month, dow, year] = fields[..] else {
        return Err(format!(
            "cron({inner}): expected 6 fields (minutes hours day-of-month month day-of-week year), got {}",
            fields.len()
        ));
    };
    let at = |e: String| format!("cron({inner}): {e}");
    let days = match dom {
        "?" => DayOfMonth::Any,
        "L" => DayOfMonth::Last,
        "LW" => DayOfMonth::LastWeekday,
        d if d.ends_with('W') => {
            let day = d.trim_end_matches('W');
            match day.parse::<u32>() {
                Ok(n) if (1..=31).contains(&n) => DayOfMonth::NearestWeekday(n),
                _ => return Err(at(format!("day-of-month {d:?}: expected 1W-31W"))),
            }
        }
        d => DayOfMonth::Days(parse_list(d, "day-of-month", (1, 31), &[]).map_err(at)?),
    };
    let weekdays = match dow {
        "?" => DayOfWeek::Any,
        d if d.contains('#') => {
            let (day, nth) = d.split_once('#').unwrap_or((d, ""));
            let day = parse_list(day, "day-of-week", (1, 7), &WEEKDAYS).map_err(at)?;
            match (day[..].first(), nth.parse::<u32>()) {
                (Some(&day), Ok(nth)) if (1..=5).contains(&nth) => DayOfWeek::Nth(day, nth),
                _ => return Err(at(format!("day-of-week {d:?}: expected DAY#1 to DAY#5"))),
            }
        }
        d if d.ends_with('L') && d.len() > 1 => {
            let day = parse_list(d.trim_end_matches('L'), "day-of-week", (1, 7), &WEEKDAYS)
                .map_err(at)?;
            DayOfWeek::Last(day[0])
        }
        // `L` alone: the last day of the week, Saturday.
        "L" => DayOfWeek::Days(vec![7]),
        d => DayOfWeek::Days(parse_list(d, "day-of-week", (1, 7), &WEEKDAYS).map_err(at)?),
    };
    if (days == DayOfMonth::Any) == (weekdays == DayOfWeek::Any) {
        return Err(at(
            "one of day-of-month and day-of-week must be ?, and only one".to_owned(),
        ));
    }
    Ok(Cron {
        text: inner.to_owned(),
        minutes: parse_list(minutes, "minutes", (0, 59), &[]).map_err(at)?,
        hours: parse_list(hours, "hours", (0, 23), &[]).map_err(at)?,
        days,
        months: parse_list(month, "month", (1, 12), &MONTHS).map_err(at)?,
        weekdays,
        years: parse_list(year, "year", (1970, 2199), &[]).map_err(at)?,
    })
}

impl ScheduleExpression {
    /// The first fire strictly after `after`, for a schedule that started at `start`
    /// (`rate()` counts its periods from it); `None` when it never fires again.
    pub fn next_after(&self, start: DateTime<Utc>, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            ScheduleExpression::Rate { period } => {
                let period = Span::from_std(*period).ok()?;
                if after < start {
                    return Some(start + period);
                }
                let elapsed = (after - start).num_milliseconds();
                let step = period.num_milliseconds().max(1);
                let n = elapsed / step + 1;
                Some(start + Span::milliseconds(n * step))
            }
            ScheduleExpression::Cron(cron) => cron.next_after(after),
        }
    }
}

impl Cron {
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The next whole minute after `after`.
        let first = after.with_second(0)?.with_nanosecond(0)? + Span::minutes(1);
        let mut date = first.date_naive();
        let last_year = *self.years.last()?;
        while date.year() as u32 <= last_year {
            if self.years.contains(&(date.year() as u32))
                && self.months.contains(&date.month())
                && self.day_matches(date)
            {
                let from = if date == first.date_naive() {
                    (first.hour(), first.minute())
                } else {
                    (0, 0)
                };
                for &hour in self.hours.iter().filter(|h| **h >= from.0) {
                    let min_minute = if hour == from.0 { from.1 } else { 0 };
                    if let Some(&minute) = self.minutes.iter().find(|m| **m >= min_minute) {
                        let time = date.and_hms_opt(hour, minute, 0)?;
                        return Some(Utc.from_utc_datetime(&time));
                    }
                }
            }
            date = date.succ_opt()?;
        }
        None
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let last_day = last_day_of_month(date);
        // 1 = Sunday .. 7 = Saturday.
        let weekday = date.weekday().num_days_from_sunday() + 1;
        let is_weekday = |d: NaiveDate| d.weekday().num_days_from_monday() < 5;
        match &self.days {
            DayOfMonth::Any => {}
            DayOfMonth::Days(days) => return days.contains(&date.day()),
            DayOfMonth::Last => return date.day() == last_day,
            DayOfMonth::LastWeekday => {
                let mut d = date.with_day(last_day).unwrap_or(date);
                while !is_weekday(d) {
                    d = d.pred_opt().unwrap_or(d);
                }
                return d == date;
            }
            DayOfMonth::NearestWeekday(n) => {
                let Some(target) = date.with_day((*n).min(last_day)) else {
                    return false;
                };
                let nearest = match target.weekday().num_days_from_monday() {
                    // Saturday: the Friday before, unless that is in the previous month.
                    5 if target.day() > 1 => target.pred_opt().unwrap_or(target),
                    5 => target + Span::days(2),
                    // Sunday: the Monday after, unless that is in the next month.
                    6 if target.day() < last_day => target + Span::days(1),
                    6 => target - Span::days(2),
                    _ => target,
                };
                return nearest == date;
            }
        }
        match &self.weekdays {
            DayOfWeek::Any => true,
            DayOfWeek::Days(days) => days.contains(&weekday),
            DayOfWeek::Last(day) => *day == weekday && date.day() + 7 > last_day,
            DayOfWeek::Nth(day, nth) => *day == weekday && (date.day() - 1) / 7 + 1 == *nth,
        }
    }
}

fn last_day_of_month(date: NaiveDate) -> u32 {
    let (y, m) = if date.month() == 12 {
        (date.year() + 1, 1)
    } else {
        (date.year(), date.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|d| d.pred_opt())
        .map_or(28, |d| d.day())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn fires(expr: &str, from: &str, count: usize) -> Vec<String> {
        let schedule: ScheduleExpression = expr.parse().unwrap();
        let start = at(from);
        let mut t = start;
        (0..count)
            .map(|_| {
                t = schedule.next_after(start, t).unwrap();
                t.format("%Y-%m-%dT%H:%M").to_string()
            })
            .collect()
    }

    // The examples of EventBridge's "Schedule expressions" page (cron and rate).
    #[test]
    fn at_10_15_every_day() {
        assert_eq!(
            fires("cron(15 10 * * ? *)", "2026-03-01T11:00:00Z", 2),
            ["2026-03-02T10:15", "2026-03-03T10:15"]
        );
    }

    #[test]
    fn at_18_00_monday_to_friday() {
        // 2026-03-06 is a Friday.
        assert_eq!(
            fires("cron(0 18 ? * MON-FRI *)", "2026-03-06T18:00:00Z", 2),
            ["2026-03-09T18:00", "2026-03-10T18:00"]
        );
    }

    #[test]
    fn at_8_00_on_the_first_day_of_the_month() {
        assert_eq!(
            fires("cron(0 8 1 * ? *)", "2026-01-15T00:00:00Z", 2),
            ["2026-02-01T08:00", "2026-03-01T08:00"]
        );
    }

    #[test]
    fn every_10_minutes_weekdays() {
        assert_eq!(
            fires("cron(0/10 * ? * MON-FRI *)", "2026-03-06T23:45:00Z", 3),
            ["2026-03-06T23:50", "2026-03-09T00:00", "2026-03-09T00:10"]
        );
    }

    #[test]
    fn every_5_minutes_between_8_00_and_17_55_weekdays() {
        assert_eq!(
            fires("cron(0/5 8-17 ? * MON-FRI *)", "2026-03-09T17:50:00Z", 2),
            ["2026-03-09T17:55", "2026-03-10T08:00"]
        );
    }

    #[test]
    fn at_9_00_on_the_first_monday_of_each_month() {
        assert_eq!(
            fires("cron(0 9 ? * 2#1 *)", "2026-01-01T00:00:00Z", 3),
            ["2026-01-05T09:00", "2026-02-02T09:00", "2026-03-02T09:00"]
        );
    }

    #[test]
    fn last_day_last_weekday_and_nearest_weekday() {
        assert_eq!(
            fires("cron(0 0 L * ? *)", "2024-01-31T00:00:00Z", 2),
            ["2024-02-29T00:00", "2024-03-31T00:00"]
        );
        // The last Friday (6) of the month.
        assert_eq!(
            fires("cron(0 12 ? * 6L 2026)", "2026-01-01T00:00:00Z", 2),
            ["2026-01-30T12:00", "2026-02-27T12:00"]
        );
        // 2026-02-15 is a Sunday: the nearest weekday is Monday the 16th; 2026-08-01 is a
        // Saturday: the nearest weekday in the month is Monday the 3rd.
        assert_eq!(
            fires("cron(0 0 15W * ? *)", "2026-02-01T00:00:00Z", 1),
            ["2026-02-16T00:00"]
        );
        assert_eq!(
            fires("cron(0 0 1W * ? *)", "2026-07-02T00:00:00Z", 1),
            ["2026-08-03T00:00"]
        );
        // `L` alone in day-of-week: every Saturday (2026-03-07, 14).
        assert_eq!(
            fires("cron(0 0 ? * L *)", "2026-03-01T00:00:00Z", 2),
            ["2026-03-07T00:00", "2026-03-14T00:00"]
        );
        // The last weekday of May 2026 (the 31st is a Sunday).
        assert_eq!(
            fires("cron(0 0 LW 5 ? 2026)", "2026-01-01T00:00:00Z", 1),
            ["2026-05-29T00:00"]
        );
    }

    #[test]
    fn rates_count_from_the_start() {
        assert_eq!(
            fires("rate(5 minutes)", "2026-03-01T10:02:30Z", 2),
            ["2026-03-01T10:07", "2026-03-01T10:12"]
        );
        assert_eq!(
            fires("rate(1 hour)", "2026-03-01T10:00:00Z", 1),
            ["2026-03-01T11:00"]
        );
        assert_eq!(
            fires("rate(7 days)", "2026-03-01T10:00:00Z", 1),
            ["2026-03-08T10:00"]
        );
    }

    #[test]
    fn a_year_range_ends_the_schedule() {
        let schedule: ScheduleExpression = "cron(0 0 1 1 ? 2025)".parse().unwrap();
        let t = at("2025-06-01T00:00:00Z");
        assert_eq!(schedule.next_after(t, t), None);
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (expr, says) in [
            ("rate(1 minutes)", "singular"),
            ("rate(5 minute)", "singular"),
            ("rate(0 minutes)", "above 0"),
            ("rate(5 weeks)", "unknown unit"),
            ("cron(0 18 * * MON-FRI *)", "must be ?"),
            ("cron(0 18 ? * ? *)", "must be ?"),
            ("cron(0 18 * *)", "expected 6 fields"),
            ("cron(60 * ? * * *)", "minutes \"60\" is outside 0-59"),
            ("cron(0 0 ? * 2#6 *)", "DAY#1 to DAY#5"),
            ("every 5 minutes", "not a schedule expression"),
        ] {
            let err = expr.parse::<ScheduleExpression>().unwrap_err();
            assert!(err.contains(says), "{expr}: {err}");
        }
        assert_eq!(
            "rate(5 minutes)"
                .parse::<ScheduleExpression>()
                .unwrap()
                .to_string(),
            "rate(5 minutes)"
        );
    }
}
