//! Component metadata read the way Dapr reads it, once for every component
//! before its constructor runs. Dapr decodes metadata case-insensitively,
//! with aliases (`url` for a PostgreSQL `connectionString`), bools that are
//! true for `y`/`yes`/`true`/`t`/`on`/`1` in any case, and durations that
//! may be bare numbers (seconds; milliseconds for Redis). tandem's
//! components read exact keys and plain values; `normalize` turns the one
//! into the other, and refuses — naming the field — settings Dapr's
//! reference documents that tandem cannot honour, instead of connecting
//! some other way.

use std::collections::BTreeMap;

/// Every key tandem's components or the runtime read, in the spelling they
/// read it; a key written in another case is renamed to this one.
const KNOWN: &[&str] = &[
    // conversation components
    "cacheTTL",
    "responseCacheTTL",
    "apiType",
    "apiVersion",
    "maxTokens",
    // every component / the runtime
    "keyPrefix",
    "actorStateStore",
    "outboxPublishPubsub",
    "outboxPublishTopic",
    "outboxPubsub",
    "outboxDiscardWhenMissingState",
    "consumerID",
    "concurrency",
    "concurrencyMode",
    "allowedTopics",
    "publishingScopes",
    "subscriptionScopes",
    "protectedTopics",
    "direction",
    "route",
    // Redis
    "redisHost",
    "redisPort",
    "redisUsername",
    "redisPassword",
    "redisDB",
    "redisType",
    "enableTLS",
    "insecureSkipTLSVerify",
    "clientCert",
    "clientKey",
    "failover",
    "sentinelMasterName",
    "sentinelUsername",
    "sentinelPassword",
    "useEntraID",
    "redisMaxRetries",
    "redisMinRetryInterval",
    "redisMaxRetryInterval",
    "dialTimeout",
    "readTimeout",
    "writeTimeout",
    "poolSize",
    "poolTimeout",
    "minIdleConns",
    "maxConnAge",
    "idleTimeout",
    "idleCheckFrequency",
    "ttlInSeconds",
    "queryIndexes",
    "processingTimeout",
    "redeliverInterval",
    "queueDepth",
    "maxLenApprox",
    "streamTTL",
    // PostgreSQL and SQLite
    "connectionString",
    "host",
    "hostaddr",
    "port",
    "database",
    "user",
    "password",
    "sslRootCert",
    "maxConns",
    "connectionMaxIdleTime",
    "queryExecMode",
    "timeout",
    "useAzureAD",
    "useAWSIAM",
    "tableName",
    "metadataTableName",
    "cleanupInterval",
    "tablePrefix",
    "table",
    "notifyChannel",
    "busyTimeout",
    "disableWAL",
    // RabbitMQ
    "protocol",
    "hostname",
    "username",
    "durable",
    "deletedWhenUnused",
    "deleteWhenUnused",
    "autoAck",
    "deliveryMode",
    "requeueInFailure",
    "prefetchCount",
    "publisherConfirm",
    "reconnectWait",
    "enableDeadLetter",
    "maxLen",
    "maxLenBytes",
    "exchangeKind",
    "saslExternal",
    "externalSasl",
    "caCert",
    "clientName",
    "heartBeat",
    "publishMessagePropertiesToMetadata",
    "queueName",
    "maxPriority",
    "exclusive",
    "contentType",
    "requeueInFailureDelay",
    "redeliveryPause",
    // NATS JetStream
    "natsURL",
    "jwt",
    "seedKey",
    "token",
    "tls_client_cert",
    "tls_client_key",
    "name",
    "streamName",
    "durableName",
    "queueGroupName",
    "startSequence",
    "startTime",
    "deliverPolicy",
    "deliverNew",
    "flowControl",
    "heartbeat",
    "rateLimit",
    "ackWait",
    "maxDeliver",
    "backOff",
    "maxAckPending",
    "replicas",
    "memoryStorage",
    "ackPolicy",
    "domain",
    "apiPrefix",
    "nakDelay",
    "pullBatch",
    // MQTT
    "url",
    "qos",
    "retain",
    "cleanSession",
    "topic",
    "backOffMaxRetries",
    // bindings
    "schedule",
    "responseTimeout",
    "maxResponseBodySize",
    "MTLSRootCA",
    "MTLSClientCert",
    "MTLSClientKey",
    "MTLSRenegotiation",
    "securityToken",
    "securityTokenHeader",
    "errorIfNot2XX",
    "rootPath",
    // secret stores
    "secretsFile",
    "nestedSeparator",
    "multiValued",
    "prefix",
];

