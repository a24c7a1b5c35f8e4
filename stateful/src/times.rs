//! A job's `dueTime` and `ttl` as daprd reads them, tried in its order: an
//! RFC 3339 instant, a Go duration counted from a base, an ISO 8601
//! duration (`P1Y2M3W4DT5H6M7S`, whole numbers) counted from the base on
//! the calendar. ISO repeating intervals (`R5/PT10S`) are refused. Times
//! are Unix milliseconds, UTC.

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm);
/// the day may overflow its month (Jan 32 is Feb 1), as Go's `AddDate`.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(s: &str, n: usize) -> Option<i64> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `2026-12-03T07:20:43Z`, `…T07:20:43.250+01:00`: Unix milliseconds.
pub fn rfc3339(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-');
    let (y, mo, da) = (
        digits(d.next()?, 4)?,
        digits(d.next()?, 2)?,
        digits(d.next()?, 2)?,
    );
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let (clock, offset_ms) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, z) = time.split_at(at);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (h, m) = z[1..].split_once(':')?;
        let (h, m) = (digits(h, 2)?, digits(m, 2)?);
        if h > 23 || m > 59 {
            return None;
        }
        (c, sign * (h * 3600 + m * 60) * 1000)
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((hms, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (hms, f),
        Some(_) => return None,
        None => (clock, ""),
    };
    let mut t = hms.split(':');
    let (h, mi, s) = (
        digits(t.next()?, 2)?,
        digits(t.next()?, 2)?,
        digits(t.next()?, 2)?,
    );
    if t.next().is_some() || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // The days in that month: a date past them is not a date.
    let next_month = if mo == 12 {
        days_from_civil(y + 1, 1, 1)
    } else {
        days_from_civil(y, mo + 1, 1)
    };
    if da > next_month - days_from_civil(y, mo, 1) {
        return None;
    }
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let day = days_from_civil(y, mo, da);
    Some((day * 86_400 + h * 3600 + mi * 60 + s) * 1000 + ms - offset_ms)
}

/// An ISO 8601 duration added to `base` (Unix ms): years and months on
/// the calendar, the rest as fixed lengths. `None`: not this syntax.
pub fn iso8601_after(text: &str, base: i64) -> Option<Result<i64, String>> {
    if let Some((r, _)) = text.split_once('/')
        && r.starts_with('R')
    {
        return Some(Err(format!(
            "`{text}`: repeating intervals are not supported for a due time or ttl; use `schedule` to repeat"
        )));
    }
    let body = text.strip_prefix('P')?;
    if body.is_empty() || body == "T" {
        return None;
    }
    let (date, time) = body.split_once('T').unwrap_or((body, ""));
    if body.ends_with('T') {
        return None;
    }
    let parts = |s: &str, units: &[char]| -> Option<Vec<(char, i64)>> {
        let mut out = Vec::new();
        let mut num = String::new();
        let mut last = 0;
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let at = units.iter().position(|u| *u == c)?;
            if num.is_empty() || (at < last && !out.is_empty()) || (at == last && !out.is_empty()) {
                return None;
            }
            out.push((c, num.parse().ok()?));
            num.clear();
            last = at;
        }
        num.is_empty().then_some(out)
    };
    let date = parts(date, &['Y', 'M', 'W', 'D'])?;
    let time = parts(time, &['H', 'M', 'S'])?;
    let (mut years, mut months, mut days, mut ms) = (0i64, 0i64, 0i64, 0i64);
    for (u, n) in date {
        match u {
            'Y' => years = n,
            'M' => months = n,
            'W' => days += n.checked_mul(7)?,
            _ => days = days.checked_add(n)?,
        }
    }
    for (u, n) in time {
        let scale = match u {
            'H' => 3_600_000,
            'M' => 60_000,
            _ => 1000,
        };
        ms = ms.checked_add(n.checked_mul(scale)?)?;
    }
    Some(add_calendar(base, years, months, days, ms).ok_or_else(|| format!("`{text}` is too far")))
}

