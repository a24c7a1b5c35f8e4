//! Schedules, one parser for the project: cron expressions of five fields
//! (minute hour day-of-month month day-of-week) or six (with seconds
//! first), with `*`, `?`, lists, ranges, steps and month / weekday names;
//! or `@every <duration>`, `@yearly` (`@annually`), `@monthly`, `@weekly`,
//! `@daily` (`@midnight`), `@hourly`. When both day fields are restricted,
//! a day matching either fires, as in cron. Times are UTC Unix seconds.

use std::time::Duration;

/// A parsed schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<Fields>),
}

/// The allowed values of each field, as bit sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Fields {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether the day-of-month / day-of-week fields were `*` or `?`.
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field: its bit set, and whether it was unrestricted.
fn field(text: &str, name: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(i as u32 + lo);
        }
        let n: u32 = v.parse().map_err(|_| {
            format!(
                "{name} `{v}` is not a number{}",
                if names.is_empty() { "" } else { " or a name" }
            )
        })?;
        // Sunday is 0 or 7.
        let n = if name == "day-of-week" && n == 7 {
            0
        } else {
            n
        };
        if n < lo || n > hi {
            return Err(format!("{name} `{v}` is outside {lo}–{hi}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    let mut any = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{name} step `{s}` must be a positive number"))?,
            ),
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" | "?" => {
                any = any || step == 1;
                (lo, hi)
            }
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `a/n` runs from a to the end.
                None if step > 1 => (value(r)?, hi),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if from > to {
            return Err(format!("{name} range `{range}` runs backwards"));
        }
        let mut v = from;
        while v <= to {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, any))
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let with_seconds = |f: &str| Self::parse(&format!("0 {f}"));
        match text {
            "" => return Err("the schedule is empty".into()),
            "@yearly" | "@annually" => return with_seconds("0 0 1 1 *"),
            "@monthly" => return with_seconds("0 0 1 * *"),
            "@weekly" => return with_seconds("0 0 * * 0"),
            "@daily" | "@midnight" => return with_seconds("0 0 * * *"),
            "@hourly" => return with_seconds("0 * * * *"),
            _ => {}
        }
        if let Some(d) = text.strip_prefix("@every") {
            let d = crate::parse_duration(d.trim())?;
            if d < Duration::from_secs(1) {
                return Err("@every needs at least 1s".into());
            }
            return Ok(Schedule::Every(d));
        }
        let parts: Vec<&str> = text.split_whitespace().collect();
        let parts: Vec<&str> = match parts.len() {
            5 => std::iter::once("0").chain(parts).collect(),
            6 => parts,
            n => {
                return Err(format!(
                    "a cron schedule has 5 fields (minute hour day month weekday) or 6 (seconds first); `{text}` has {n}"
                ));
            }
        };
        let (seconds, _) = field(parts[0], "second", 0, 59, &[])?;
        let (minutes, _) = field(parts[1], "minute", 0, 59, &[])?;
        let (hours, _) = field(parts[2], "hour", 0, 23, &[])?;
        let (days, any_day) = field(parts[3], "day-of-month", 1, 31, &[])?;
        let (months, _) = field(parts[4], "month", 1, 12, &MONTHS)?;
        let (weekdays, any_weekday) = field(parts[5], "day-of-week", 0, 7, &WEEKDAYS)?;
        let s = Schedule::Cron(Box::new(Fields {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day,
            any_weekday,
        }));
        // Refuse what never fires (February 30th) now, not at run time.
        if s.next_after(0).is_none() {
            return Err(format!("the schedule `{text}` never fires"));
        }
        Ok(s)
    }

    /// The first time (Unix seconds) strictly after `after` it fires;
    /// `None` if it does not within eight years.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let f = match self {
            Schedule::Every(d) => {
                return i64::try_from(d.as_secs().max(1))
                    .ok()
                    .and_then(|d| after.checked_add(d));
            }
            Schedule::Cron(f) => f,
        };
        let has = |bits: u64, v: i64| bits & (1 << v) != 0;
        let start = after + 1;
        let first_day = start.div_euclid(86_400);
        for day in first_day..first_day + 366 * 8 {
            let (_, month, dom) = civil_from_days(day);
            // 1970-01-01 was a Thursday.
            let weekday = (day + 4).rem_euclid(7);
            let day_ok = match (f.any_day, f.any_weekday) {
                (true, true) => true,
                (false, true) => has(f.days, dom),
                (true, false) => has(f.weekdays, weekday),
                (false, false) => has(f.days, dom) || has(f.weekdays, weekday),
            };
            if !has(f.months, month) || !day_ok {
                continue;
            }
            let base = day * 86_400;
            for h in (0..24).filter(|h| has(f.hours, *h)) {
                if base + h * 3600 + 3599 < start {
                    continue;
                }
                for m in (0..60).filter(|m| has(f.minutes, *m)) {
                    if base + h * 3600 + m * 60 + 59 < start {
                        continue;
                    }
                    for s in (0..60).filter(|s| has(f.seconds, *s)) {
                        let t = base + h * 3600 + m * 60 + s;
                        if t >= start {
                            return Some(t);
                        }
                    }
                }
            }
        }
        None
    }
}