/// Keys Dapr reads as bools.
const BOOLS: &[&str] = &[
    "actorStateStore",
    "outboxDiscardWhenMissingState",
    "enableTLS",
    "insecureSkipTLSVerify",
    "failover",
    "useEntraID",
    "useAzureAD",
    "useAWSIAM",
    "disableWAL",
    "durable",
    "deletedWhenUnused",
    "deleteWhenUnused",
    "autoAck",
    "requeueInFailure",
    "publisherConfirm",
    "enableDeadLetter",
    "saslExternal",
    "externalSasl",
    "publishMessagePropertiesToMetadata",
    "exclusive",
    "memoryStorage",
    "flowControl",
    "deliverNew",
    "retain",
    "cleanSession",
    "errorIfNot2XX",
    "multiValued",
];

/// Durations where Dapr takes a bare number as seconds.
const SECONDS: &[&str] = &[
    "timeout",
    "cleanupInterval",
    "connectionMaxIdleTime",
    "busyTimeout",
    "heartBeat",
    "reconnectWait",
    "responseTimeout",
    "ackWait",
];

/// Redis durations: a bare number is milliseconds, a negative one turns the
/// feature off (written `0` here).
const REDIS_MILLIS: &[&str] = &[
    "processingTimeout",
    "redeliverInterval",
    "dialTimeout",
    "readTimeout",
    "writeTimeout",
    "poolTimeout",
    "idleTimeout",
    "idleCheckFrequency",
    "maxConnAge",
    "redisMinRetryInterval",
    "redisMaxRetryInterval",
];

/// Aliases Dapr accepts, by component type prefix: `(prefix, alias, key)`.
const ALIASES: &[(&str, &str, &str)] = &[
    ("state.postgresql", "url", "connectionString"),
    ("bindings.postgresql", "url", "connectionString"),
    ("configuration.postgresql", "url", "connectionString"),
    ("state.sqlite", "url", "connectionString"),
    ("", "timeoutInSeconds", "timeout"),
    ("", "cleanupIntervalInSeconds", "cleanupInterval"),
    ("", "connMaxIdleTime", "connectionMaxIdleTime"),
    (
        "configuration.postgresql",
        "pgNotifyChannel",
        "notifyChannel",
    ),
    ("", "useAzureAD", "useEntraID"),
    ("", "maxRetries", "redisMaxRetries"),
    ("pubsub.rabbitmq", "reconnectWaitSeconds", "reconnectWait"),
    ("bindings.rabbitmq", "ttl", "ttlInSeconds"),
];

/// Dapr's truthy strings.
pub fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "t" | "on" | "1"
    )
}

fn is_redis(type_: &str) -> bool {
    type_.ends_with(".redis")
}

fn is_postgres(type_: &str) -> bool {
    type_.ends_with(".postgresql")
}

/// Renames, converts and checks `m` in place for a component of `type_`
/// (and `version`, its `spec.version`).
pub fn normalize(
    type_: &str,
    version: &str,
    m: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    // Aliases first, then case: `URL` and `Url` both become the key.
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in std::mem::take(m) {
        let aliased = ALIASES
            .iter()
            .find(|(prefix, alias, _)| {
                (prefix.is_empty() || type_ == *prefix) && alias.eq_ignore_ascii_case(&key)
            })
            .map(|(_, _, to)| *to);
        let canonical = aliased
            .or_else(|| KNOWN.iter().copied().find(|k| k.eq_ignore_ascii_case(&key)))
            .map(str::to_string)
            .unwrap_or(key.clone());
        if let Some(first) = seen.insert(canonical.to_ascii_lowercase(), key.clone()) {
            return Err(format!(
                "metadata `{first}` and `{key}` name the same setting ({canonical}); keep one"
            ));
        }
        out.insert(canonical, value);
    }
    for (key, value) in out.iter_mut() {
        if BOOLS.contains(&key.as_str()) {
            *value = truthy(value).to_string();
        } else if is_redis(type_) && REDIS_MILLIS.contains(&key.as_str()) {
            if let Ok(n) = value.trim().parse::<i64>() {
                *value = if n <= 0 { "0".into() } else { format!("{n}ms") };
            }
        } else if SECONDS.contains(&key.as_str())
            && let Ok(n) = value.trim().parse::<i64>()
        {
            *value = if n <= 0 { "0".into() } else { format!("{n}s") };
        }
    }
    refuse_unsupported(type_, version, &out)?;
    *m = out;
    Ok(())
}

