//! Reading component metadata that several components share the meaning of.

use std::collections::BTreeMap;
use std::time::Duration;

/// A duration in metadata (`500ms`, `15s`); absent or empty means `default`.
pub fn duration(
    m: &BTreeMap<String, String>,
    key: &str,
    default: Duration,
) -> Result<Duration, String> {
    match m.get(key).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => tandem_config::parse_duration(v).map_err(|e| format!("metadata `{key}`: {e}")),
    }
}

/// A Redis client from Dapr's Redis metadata (`redisHost`, `redisDB`,
/// `redisUsername`, `redisPassword`, `enableTLS`), and the host for messages.
/// `component` names the component type in errors.
#[cfg(feature = "redis")]
pub fn redis_client(
    m: &BTreeMap<String, String>,
    component: &str,
) -> Result<(::redis::Client, String), String> {
    let host = m
        .get("redisHost")
        .map(String::as_str)
        .unwrap_or("localhost:6379");
    if m.get("enableTLS").is_some_and(|v| v == "true") {
        return Err(format!(
            "metadata `enableTLS: true` is not supported yet by {component}"
        ));
    }
    let db: i64 = match m.get("redisDB").filter(|v| !v.is_empty()) {
        Some(v) => v
            .parse()
            .map_err(|_| format!("metadata `redisDB` is `{v}`; expected a database number"))?,
        None => 0,
    };
    let info = ::redis::IntoConnectionInfo::into_connection_info(format!("redis://{host}/{db}"))
        .map_err(|e| format!("metadata `redisHost` is `{host}`: {e}"))?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = m.get("redisUsername").filter(|v| !v.is_empty()) {
        settings = settings.set_username(user);
    }
    if let Some(pw) = m.get("redisPassword").filter(|v| !v.is_empty()) {
        settings = settings.set_password(pw);
    }
    let client = ::redis::Client::open(info.set_redis_settings(settings))
        .map_err(|e| format!("redis at {host}: {e}"))?;
    Ok((client, host.to_string()))
}