/// The (year, month 1–12, day 1–31) of a day counted from 1970-01-01
/// (Howard Hinnant's days-to-civil algorithm).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (y, mo, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC date and time.
    fn at(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> i64 {
        // Days from civil (the inverse of civil_from_days), by search.
        let mut day = (y - 1970) * 365 + (y - 1969) / 4 - 2;
        while civil_from_days(day) != (y, mo, d) {
            day += 1;
        }
        day * 86_400 + h * 3600 + mi * 60 + s
    }

    #[test]
    fn cron_expressions_fire_when_cron_says() {
        let next = |expr: &str, from: i64| Schedule::parse(expr).unwrap().next_after(from);
        let t = at(2026, 11, 24, 17, 20, 5);
        assert_eq!(next("0 30 * * * *", t), Some(at(2026, 11, 24, 17, 30, 0)));
        assert_eq!(next("*/15 * * * *", t), Some(at(2026, 11, 24, 17, 30, 0)));
        assert_eq!(
            next("*/10 * * * * *", t),
            Some(at(2026, 11, 24, 17, 20, 10))
        );
        assert_eq!(next("@hourly", t), Some(at(2026, 11, 24, 18, 0, 0)));
        assert_eq!(next("@daily", t), Some(at(2026, 11, 25, 0, 0, 0)));
        assert_eq!(next("@monthly", t), Some(at(2026, 12, 1, 0, 0, 0)));
        assert_eq!(next("@yearly", t), Some(at(2027, 1, 1, 0, 0, 0)));
        // 2026-11-24 is a Tuesday: the next Sunday is the 29th.
        assert_eq!(next("@weekly", t), Some(at(2026, 11, 29, 0, 0, 0)));
        assert_eq!(next("0 9 * * MON-FRI", t), Some(at(2026, 11, 25, 9, 0, 0)));
        assert_eq!(next("0 0 29 FEB *", t), Some(at(2028, 2, 29, 0, 0, 0)));
        // Day of month or day of week, when both are given.
        assert_eq!(next("0 0 1 * SUN", t), Some(at(2026, 11, 29, 0, 0, 0)));
        assert_eq!(next("0 0 12 1,15 * ?", t), Some(at(2026, 12, 1, 12, 0, 0)));
        assert_eq!(next("@every 90s", t), Some(t + 90));
        // Strictly after: the same second does not fire again.
        let on = at(2026, 11, 24, 17, 30, 0);
        assert_eq!(next("0 30 * * * *", on), Some(at(2026, 11, 24, 18, 30, 0)));
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (expr, says) in [
            ("", "empty"),
            ("* * *", "has 3"),
            ("61 * * * *", "outside 0–59"),
            ("0 0 30 FEB *", "never fires"),
            ("0 0 * * FUNDAY", "day-of-week `FUNDAY`"),
            ("*/0 * * * *", "step"),
            ("5-1 * * * *", "backwards"),
            ("@every 10ms", "at least 1s"),
            ("@every soon", "invalid duration"),
        ] {
            let e = Schedule::parse(expr).unwrap_err();
            assert!(e.contains(says), "{expr}: {e}");
        }
    }
}
