//! PostgreSQL connection settings as Dapr's components take them: pgx's
//! connection strings (keyword/value or URL) turned into what
//! tokio-postgres parses, Dapr's separate `host`/`port`/`database`/`user`/
//! `password` fields, `maxConns`, `timeout` and `connectionMaxIdleTime`.
//!
//! pgx and tokio-postgres agree on most parameters. The rest: `database` is
//! pgx's name for `dbname`; pgx's pool and statement-cache parameters
//! (`pool_max_conns`, …) configure our pool or have no meaning here; any
//! other parameter pgx sends to the server as a run-time setting
//! (`search_path=…`), which tokio-postgres takes through `options=-c …`.
//! What needs TLS or files tokio-postgres cannot read is refused by name.

use std::collections::BTreeMap;
use std::time::Duration;

/// Parameters tokio-postgres understands as they are.
const PASS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "connect_timeout",
    "application_name",
    "options",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "tcp_user_timeout",
    "channel_binding",
    "load_balance_hosts",
    "sslnegotiation",
];

/// pgx / pgxpool parameters with no meaning for tokio-postgres; the pool
/// size is read, the rest dropped.
const POOL: &[&str] = &[
    "pool_max_conns",
    "pool_min_conns",
    "pool_min_idle_conns",
    "pool_max_conn_lifetime",
    "pool_max_conn_idle_time",
    "pool_health_check_period",
    "pool_max_conn_lifetime_jitter",
    "pool_ping_timeout",
    "statement_cache_capacity",
    "description_cache_capacity",
    "default_query_exec_mode",
];

/// What a connection string says beyond tokio-postgres's own settings.
#[derive(Debug, Default, PartialEq)]
pub struct Extras {
    pub pool_max_conns: Option<usize>,
}

/// libpq keyword/value pairs: `k=v`, values quoted with '…' (\\ and \'
/// escapes) when they hold spaces.
fn keyword_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("`{key}` has no value (expected {key}=value)"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("the quoted value of `{key}` is not closed")),
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

fn quote(v: &str) -> String {
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return v.to_string();
    }
    let mut out = String::from("'");
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// One parameter: kept (possibly renamed), folded into `-c` settings,
/// read into `extras`, or refused.
fn translate(
    key: &str,
    value: &str,
    kept: &mut Vec<(String, String)>,
    settings: &mut Vec<String>,
    extras: &mut Extras,
) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("connection string parameter `{key}`: {why}"));
    match key {
        "database" => kept.push(("dbname".into(), value.into())),
        "sslmode" => match value {
            "disable" | "prefer" => kept.push((key.into(), value.into())),
            "allow" => kept.push((key.into(), "prefer".into())),
            "require" | "verify-ca" | "verify-full" => {
                return refuse(&format!(
                    "sslmode={value} needs TLS to PostgreSQL, which tandem does not support yet; use sslmode=disable or prefer"
                ));
            }
            other => {
                return refuse(&format!(
                    "sslmode `{other}`; expected disable, allow, prefer, require, verify-ca or verify-full"
                ));
            }
        },
        "sslrootcert" | "sslcert" | "sslkey" | "sslpassword" | "sslsni" => {
            return refuse("TLS to PostgreSQL is not supported by tandem yet");
        }
        "passfile" | "service" | "servicefile" | "krbsrvname" | "krbspn" | "gsslib" => {
            return refuse(
                "not supported by tandem; put the settings in the connection string itself",
            );
        }
        "target_session_attrs" => match value {
            "any" | "read-write" | "read-only" => kept.push((key.into(), value.into())),
            "primary" => kept.push((key.into(), "read-write".into())),
            other => {
                return refuse(&format!(
                    "`{other}` is not supported; use any, read-write, read-only or primary"
                ));
            }
        },
        "pool_max_conns" => {
            let n: usize = value
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("connection string parameter `pool_max_conns` is `{value}`; expected a whole number of at least 1"))?;
            extras.pool_max_conns = Some(n);
        }
        "default_query_exec_mode" if matches!(value, "exec" | "simple_protocol") => {
            return refuse(
                "tandem prepares statements (exec and simple_protocol are not supported); use cache_statement",
            );
        }
        k if POOL.contains(&k) => {}
        k if PASS.contains(&k) => kept.push((key.into(), value.into())),
        // Anything else pgx sends to the server as a run-time parameter.
        _ => {
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return refuse("not a parameter name");
            }
            settings.push(format!("-c {key}={}", value.replace(' ', "\\ ")));
        }
    }
    Ok(())
}

