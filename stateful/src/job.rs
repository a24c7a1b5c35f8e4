//! A job as the Jobs API takes it, checked the way Dapr's scheduler checks
//! it, and its plan: when it first fires, how it repeats, when it ends.

use crate::times;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tandem_config::schedule::Schedule;

/// What happens when the app fails a trigger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailurePolicy {
    /// Give the tick up; the next one comes on schedule.
    Drop,
    /// Try again every `interval`, `max_retries` times (no bound when
    /// absent).
    Constant {
        interval_ms: u64,
        max_retries: Option<u32>,
    },
}

impl Default for FailurePolicy {
    /// Dapr's: 3 more tries, 1 s apart.
    fn default() -> Self {
        FailurePolicy::Constant {
            interval_ms: 1000,
            max_retries: Some(3),
        }
    }
}

/// A job's data as it came: a protobuf `Any` (its type URL and bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    pub type_url: String,
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    // Hex keeps the crate free of a base64 dependency; stored text only.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(v.len() * 2);
        for b in v {
            out.push_str(&format!("{b:02x}"));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("bad hex"))
            })
            .collect()
    }
}

/// A job as scheduled: the caller's words, kept as given (a GET answers
/// them back).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub name: String,
    pub schedule: Option<String>,
    pub repeats: Option<u32>,
    pub due_time: Option<String>,
    pub ttl: Option<String>,
    pub data: Option<Data>,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

/// When a job fires.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The first fire, Unix ms.
    pub first: i64,
    pub schedule: Option<Schedule>,
    pub repeats: Option<u32>,
    /// No fire after this (Unix ms).
    pub expires: Option<i64>,
}

/// The longest job name taken.
pub const MAX_NAME: usize = 512;

/// Dapr's rule for names (1.16.19 / 1.17.13 / 1.18.2 on): anything but
/// `/`, `\`, `#`, `?`, control characters, and the names `.` and `..`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the job name is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "the job name is {} bytes; at most {MAX_NAME} are allowed",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not a job name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '#' | '?') || c.is_control())
    {
        return Err(format!(
            "job name is invalid: it may not contain {c:?} (nor '/', '\\\\', '#', '?' or control characters)"
        ));
    }
    Ok(())
}

/// The schedule form of reminder periods (`@period 300ms`).
pub const PERIOD_PREFIX: &str = "@period ";

/// A job's `schedule`: six cron fields (seconds first), `@every
/// <duration>`, or one of the `@` names; `TZ=`/`CRON_TZ=` with a UTC zone.
pub fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let mut t = text.trim();
    if let Some(rest) = t.strip_prefix("CRON_TZ=").or_else(|| t.strip_prefix("TZ=")) {
        let (zone, s) = rest.split_once(' ').unwrap_or((rest, ""));
        if !matches!(zone, "UTC" | "Etc/UTC" | "GMT" | "Etc/GMT" | "Z") {
            return Err(format!(
                "time zone `{zone}` is not supported; tandem runs schedules in UTC"
            ));
        }
        t = s.trim();
    }
    // A reminder's period (tandem's own form, never taken from the Jobs
    // API): any length from 1 ms, where `@every` takes 1 s at least.
    if let Some(ms) = t.strip_prefix(PERIOD_PREFIX) {
        let ms: u64 = ms
            .trim()
            .trim_end_matches("ms")
            .parse()
            .map_err(|_| format!("`{t}` is not a period in milliseconds"))?;
        if ms == 0 {
            return Err("a period must be longer than zero".into());
        }
        return Ok(Schedule::Every(std::time::Duration::from_millis(ms)));
    }
    if !t.starts_with('@') && t.split_whitespace().count() != 6 {
        return Err(format!(
            "expected exactly 6 fields (seconds first), found {}: `{t}`",
            t.split_whitespace().count()
        ));
    }
    Schedule::parse(t)
}

impl Job {
    /// Checks the job as Dapr's scheduler does and plans it from `now`
    /// (Unix ms).
    pub fn plan(&self, now: i64) -> Result<Plan, String> {
        check_name(&self.name)?;
        let schedule = self
            .schedule
            .as_deref()
            .map(parse_schedule)
            .transpose()
            .map_err(|e| format!("job failed validation: schedule: {e}"))?;
        if schedule.is_none() && self.due_time.is_none() {
            return Err("job must have either a due time or a schedule".into());
        }
        if self.repeats == Some(0) {
            return Err("job failed validation: defined repeats must be greater than 0".into());
        }
        if schedule.is_none() && self.repeats.is_some_and(|r| r > 1) {
            return Err("job failed validation: job must have a schedule to repeat".into());
        }
        if schedule.is_none() && self.ttl.is_some() {
            return Err("job failed validation: job must have a schedule to have a ttl".into());
        }
        let due = self
            .due_time
            .as_deref()
            .map(|d| times::instant(d, now, "dueTime"))
            .transpose()
            .map_err(|e| format!("job failed validation: {e}"))?;
        let expires = self
            .ttl
            .as_deref()
            .map(|t| times::instant(t, due.unwrap_or(now), "ttl"))
            .transpose()
            .map_err(|e| format!("job failed validation: {e}"))?;
        if let (Some(d), Some(e)) = (due, expires)
            && e <= d
        {
            return Err("job failed validation: ttl must be greater than due time".into());
        }
        let first = match (due, &schedule) {
            (Some(d), _) => d,
            (None, Some(s)) => {
                next_fire(s, now).ok_or("job failed validation: the schedule never fires")?
            }
            (None, None) => unreachable!("checked above"),
        };
        if let FailurePolicy::Constant { interval_ms, .. } = self.failure_policy
            && Duration::from_millis(interval_ms) > Duration::from_secs(86_400 * 365)
        {
            return Err(
                "job failed validation: the failure policy's interval is over a year".into(),
            );
        }
        Ok(Plan {
            first,
            schedule,
            repeats: self.repeats,
            expires,
        })
    }
}

