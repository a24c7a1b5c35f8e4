//! The app's actor configuration (`GET /dapr/config`), as daprd reads it:
//! `entities`, `actorIdleTimeout`, `actorScanInterval`,
//! `drainOngoingCallTimeout`, `drainRebalancedActors`,
//! `reentrancy{enabled,maxStackDepth}` and `entitiesConfig` (per-type
//! overrides of the same). Durations come as Go durations (`1h`, `30s`),
//! ISO 8601 (`PT1H`) or the SDKs' `0h0m5s0ms0μs`.

use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct Reentrancy {
    pub enabled: bool,
    pub max_depth: u32,
}

impl Default for Reentrancy {
    fn default() -> Self {
        Self {
            enabled: false,
            max_depth: 32,
        }
    }
}

/// What may differ per actor type.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeConfig {
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub drain_rebalanced: bool,
    pub reentrancy: Reentrancy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ActorConfig {
    pub entities: Vec<String>,
    pub scan_interval: Duration,
    pub defaults: TypeConfig,
    pub per_type: HashMap<String, TypeConfig>,
}

impl Default for ActorConfig {
    fn default() -> Self {
        Self {
            entities: Vec::new(),
            scan_interval: Duration::from_secs(30),
            defaults: TypeConfig {
                idle_timeout: Duration::from_secs(3600),
                drain_timeout: Duration::from_secs(60),
                drain_rebalanced: true,
                reentrancy: Reentrancy::default(),
            },
            per_type: HashMap::new(),
        }
    }
}

/// A duration in any of the forms apps and SDKs send.
pub fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(d) = tandem_config::parse_duration(t) {
        return Ok(d);
    }
    if let Some(Ok(ms)) = tandem_stateful::times::iso8601_after(t, 0)
        && let Ok(ms) = u64::try_from(ms)
    {
        return Ok(Duration::from_millis(ms));
    }
    Err(format!(
        "`{t}` is not a duration: use a Go duration (1h30m, 500ms) or ISO 8601 (PT1H)"
    ))
}

fn read_duration(
    o: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<Duration>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => duration(s).map(Some).map_err(|e| format!("{key}: {e}")),
        Some(other) => Err(format!("{key} is {other}; expected a duration text")),
    }
}

fn read_type(o: &serde_json::Map<String, Value>, base: &TypeConfig) -> Result<TypeConfig, String> {
    let mut c = base.clone();
    if let Some(d) = read_duration(o, "actorIdleTimeout")? {
        c.idle_timeout = d;
    }
    if let Some(d) = read_duration(o, "drainOngoingCallTimeout")? {
        c.drain_timeout = d;
    }
    if let Some(v) = o.get("drainRebalancedActors") {
        c.drain_rebalanced = v
            .as_bool()
            .ok_or_else(|| format!("drainRebalancedActors is {v}; expected true or false"))?;
    }
    if let Some(Value::Object(r)) = o.get("reentrancy") {
        if let Some(v) = r.get("enabled") {
            c.reentrancy.enabled = v
                .as_bool()
                .ok_or_else(|| format!("reentrancy.enabled is {v}; expected true or false"))?;
        }
        match r.get("maxStackDepth") {
            None | Some(Value::Null) => {}
            Some(v) => {
                c.reentrancy.max_depth = v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        format!("reentrancy.maxStackDepth is {v}; expected a positive count")
                    })?;
            }
        }
    }
    Ok(c)
}

impl ActorConfig {
    /// Reads the app's answer; a field in a wrong form is an error that
    /// names it (the app's actors are then not registered).
    pub fn parse(v: &Value) -> Result<Self, String> {
        let Value::Object(o) = v else {
            return Err(format!("expected a JSON object, got {v}"));
        };
        let mut c = ActorConfig::default();
        let names = |v: &Value, key: &str| -> Result<Vec<String>, String> {
            match v {
                Value::Null => Ok(Vec::new()),
                Value::Array(a) => a
                    .iter()
                    .map(|e| {
                        e.as_str()
                            .map(str::to_string)
                            .filter(|s| !s.trim().is_empty())
                            .ok_or_else(|| format!("{key} holds {e}; expected actor type names"))
                    })
                    .collect(),
                other => Err(format!("{key} is {other}; expected a list of actor types")),
            }
        };
        if let Some(e) = o.get("entities") {
            c.entities = names(e, "entities")?;
        }
        if let Some(d) = read_duration(o, "actorScanInterval")? {
            c.scan_interval = d.max(Duration::from_millis(10));
        }
        c.defaults = read_type(o, &c.defaults)?;
        if let Some(Value::Array(per)) = o.get("entitiesConfig") {
            for entry in per {
                let Value::Object(eo) = entry else {
                    return Err(format!("entitiesConfig holds {entry}; expected objects"));
                };
                let tc = read_type(eo, &c.defaults)?;
                for t in names(
                    eo.get("entities").unwrap_or(&Value::Null),
                    "entitiesConfig.entities",
                )? {
                    c.per_type.insert(t, tc.clone());
                }
            }
        }
        c.entities.sort();
        c.entities.dedup();
        Ok(c)
    }

    pub fn of(&self, actor_type: &str) -> &TypeConfig {
        self.per_type.get(actor_type).unwrap_or(&self.defaults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_forms_apps_and_sdks_send() {
        let c = ActorConfig::parse(&json!({
            "entities": ["Cart", "Order"],
            "actorIdleTimeout": "1h0m0s",
            "actorScanInterval": "0h0m30s0ms0μs",
            "drainOngoingCallTimeout": "PT1M",
            "drainRebalancedActors": true,
            "reentrancy": {"enabled": true, "maxStackDepth": 8},
            "entitiesConfig": [{"entities": ["Order"], "actorIdleTimeout": "5s",
                                "reentrancy": {"enabled": false}}]
        }))
        .unwrap();
        assert_eq!(c.entities, ["Cart", "Order"]);
        assert_eq!(c.scan_interval, Duration::from_secs(30));
        assert_eq!(c.of("Cart").idle_timeout, Duration::from_secs(3600));
        assert_eq!(c.of("Cart").drain_timeout, Duration::from_secs(60));
        assert_eq!(
            c.of("Cart").reentrancy,
            Reentrancy {
                enabled: true,
                max_depth: 8
            }
        );
        assert_eq!(c.of("Order").idle_timeout, Duration::from_secs(5));
        assert!(!c.of("Order").reentrancy.enabled);
        // Defaults as daprd's.
        let d = ActorConfig::parse(&json!({"entities": ["A"]})).unwrap();
        assert_eq!(d.defaults, ActorConfig::default().defaults);
        assert_eq!(d.defaults.reentrancy.max_depth, 32);
    }

    #[test]
    fn wrong_forms_name_the_field() {
        for (v, field) in [
            (json!({"entities": "Cart"}), "entities"),
            (json!({"entities": [1]}), "entities"),
            (json!({"actorIdleTimeout": "soon"}), "actorIdleTimeout"),
            (json!({"actorIdleTimeout": 5}), "actorIdleTimeout"),
            (json!({"reentrancy": {"maxStackDepth": 0}}), "maxStackDepth"),
            (
                json!({"drainRebalancedActors": "yes"}),
                "drainRebalancedActors",
            ),
            (json!([1]), "object"),
        ] {
            let e = ActorConfig::parse(&v).unwrap_err();
            assert!(e.contains(field), "{v}: {e}");
        }
    }
}