/// A pgx connection string as tokio-postgres parses it, and what it says
/// about the pool.
pub fn from_pgx(conn: &str) -> Result<(String, Extras), String> {
    let conn = conn.trim();
    let mut kept = Vec::new();
    let mut settings = Vec::new();
    let mut extras = Extras::default();
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let (base, query) = conn.split_once('?').unwrap_or((conn, ""));
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            translate(
                // Form encoding, as pgx reads a URL's query: `+` is a space.
                &super::metadata::percent_decode(&k.replace('+', " ")),
                &super::metadata::percent_decode(&v.replace('+', " ")),
                &mut kept,
                &mut settings,
                &mut extras,
            )?;
        }
        merge_options(&mut kept, settings);
        let query: Vec<String> = kept
            .iter()
            .map(|(k, v)| format!("{k}={}", super::metadata::percent_encode(v)))
            .collect();
        let out = if query.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", query.join("&"))
        };
        return Ok((out, extras));
    }
    for (k, v) in keyword_pairs(conn)? {
        translate(&k, &v, &mut kept, &mut settings, &mut extras)?;
    }
    merge_options(&mut kept, settings);
    let out: Vec<String> = kept
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    Ok((out.join(" "), extras))
}

fn merge_options(kept: &mut Vec<(String, String)>, settings: Vec<String>) {
    if settings.is_empty() {
        return;
    }
    let extra = settings.join(" ");
    match kept.iter_mut().find(|(k, _)| k == "options") {
        Some((_, v)) => *v = format!("{v} {extra}"),
        None => kept.push(("options".into(), extra)),
    }
}

/// The tokio-postgres configuration and pool size a component's metadata
/// asks for.
pub fn config(m: &BTreeMap<String, String>) -> Result<(tokio_postgres::Config, usize), String> {
    let conn = m.get("connectionString").map(String::as_str).unwrap_or("");
    let separate = ["host", "hostaddr", "port", "database", "user", "password"]
        .iter()
        .any(|k| m.get(*k).is_some_and(|v| !v.is_empty()));
    if conn.trim().is_empty() && !separate {
        return Err("metadata `connectionString` is required, e.g. host=localhost user=postgres password=example port=5432 database=dapr".into());
    }
    let (translated, extras) =
        from_pgx(conn).map_err(|e| format!("metadata `connectionString`: {e}"))?;
    let mut config: tokio_postgres::Config = translated
        .parse()
        .map_err(|e| format!("metadata `connectionString` is not valid: {e}"))?;
    // Dapr's separate fields add to (or override) the string.
    if let Some(h) = m.get("host").filter(|v| !v.is_empty()) {
        config.host(h);
    }
    if let Some(h) = m.get("hostaddr").filter(|v| !v.is_empty()) {
        let ip = h
            .parse()
            .map_err(|_| format!("metadata `hostaddr` is `{h}`; expected an IP address"))?;
        config.hostaddr(ip);
    }
    if let Some(p) = m.get("port").filter(|v| !v.is_empty()) {
        let port = p
            .parse()
            .map_err(|_| format!("metadata `port` is `{p}`; expected a port number"))?;
        config.port(port);
    }
    if let Some(d) = m.get("database").filter(|v| !v.is_empty()) {
        config.dbname(d);
    }
    if let Some(u) = m.get("user").filter(|v| !v.is_empty()) {
        config.user(u);
    }
    if let Some(p) = m.get("password").filter(|v| !v.is_empty()) {
        config.password(p);
    }
    // As pgx: no host means the server's socket in its usual directory if
    // there is one, else localhost.
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        let port = config.get_ports().first().copied().unwrap_or(5432);
        match ["/var/run/postgresql", "/tmp"].into_iter().find(|d| {
            std::path::Path::new(d)
                .join(format!(".s.PGSQL.{port}"))
                .exists()
        }) {
            Some(dir) => config.host_path(dir),
            None => config.host("localhost"),
        };
    }
    // `timeout`: Dapr's per-operation limit, enforced by the server.
    if let Some(t) = m.get("timeout").filter(|v| !v.is_empty() && *v != "0") {
        let d = tandem_config::parse_duration(t).map_err(|e| format!("metadata `timeout`: {e}"))?;
        let setting = format!("-c statement_timeout={}", d.as_millis());
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {setting}"),
            _ => setting,
        };
        config.options(&options);
    }
    // `maxConns` above 1 sets the pool size (Dapr ignores 0 and 1), else the
    // string's `pool_max_conns`, else the default.
    let max = match m.get("maxConns").filter(|v| !v.trim().is_empty()) {
        Some(v) => {
            let n: i64 = v.trim().parse().map_err(|_| {
                format!("metadata `maxConns` is `{v}`; expected a number (0 for the default)")
            })?;
            (n > 1).then_some(n as usize)
        }
        None => None,
    };
    let max = max.or(extras.pool_max_conns).unwrap_or(DEFAULT_POOL);
    Ok((config, max))
}