impl Job {
    /// The plan of a stored job: its schedule and repeats, with the expiry
    /// fixed when it was put (relative times count from then).
    pub fn resumed(&self, expires: Option<i64>) -> Plan {
        Plan {
            first: 0,
            schedule: self
                .schedule
                .as_deref()
                .and_then(|s| parse_schedule(s).ok()),
            repeats: self.repeats,
            expires,
        }
    }
}

/// The schedule's first fire strictly after `after` (Unix ms).
pub fn next_fire(s: &Schedule, after: i64) -> Option<i64> {
    match s {
        Schedule::Every(d) => {
            let d = i64::try_from(d.as_millis()).ok()?.max(1);
            after.checked_add(d)
        }
        cron => cron
            .next_after(after.div_euclid(1000))
            .and_then(|s| s.checked_mul(1000)),
    }
}

impl Plan {
    /// After tick number `done` (counting from 1) fired at `at`: the next
    /// fire, or `None` when the job is over.
    pub fn after(&self, at: i64, done: u32) -> Option<i64> {
        if self.repeats.is_some_and(|r| done >= r) {
            return None;
        }
        let next = next_fire(self.schedule.as_ref()?, at)?;
        if self.expires.is_some_and(|e| next > e) {
            return None;
        }
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(schedule: Option<&str>, due: Option<&str>) -> Job {
        Job {
            name: "j".into(),
            schedule: schedule.map(String::from),
            due_time: due.map(String::from),
            ..Job::default()
        }
    }

    #[test]
    fn names_as_dapr_takes_them() {
        for ok in ["job", "my||job@name", "a.b-c_d:e", "ünïcode", "with space"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a#b",
            "a?b",
            "a\0b",
            "a\nb",
            &"x".repeat(513),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn schedules_take_six_fields_or_a_name() {
        for ok in [
            "*/5 * * * * *",
            "0 30 9 * * MON-FRI",
            "@every 2s",
            "@daily",
            "TZ=UTC @hourly",
        ] {
            assert!(parse_schedule(ok).is_ok(), "{ok}");
        }
        for bad in [
            "* * * * *",
            "* * * * * * *",
            "@every",
            "@fortnightly",
            "TZ=Europe/Paris @daily",
            "R5/PT10S",
            "",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
        assert!(
            parse_schedule("* * * * *")
                .unwrap_err()
                .contains("exactly 6 fields")
        );
    }

    #[test]
    fn plans_follow_daprs_rules() {
        let now = 1_000_000;
        // dueTime alone: one shot.
        let p = job(None, Some("10s")).plan(now).unwrap();
        assert_eq!((p.first, p.after(p.first, 1)), (now + 10_000, None));
        // A schedule without dueTime first fires at its next time.
        let p = job(Some("@every 2s"), None).plan(now).unwrap();
        assert_eq!(p.first, now + 2000);
        assert_eq!(p.after(p.first, 1), Some(now + 4000));
        let p = job(Some("* * * * * *"), None).plan(now + 300).unwrap();
        assert_eq!(p.first, now + 1000);
        // Repeats stop it; ttl ends it.
        let mut j = job(Some("@every 1s"), Some("5s"));
        j.repeats = Some(2);
        let p = j.plan(now).unwrap();
        assert_eq!(p.first, now + 5000);
        assert_eq!(p.after(p.first, 1), Some(now + 6000));
        assert_eq!(p.after(now + 6000, 2), None);
        let mut j = job(Some("@every 1s"), None);
        j.ttl = Some("2500ms".into());
        let p = j.plan(now).unwrap();
        assert_eq!(p.after(now + 2000, 2), None);
        assert_eq!(p.after(now + 1000, 1), Some(now + 2000));
        // The errors Dapr gives.
        for (j, says) in [
            (job(None, None), "either a due time or a schedule"),
            (job(Some("* * * * *"), None), "exactly 6 fields"),
            (job(None, Some("soon")), "dueTime format not recognized"),
            (
                Job {
                    repeats: Some(0),
                    ..job(Some("@every 1s"), None)
                },
                "repeats must be greater than 0",
            ),
            (
                Job {
                    repeats: Some(3),
                    ..job(None, Some("1s"))
                },
                "schedule to repeat",
            ),
            (
                Job {
                    ttl: Some("1m".into()),
                    ..job(None, Some("1s"))
                },
                "schedule to have a ttl",
            ),
            (
                Job {
                    ttl: Some("1970-01-01T00:00:01Z".into()),
                    ..job(Some("@every 1s"), Some("10s"))
                },
                "ttl must be greater than due time",
            ),
            (
                Job {
                    name: "a/b".into(),
                    ..job(Some("@every 1s"), None)
                },
                "may not contain",
            ),
        ] {
            let e = j.plan(now).unwrap_err();
            assert!(e.contains(says), "{j:?}: {e}");
        }
        // A due time in the past fires at once.
        let p = job(None, Some("1970-01-01T00:00:00Z")).plan(now).unwrap();
        assert_eq!(p.first, 0);
    }

    #[test]
    fn jobs_survive_their_stored_form() {
        let j = Job {
            data: Some(Data {
                type_url: "type.googleapis.com/google.protobuf.Value".into(),
                value: vec![0, 1, 254, 255],
            }),
            failure_policy: FailurePolicy::Drop,
            ..job(Some("@every 1s"), Some("PT1S"))
        };
        let text = serde_json::to_string(&j).unwrap();
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), j);
    }
}