fn add_calendar(base: i64, years: i64, months: i64, days: i64, ms: i64) -> Option<i64> {
    let day = base.div_euclid(86_400_000);
    let in_day = base.rem_euclid(86_400_000);
    let (y, m, d) = tandem_config::schedule::civil_from_days(day);
    let total_months = y
        .checked_mul(12)?
        .checked_add(m - 1)?
        .checked_add(years.checked_mul(12)?)?
        .checked_add(months)?;
    if !(0..=12 * 9999).contains(&total_months) {
        return None;
    }
    let (ny, nm) = (total_months.div_euclid(12), total_months.rem_euclid(12) + 1);
    let new_day = days_from_civil(ny, nm, 1)
        .checked_add(d - 1)?
        .checked_add(days)?;
    new_day
        .checked_mul(86_400_000)?
        .checked_add(in_day)?
        .checked_add(ms)
}

/// A `dueTime` or `ttl` (`what` names it in errors) as an instant:
/// relative forms count from `base`.
pub fn instant(text: &str, base: i64, what: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Some(at) = rfc3339(t) {
        return Ok(at);
    }
    if let Ok(d) = tandem_config::parse_duration(t) {
        let ms = i64::try_from(d.as_millis()).map_err(|_| format!("{what} `{t}` is too long"))?;
        return base
            .checked_add(ms)
            .ok_or_else(|| format!("{what} `{t}` is too long"));
    }
    match iso8601_after(t, base) {
        Some(r) => r.map_err(|e| format!("{what} {e}")),
        None => Err(format!(
            "{what} format not recognized: `{t}`; use an RFC 3339 time (2026-01-02T15:04:05Z), a duration (10s, 1h30m) or an ISO 8601 duration (PT10S)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn rfc3339_instants_and_near_misses() {
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339("1970-01-02T00:00:01.5Z"), Some(DAY + 1500));
        assert_eq!(rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(rfc3339("1969-12-31T23:00:00-01:00"), Some(0));
        // 2024 is a leap year; 2100 is not.
        assert_eq!(
            rfc3339("2024-03-01T00:00:00Z").unwrap() - rfc3339("2024-02-28T00:00:00Z").unwrap(),
            2 * DAY
        );
        assert!(rfc3339("2024-02-29T00:00:00Z").is_some());
        for bad in [
            "2100-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-01-01 00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+1:00",
            "26-01-01T00:00:00Z",
            "",
            "T",
        ] {
            assert_eq!(rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn iso_durations_on_the_calendar() {
        let jan31 = rfc3339("2026-01-31T10:00:00Z").unwrap();
        // Go's AddDate: Jan 31 + 1 month is March 3 (2026 is not a leap year).
        assert_eq!(
            iso8601_after("P1M", jan31),
            Some(Ok(rfc3339("2026-03-03T10:00:00Z").unwrap()))
        );
        assert_eq!(
            iso8601_after("P1Y2W3DT4H5M6S", 0),
            Some(Ok(365 * DAY + 17 * DAY + (4 * 3600 + 5 * 60 + 6) * 1000))
        );
        assert_eq!(iso8601_after("PT10S", 5), Some(Ok(10_005)));
        for not in [
            "P", "PT", "P1", "PT1", "P1H", "PT1D", "P1DT", "10s", "P1S", "PT1S1M", "P-1D",
        ] {
            assert_eq!(iso8601_after(not, 0), None, "{not}");
        }
        assert!(iso8601_after("R5/PT10S", 0).unwrap().is_err());
        assert!(iso8601_after("P99999999Y", 0).unwrap().is_err());
    }

    #[test]
    fn due_times_in_daprs_three_forms() {
        assert_eq!(instant("10s", 1000, "dueTime"), Ok(11_000));
        assert_eq!(instant("1h30m", 0, "dueTime"), Ok(5_400_000));
        assert_eq!(instant(" PT1M ", 0, "ttl"), Ok(60_000));
        assert_eq!(instant("1970-01-01T00:00:02Z", 99, "ttl"), Ok(2000));
        let e = instant("tomorrow", 0, "dueTime").unwrap_err();
        assert!(e.contains("dueTime format not recognized"), "{e}");
        assert!(instant("-5s", 0, "dueTime").is_err());
        assert!(
            instant("R2/PT1S", 0, "dueTime")
                .unwrap_err()
                .contains("repeating")
        );
    }
}
