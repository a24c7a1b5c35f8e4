//! Go-style durations (`5s`, `1m30s`, `500ms`) and Kubernetes quantities
//! (`4Mi`, `512Ki`), the two value syntaxes Dapr resources and flags use.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A duration written the way Dapr users write them in YAML. Invalid text is
/// rejected while deserialising, so the error carries the file position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 5s, 1m30s or 500ms")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GoDuration, E> {
                parse_duration(v).map(GoDuration).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<GoDuration, E> {
                // A bare number is read as seconds, like the probe flags.
                Ok(GoDuration(Duration::from_secs(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<GoDuration, E> {
                u64::try_from(v)
                    .map(|s| GoDuration(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("a duration cannot be negative, found {v}")))
            }
        }
        d.deserialize_any(V)
    }
}

impl serde::Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        format_duration(self.0, f)
    }
}

fn format_duration(d: Duration, f: &mut fmt::Formatter) -> fmt::Result {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        write!(f, "{}s", ms / 1000)
    } else {
        write!(f, "{ms}ms")
    }
}

/// Parses `300ms`, `5s`, `1m30s`, `2h`, `1.5s`, `10us`, `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = || {
        format!(
            "invalid duration {text:?}: expected a number with a unit (ns, us, ms, s, m, h), e.g. 5s, 1m30s, 500ms"
        )
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Parses a Kubernetes resource quantity as a byte count: `4Mi`, `512Ki`,
/// `1Gi`, `2M`, `1000`.
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad = || {
        format!(
            "invalid size {text:?}: expected a number with an optional unit (Ki, Mi, Gi, k, M, G), e.g. 4Mi"
        )
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if split == 0 {
        return Err(bad());
    }
    let n: u64 = s[..split].parse().map_err(|_| bad())?;
    let mult: u64 = match &s[split..] {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "s", "5x", "-1s", "1m30", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("4Mi").unwrap(), 4 << 20);
        assert_eq!(parse_quantity("512Ki").unwrap(), 512 << 10);
        assert_eq!(parse_quantity("1000").unwrap(), 1000);
        assert_eq!(parse_quantity("2M").unwrap(), 2_000_000);
        for bad in ["", "Mi", "4Xi", "-4Mi", "99999999999999999999Gi"] {
            assert!(parse_quantity(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn display_round_trips() {
        assert_eq!(GoDuration(Duration::from_secs(5)).to_string(), "5s");
        assert_eq!(GoDuration(Duration::from_millis(500)).to_string(), "500ms");
    }
}