/// Settings on Dapr's reference pages that tandem cannot honour: refused at
/// start, naming the field, rather than silently connecting another way.
fn refuse_unsupported(
    type_: &str,
    version: &str,
    m: &BTreeMap<String, String>,
) -> Result<(), String> {
    let on = |k: &str| m.get(k).is_some_and(|v| v == "true");
    let set = |k: &str| m.get(k).is_some_and(|v| !v.trim().is_empty());
    let no = |field: &str, why: &str| Err(format!("metadata `{field}`: {why}"));
    for auth in ["useEntraID", "useAWSIAM", "useOIDC"] {
        if on(auth) {
            return no(
                auth,
                "cloud identity authentication is not supported by tandem; give the credentials in the component (a password, from a secret store with secretKeyRef)",
            );
        }
    }
    if is_redis(type_) {
        if on("enableTLS") {
            return no(
                "enableTLS",
                "TLS to Redis is not supported by tandem yet; use a plaintext Redis endpoint (for example through a local TLS tunnel)",
            );
        }
        for k in ["clientCert", "clientKey", "insecureSkipTLSVerify"] {
            if set(k) && (k != "insecureSkipTLSVerify" || on(k)) {
                return no(k, "TLS to Redis is not supported by tandem yet");
            }
        }
        if on("failover") || set("sentinelMasterName") {
            return no(
                if on("failover") {
                    "failover"
                } else {
                    "sentinelMasterName"
                },
                "Redis Sentinel is not supported by tandem; point redisHost at the primary",
            );
        }
        if m.get("redisType")
            .is_some_and(|t| t.eq_ignore_ascii_case("cluster"))
        {
            return no(
                "redisType",
                "Redis Cluster is not supported by tandem; use redisType: node",
            );
        }
        if type_ == "pubsub.redis" && set("streamTTL") {
            return no(
                "streamTTL",
                "time-based stream trimming is not supported by tandem; use maxLenApprox",
            );
        }
    }
    if is_postgres(type_) {
        if set("sslRootCert") {
            return no(
                "sslRootCert",
                "TLS to PostgreSQL is not supported by tandem yet",
            );
        }
        if let Some(mode) = m.get("queryExecMode").filter(|v| !v.is_empty()) {
            match mode.as_str() {
                "cache_statement" | "cache_describe" | "describe_exec" => {}
                "exec" | "simple_protocol" => {
                    return no(
                        "queryExecMode",
                        &format!(
                            "`{mode}` (for PgBouncer in transaction mode) is not supported by tandem, which prepares statements; use cache_statement, or PgBouncer in session mode"
                        ),
                    );
                }
                other => {
                    return no(
                        "queryExecMode",
                        &format!(
                            "`{other}`; expected cache_statement, cache_describe, describe_exec, exec or simple_protocol"
                        ),
                    );
                }
            }
        }
        if type_ == "state.postgresql" && version == "v2" {
            return Err("spec.version `v2` of state.postgresql (Dapr's second table layout) is not supported by tandem; use version v1".into());
        }
    }
    if type_.ends_with(".rabbitmq") {
        for k in ["caCert", "clientCert", "clientKey"] {
            if set(k) {
                return no(k, "TLS to RabbitMQ is not supported by tandem yet");
            }
        }
        for k in ["saslExternal", "externalSasl"] {
            if on(k) {
                return no(
                    k,
                    "SASL EXTERNAL (certificate) authentication is not supported by tandem",
                );
            }
        }
        for k in ["connectionString", "host"] {
            if m.get(k)
                .is_some_and(|v| v.trim_start().starts_with("amqps://"))
            {
                return no(
                    k,
                    "amqps:// (TLS) is not supported by tandem yet; use amqp://",
                );
            }
        }
        if m.get("protocol")
            .is_some_and(|p| p.eq_ignore_ascii_case("amqps"))
        {
            return no(
                "protocol",
                "amqps (TLS) is not supported by tandem yet; use amqp",
            );
        }
        if let Some(kind) = m
            .get("exchangeKind")
            .filter(|k| !k.is_empty() && *k != "fanout")
        {
            return no(
                "exchangeKind",
                &format!("`{kind}`: tandem declares fanout exchanges only"),
            );
        }
        if type_ == "pubsub.rabbitmq" {
            if on("deletedWhenUnused") {
                return no(
                    "deletedWhenUnused",
                    "tandem keeps its queues when unused (messages wait for a subscriber that comes back); set it to false",
                );
            }
            for k in ["maxLen", "maxLenBytes"] {
                if set(k) {
                    return no(k, "queue length limits are not supported by tandem");
                }
            }
            if on("enableDeadLetter") {
                return no(
                    "enableDeadLetter",
                    "RabbitMQ dead-letter exchanges are not used by tandem; give the subscription a deadLetterTopic",
                );
            }
        }
    }
    if type_ == "pubsub.jetstream" {
        for k in ["tls_client_cert", "tls_client_key"] {
            if set(k) {
                return no(
                    k,
                    "TLS client certificates to NATS are not supported by tandem yet",
                );
            }
        }
        if set("apiPrefix") {
            return no(
                "apiPrefix",
                "a JetStream API prefix is not supported by tandem; use domain",
            );
        }
        if set("backOff") {
            return no(
                "backOff",
                "redelivery back-off lists are not supported by tandem; use nakDelay (one delay)",
            );
        }
    }
    if type_.ends_with(".mqtt3") {
        for k in ["caCert", "clientCert", "clientKey"] {
            if set(k) {
                return no(k, "TLS to the MQTT broker is not supported by tandem yet");
            }
        }
    }
    if type_ == "bindings.http" && set("MTLSRenegotiation") {
        return no(
            "MTLSRenegotiation",
            "TLS renegotiation is not supported by tandem (TLS 1.3 has none)",
        );
    }
    Ok(())
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
    fn keys_are_read_case_insensitively_with_aliases() {
        let mut m = md(&[
            ("URL", "host=x"),
            ("redishost", "h:1"),
            ("mtlsRootCA", "pem"),
            ("custom", "kept"),
        ]);
        normalize("state.postgresql", "v1", &mut m).unwrap();
        assert_eq!(m["connectionString"], "host=x");
        assert_eq!(m["redisHost"], "h:1");
        assert_eq!(m["MTLSRootCA"], "pem");
        assert_eq!(m["custom"], "kept", "unknown keys pass through as written");
        // `url` is the MQTT broker's own field, not an alias there.
        let mut m = md(&[("url", "tcp://h")]);
        normalize("pubsub.mqtt3", "v1", &mut m).unwrap();
        assert_eq!(m["url"], "tcp://h");
        let mut m = md(&[("redisHost", "a"), ("REDISHOST", "b")]);
        assert!(
            normalize("state.redis", "", &mut m)
                .unwrap_err()
                .contains("name the same setting")
        );
    }

    #[test]
    fn bools_and_durations_as_dapr_reads_them() {
        let mut m = md(&[
            ("durable", "Yes"),
            ("autoAck", "1"),
            ("exclusive", "nope"),
            ("timeout", "30"),
            ("cleanupInterval", "-1"),
        ]);
        normalize("bindings.rabbitmq", "", &mut m).unwrap();
        assert_eq!(
            (
                m["durable"].as_str(),
                m["autoAck"].as_str(),
                m["exclusive"].as_str()
            ),
            ("true", "true", "false")
        );
        assert_eq!(m["timeout"], "30s");
        assert_eq!(m["cleanupInterval"], "0");
        let mut m = md(&[
            ("processingTimeout", "600000"),
            ("redeliverInterval", "-1"),
            ("timeout", "5s"),
        ]);
        normalize("pubsub.redis", "", &mut m).unwrap();
        assert_eq!(
            m["processingTimeout"], "600000ms",
            "Redis counts milliseconds"
        );
        assert_eq!(m["redeliverInterval"], "0", "negative turns it off");
        assert_eq!(m["timeout"], "5s");
    }

    #[test]
    fn documented_settings_tandem_cannot_honour_are_refused_by_name() {
        for (t, k, v) in [
            ("state.redis", "enableTLS", "True"),
            ("state.redis", "failover", "true"),
            ("pubsub.redis", "redisType", "cluster"),
            ("state.postgresql", "useAzureAD", "true"),
            ("state.postgresql", "queryExecMode", "simple_protocol"),
            ("pubsub.rabbitmq", "connectionString", "amqps://h"),
            ("pubsub.jetstream", "apiPrefix", "P"),
            (
                "bindings.http",
                "MTLSRenegotiation",
                "RenegotiateOnceAsClient",
            ),
        ] {
            let mut m = md(&[(k, v)]);
            let e = normalize(t, "v1", &mut m).unwrap_err();
            let name = if k == "useAzureAD" { "useEntraID" } else { k };
            assert!(e.contains(name), "{t} {k}: {e}");
        }
        let mut m = md(&[]);
        assert!(
            normalize("state.postgresql", "v2", &mut m)
                .unwrap_err()
                .contains("v2")
        );
        let mut m = md(&[("enableTLS", "false"), ("failover", "no")]);
        normalize("state.redis", "v1", &mut m).unwrap();
    }
}