/// tandem's default pool size (pgx's is max(4, CPUs); a sidecar serves
/// many concurrent requests from one pool).
pub const DEFAULT_POOL: usize = 16;

/// `connectionMaxIdleTime`: connections idle longer are closed.
pub fn max_idle(m: &BTreeMap<String, String>) -> Result<Option<Duration>, String> {
    match m
        .get("connectionMaxIdleTime")
        .filter(|v| !v.is_empty() && *v != "0")
    {
        None => Ok(None),
        Some(v) => tandem_config::parse_duration(v)
            .map(Some)
            .map_err(|e| format!("metadata `connectionMaxIdleTime`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dapr_documented_strings_parse() {
        // The state.postgresql reference page's example.
        let (c, max) = config(&md(&[(
            "connectionString",
            "host=localhost user=postgres password=example port=5432 connect_timeout=10 database=my_dapr",
        )]))
        .unwrap();
        assert_eq!(c.get_dbname(), Some("my_dapr"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(10)));
        assert_eq!(max, DEFAULT_POOL);
        let (c, max) = config(&md(&[(
            "connectionString",
            "postgres://dapr:s%40cret@db.example.com:5433/my_dapr?sslmode=disable&pool_max_conns=10&search_path=app",
        )]))
        .unwrap();
        assert_eq!(
            (c.get_dbname(), c.get_user(), c.get_password()),
            (Some("my_dapr"), Some("dapr"), Some(&b"s@cret"[..]))
        );
        assert_eq!(max, 10);
        assert_eq!(c.get_options(), Some("-c search_path=app"));
        let (_, max) = config(&md(&[
            ("connectionString", "host=h pool_max_conns=10"),
            ("maxConns", "0"),
        ]))
        .unwrap();
        assert_eq!(max, 10, "maxConns 0 means the default: the string's");
        let (_, max) = config(&md(&[("connectionString", "host=h"), ("maxConns", "4")])).unwrap();
        assert_eq!(max, 4);
        let (c, _) = config(&md(&[(
            "connectionString",
            r"host=h user='a b' password='it\'s'",
        )]))
        .unwrap();
        assert_eq!(
            (c.get_user(), c.get_password()),
            (Some("a b"), Some(&b"it's"[..]))
        );
    }

    #[test]
    fn separate_fields_timeout_and_refusals() {
        let (c, _) = config(&md(&[
            ("host", "127.0.0.1"),
            ("port", "5433"),
            ("database", "d"),
            ("user", "u"),
            ("password", "p"),
            ("timeout", "30s"),
        ]))
        .unwrap();
        assert_eq!(c.get_ports(), [5433]);
        assert_eq!(c.get_dbname(), Some("d"));
        assert_eq!(c.get_options(), Some("-c statement_timeout=30000"));
        for (s, needle) in [
            ("host=h sslmode=verify-full", "sslmode=verify-full"),
            ("host=h sslrootcert=/x.pem", "sslrootcert"),
            ("host=h passfile=/p", "passfile"),
            ("host=h pool_max_conns=0", "pool_max_conns"),
            ("host=h user", "has no value"),
            ("host=h password='open", "not closed"),
            (
                "host=h default_query_exec_mode=simple_protocol",
                "prepares statements",
            ),
        ] {
            let e = config(&md(&[("connectionString", s)])).unwrap_err();
            assert!(e.contains(needle), "{s}: {e}");
        }
        assert!(
            config(&md(&[]))
                .unwrap_err()
                .contains("connectionString` is required")
        );
    }
}
