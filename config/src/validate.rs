//! Checks that need more than the YAML's shape: references between named
//! policies and the status-code lists. Each error returns the text to look
//! for in the document (to find its line) and the message.

use crate::resources::{Resiliency, TargetPolicy};

type Problem = (String, String);

pub fn resiliency(r: &Resiliency) -> Result<(), Problem> {
    let p = &r.spec.policies;
    for (name, retry) in &p.retries {
        if let Some(m) = &retry.matching {
            if let Some(codes) = &m.http_status_codes {
                parse_code_ranges(codes, 100, 599).map_err(|e| {
                    (
                        "httpStatusCodes".to_string(),
                        format!("retry policy `{name}`: httpStatusCodes {e}"),
                    )
                })?;
            }
            if let Some(codes) = &m.grpc_status_codes {
                parse_code_ranges(codes, 0, 16).map_err(|e| {
                    (
                        "gRPCStatusCodes".to_string(),
                        format!("retry policy `{name}`: gRPCStatusCodes {e}"),
                    )
                })?;
            }
        }
    }
    let check = |where_: &str, t: &TargetPolicy| -> Result<(), Problem> {
        let refs = [
            (
                "timeout",
                &t.timeout,
                p.timeouts
                    .contains_key(t.timeout.as_deref().unwrap_or_default()),
            ),
            (
                "retry",
                &t.retry,
                p.retries
                    .contains_key(t.retry.as_deref().unwrap_or_default()),
            ),
            (
                "circuitBreaker",
                &t.circuit_breaker,
                p.circuit_breakers
                    .contains_key(t.circuit_breaker.as_deref().unwrap_or_default()),
            ),
        ];
        for (field, value, known) in refs {
            if let Some(v) = value
                && !known
                // A timeout may also be written inline as a duration.
                && !(field == "timeout" && crate::duration::parse_duration(v).is_ok())
            {
                return Err((
                    format!("{field}: {v}"),
                    format!(
                        "{where_} refers to {field} policy `{v}`, which is not defined under spec.policies"
                    ),
                ));
            }
        }
        Ok(())
    };
    for (app, t) in &r.spec.targets.apps {
        check(&format!("target app `{app}`"), t)?;
    }
    for (comp, t) in &r.spec.targets.components {
        if let Some(o) = &t.outbound {
            check(&format!("target component `{comp}` (outbound)"), o)?;
        }
        if let Some(i) = &t.inbound {
            check(&format!("target component `{comp}` (inbound)"), i)?;
        }
    }
    for (actor, t) in &r.spec.targets.actors {
        let as_target = TargetPolicy {
            timeout: t.timeout.clone(),
            retry: t.retry.clone(),
            circuit_breaker: t.circuit_breaker.clone(),
            circuit_breaker_cache_size: None,
        };
        check(&format!("target actor `{actor}`"), &as_target)?;
        if t.circuit_breaker.is_some()
            && !matches!(
                t.circuit_breaker_scope.as_deref(),
                Some("id" | "type" | "both")
            )
        {
            return Err((
                "circuitBreakerScope".into(),
                format!(
                    "target actor `{actor}` has a circuit breaker; expected circuitBreakerScope to be id, type or both"
                ),
            ));
        }
    }
    Ok(())
}

/// Parses `"429,500-599"` into inclusive ranges, each within `[min, max]`.
pub fn parse_code_ranges(text: &str, min: u32, max: u32) -> Result<Vec<(u32, u32)>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| -> Result<u32, String> {
            s.parse::<u32>()
                .map_err(|_| format!("`{part}` is not a code or a range like 500-599"))
        };
        let (lo, hi) = (parse(a)?, parse(b)?);
        if lo > hi || lo < min || hi > max {
            return Err(format!("`{part}` is outside {min}-{max} or reversed"));
        }
        out.push((lo, hi));
    }
    Ok(out)
}
