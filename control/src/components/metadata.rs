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
    let mut host = m
        .get("redisHost")
        .filter(|v| !v.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| "localhost:6379".into());
    if host.contains(',') {
        return Err(format!(
            "metadata `redisHost` is `{host}`: several hosts are a Redis Cluster, which {component} in tandem does not support; name one node"
        ));
    }
    // `redisPort` for a host written without one; it must agree otherwise.
    if let Some(port) = m.get("redisPort").filter(|v| !v.trim().is_empty()) {
        let port: u16 = port
            .trim()
            .parse()
            .map_err(|_| format!("metadata `redisPort` is `{port}`; expected a port number"))?;
        match host
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
        {
            Some(p) if p != port => {
                return Err(format!(
                    "metadata `redisHost` says port {p} and `redisPort` says {port}; keep one"
                ));
            }
            Some(_) => {}
            None => host = format!("{host}:{port}"),
        }
    }
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

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it
/// is, and bytes that are not UTF-8 become U+FFFD.
pub fn percent_decode(s: &str) -> String {
    use tandem_proxy::path::hex;
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    percent_encode_keeping(s, b"")
}

/// Percent-encodes everything but RFC 3986's unreserved characters and
/// those in `keep`.
pub fn percent_encode_keeping(s: &str, keep: &[u8]) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The AMQP address of Dapr's RabbitMQ metadata: `connectionString` (or
/// the older `host`), else one made of `protocol`, `hostname`, `username`
/// and `password`, else the local broker with the default user.
pub fn rabbitmq_uri(m: &BTreeMap<String, String>) -> String {
    if let Some(uri) = m
        .get("connectionString")
        .or_else(|| m.get("host"))
        .filter(|v| !v.trim().is_empty())
    {
        return uri.trim().to_string();
    }
    let get = |k: &str, d: &str| {
        m.get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| d.to_string())
    };
    let enc = |s: String| percent_encode(&s);
    let host = get("hostname", "localhost");
    let host = if host.contains(':') {
        host
    } else {
        format!("{host}:5672")
    };
    format!(
        "{}://{}:{}@{host}",
        get("protocol", "amqp"),
        enc(get("username", "guest")),
        enc(get("password", "guest"))
    )
}

/// A reconnecting Redis connection from Dapr's Redis metadata, made at
/// init as Dapr does: a Redis that is down fails the component.
#[cfg(feature = "redis")]
pub async fn redis_connection(
    m: &BTreeMap<String, String>,
    component: &str,
) -> Result<::redis::aio::ConnectionManager, String> {
    let (client, host) = redis_client(m, component)?;
    // Dapr's `dialTimeout` and `readTimeout` (0: none) and
    // `redisMaxRetries`; tandem's defaults otherwise.
    let timeout = |key: &str, default: Duration| -> Result<Option<Duration>, String> {
        let d = duration(m, key, default)?;
        Ok((!d.is_zero()).then_some(d))
    };
    let retries: usize = match m.get("redisMaxRetries").filter(|v| !v.trim().is_empty()) {
        None => 2,
        Some(v) => v
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("metadata `redisMaxRetries` is `{v}`; expected a number"))?
            .max(0) as usize,
    };
    let config = ::redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(timeout("dialTimeout", Duration::from_secs(5))?)
        .set_response_timeout(timeout("readTimeout", Duration::from_secs(10))?)
        .set_number_of_retries(retries);
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|e| format!("cannot connect to redis at {host}: {e}"))
}

/// A PostgreSQL connection pool from Dapr's PostgreSQL metadata
/// (`connectionString` in pgx's keyword or URL form, the separate
/// `host`/`port`/`database`/`user`/`password`, `maxConns`, `timeout`,
/// `connectionMaxIdleTime`: see `postgres_conn`). Connections are made on
/// first use.
#[cfg(feature = "postgres")]
pub fn postgres_pool(m: &BTreeMap<String, String>) -> Result<deadpool_postgres::Pool, String> {
    use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
    let (config, max) = super::postgres_conn::config(m)?;
    let idle = super::postgres_conn::max_idle(m)?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(max)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| e.to_string())?;
    if let Some(idle) = idle
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        // Close connections idle longer than `connectionMaxIdleTime`; the
        // task ends with the pool.
        let weak = pool.weak();
        rt.spawn(async move {
            let every = idle
                .min(Duration::from_secs(30))
                .max(Duration::from_millis(100));
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = weak.upgrade() else { return };
                pool.retain(|_, metrics| metrics.last_used() < idle);
            }
        });
    }
    Ok(pool)
}

/// A URL as errors show it: no user, password or query (where keys go).
pub fn shown_url(url: &str) -> String {
    match url.parse::<::http::Uri>() {
        Ok(u) => {
            format!(
                "{}://{}{}",
                u.scheme_str().unwrap_or("http"),
                u.host().unwrap_or_default(),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            ) + u.path()
        }
        Err(_) => "the provider's endpoint".to_string(),
    }
}
