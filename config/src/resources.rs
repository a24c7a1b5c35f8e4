//! The Dapr resource kinds as typed Rust values (dapr-wire.md §4).
//!
//! Field names follow Dapr's YAML exactly. `spec` sections refuse unknown
//! fields so a typo (`ignoreErors`) is reported instead of silently ignored;
//! `metadata` sections accept anything Kubernetes puts there.

use crate::duration::GoDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `metadata:` of any resource. Only `name` and `namespace` matter to us.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    #[serde(rename = "secretStore", default)]
    pub secret_store: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    #[serde(default)]
    pub key: String,
}

/// One `{name, value | secretKeyRef | envRef}` entry.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetadataItem {
    pub name: String,
    /// Dapr accepts any scalar (and even maps); we keep the JSON value and
    /// turn it into a string with [`MetadataItem::value_string`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(
        rename = "secretKeyRef",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub secret_key_ref: Option<SecretKeyRef>,
    #[serde(rename = "envRef", default, skip_serializing_if = "Option::is_none")]
    pub env_ref: Option<String>,
}

impl MetadataItem {
    /// The literal value as Dapr would pass it to a component: strings as
    /// they are, other scalars and structures as JSON text.
    pub fn value_string(&self) -> Option<String> {
        match &self.value {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(v) => Some(v.to_string()),
        }
    }
}

// ---------------------------------------------------------------- Component

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Component {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ComponentSpec,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub scopes: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub version: String,
    #[serde(rename = "ignoreErrors", default)]
    pub ignore_errors: bool,
    #[serde(
        rename = "initTimeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub init_timeout: Option<GoDuration>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub metadata: Vec<MetadataItem>,
}

// ------------------------------------------------------------- Subscription

/// A declarative subscription; v1alpha1 (`route`) and v2alpha1 (`routes`)
/// both land here.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Subscription {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: SubscriptionSpec,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub scopes: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    pub pubsubname: String,
    pub topic: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// v1alpha1 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// v2alpha1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<SubscriptionRoutes>,
    #[serde(
        rename = "deadLetterTopic",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dead_letter_topic: Option<String>,
    #[serde(
        rename = "bulkSubscribe",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub bulk_subscribe: Option<BulkSubscribe>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRoutes {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub rules: Vec<RouteRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    #[serde(rename = "match")]
    pub match_: String,
    pub path: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BulkSubscribe {
    #[serde(default)]
    pub enabled: bool,
    #[serde(
        rename = "maxMessagesCount",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_messages_count: Option<i32>,
    #[serde(
        rename = "maxAwaitDurationMs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_await_duration_ms: Option<i32>,
}

impl SubscriptionSpec {
    /// The routing table with v1alpha1's single `route` folded in as the
    /// default, the way Dapr treats it (`routes.default` wins).
    pub fn effective_routes(&self) -> SubscriptionRoutes {
        let mut routes = self.routes.clone().unwrap_or_default();
        if routes.default.is_none() {
            routes.default = self.route.clone();
        }
        routes
    }
}

// --------------------------------------------------------------- Resiliency

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Resiliency {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ResiliencySpec,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub scopes: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResiliencySpec {
    #[serde(default)]
    pub policies: Policies,
    #[serde(default)]
    pub targets: Targets,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    #[serde(default)]
    pub timeouts: BTreeMap<String, GoDuration>,
    #[serde(default)]
    pub retries: BTreeMap<String, RetryPolicy>,
    #[serde(rename = "circuitBreakers", default)]
    pub circuit_breakers: BTreeMap<String, CircuitBreakerPolicy>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    #[default]
    Constant,
    Exponential,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default)]
    pub policy: BackoffKind,
    /// Constant delay (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<GoDuration>,
    /// Exponential cap (default 60s).
    #[serde(
        rename = "maxInterval",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_interval: Option<GoDuration>,
    /// -1 (default) retries without limit.
    #[serde(
        rename = "maxRetries",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching: Option<RetryMatching>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryMatching {
    /// e.g. `"429,500-599"`.
    #[serde(
        rename = "httpStatusCodes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_status_codes: Option<String>,
    /// e.g. `"4,8-11,13,14"`.
    #[serde(
        rename = "gRPCStatusCodes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub grpc_status_codes: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerPolicy {
    #[serde(
        rename = "maxRequests",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// CEL over consecutiveFailures, requests, … (default `consecutiveFailures > 5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trip: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    #[serde(default)]
    pub apps: BTreeMap<String, TargetPolicy>,
    #[serde(default)]
    pub actors: BTreeMap<String, ActorTargetPolicy>,
    #[serde(default)]
    pub components: BTreeMap<String, ComponentTargetPolicy>,
}

/// References to named policies, as used by app targets and component
/// directions.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    #[serde(
        rename = "circuitBreaker",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub circuit_breaker: Option<String>,
    #[serde(
        rename = "circuitBreakerCacheSize",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub circuit_breaker_cache_size: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActorTargetPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    #[serde(
        rename = "circuitBreaker",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub circuit_breaker: Option<String>,
    #[serde(
        rename = "circuitBreakerScope",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub circuit_breaker_scope: Option<String>,
    #[serde(
        rename = "circuitBreakerCacheSize",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub circuit_breaker_cache_size: Option<u32>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ComponentTargetPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<TargetPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<TargetPolicy>,
}

// ------------------------------------------------------------- HTTPEndpoint

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct HttpEndpoint {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: HttpEndpointSpec,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub scopes: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpEndpointSpec {
    #[serde(rename = "baseUrl")]
    pub base_url: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub headers: Vec<MetadataItem>,
    #[serde(rename = "clientTLS", default, skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<ClientTls>,
}

/// A TLS input that is either inline or from a secret store.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(
        rename = "secretKeyRef",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub secret_key_ref: Option<SecretKeyRef>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    #[serde(rename = "rootCA", default, skip_serializing_if = "Option::is_none")]
    pub root_ca: Option<TlsValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<TlsValue>,
    #[serde(
        rename = "privateKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub private_key: Option<TlsValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renegotiation: Option<String>,
}

// ------------------------------------------------------------ Configuration

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
pub struct Configuration {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ConfigurationSpec,
}

/// Configuration's spec. Dapr keeps adding fields here, so unknown ones are
/// accepted; the ones tandem acts on are typed.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsSpec>,
    #[serde(
        rename = "accessControl",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub access_control: Option<AccessControlSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretsSpec>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub features: Vec<FeatureSpec>,
    #[serde(
        rename = "httpPipeline",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_pipeline: Option<PipelineSpec>,
    #[serde(
        rename = "appHttpPipeline",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub app_http_pipeline: Option<PipelineSpec>,
    #[serde(
        rename = "nameResolution",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub name_resolution: Option<NameResolutionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<ComponentsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct TracingSpec {
    #[serde(
        rename = "samplingRate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sampling_rate: Option<String>,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel: Option<OtelSpec>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ZipkinSpec {
    #[serde(rename = "endpointAddress", default)]
    pub endpoint_address: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct OtelSpec {
    #[serde(rename = "endpointAddress", default)]
    pub endpoint_address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(rename = "isSecure", default, skip_serializing_if = "Option::is_none")]
    pub is_secure: Option<bool>,
    /// Dapr's `key1=value1,key2=value2` (the form of
    /// `OTEL_EXPORTER_OTLP_HEADERS`), or a list of `name`/`value` items.
    #[serde(default, skip_serializing_if = "OtelHeaders::is_empty")]
    pub headers: OtelHeaders,
    /// Dapr's milliseconds (`timeout: 5000`), or a duration (`5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<OtelTimeout>,
}

/// Headers sent with every export to an OTLP collector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OtelHeaders(pub Vec<(String, String)>);

impl OtelHeaders {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `k1=v1,k2=v2`, values percent-decoded (W3C baggage form, as
    /// OpenTelemetry's `OTEL_EXPORTER_OTLP_HEADERS`); blank entries skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((k, v)) = entry.split_once('=') else {
                return Err(format!(
                    "tracing.otel headers: `{entry}` is not key=value (write key1=value1,key2=value2)"
                ));
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(format!("tracing.otel headers: `{k}` is not a header name"));
            }
            out.push((k.to_string(), percent_decode(v)?));
        }
        Ok(Self(out))
    }
}

fn percent_decode(v: &str) -> Result<String, String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = v
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("tracing.otel headers: bad percent-encoding in `{v}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("tracing.otel headers: `{v}` is not UTF-8"))
}

impl<'de> Deserialize<'de> for OtelHeaders {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Items(Vec<MetadataItem>),
        }
        match Option::<Form>::deserialize(d)? {
            None => Ok(Self::default()),
            Some(Form::Text(t)) => Self::parse(&t).map_err(serde::de::Error::custom),
            Some(Form::Items(items)) => Ok(Self(
                items
                    .iter()
                    .map(|i| (i.name.clone(), i.value_string().unwrap_or_default()))
                    .collect(),
            )),
        }
    }
}

impl Serialize for OtelHeaders {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        s.serialize_str(&text.join(","))
    }
}

/// `tracing.otel.timeout`: a number is milliseconds, as in daprd.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OtelTimeout(pub std::time::Duration);

impl<'de> Deserialize<'de> for OtelTimeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Millis(u64),
            Text(String),
        }
        let t = match Form::deserialize(d)? {
            Form::Millis(ms) => std::time::Duration::from_millis(ms),
            Form::Text(t) => match t.trim().parse::<u64>() {
                Ok(ms) => std::time::Duration::from_millis(ms),
                Err(_) => crate::duration::parse_duration(&t).map_err(|e| {
                    serde::de::Error::custom(format!(
                        "tracing.otel timeout `{t}`: {e} (milliseconds such as 10000, or 10s)"
                    ))
                })?,
            },
        };
        if t.is_zero() {
            return Err(serde::de::Error::custom(
                "tracing.otel timeout must be above zero",
            ));
        }
        Ok(Self(t))
    }
}

impl Serialize for OtelTimeout {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0.as_millis() as u64)
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct MetricSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(rename = "recordErrorCodes", default)]
    pub record_error_codes: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<serde_json::Value>,
    #[serde(rename = "latencyDistributionBuckets", default)]
    pub latency_distribution_buckets: Vec<f64>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub rules: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct MtlsSpec {
    #[serde(default)]
    pub enabled: bool,
    #[serde(
        rename = "workloadCertTTL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub workload_cert_ttl: Option<GoDuration>,
    #[serde(
        rename = "allowedClockSkew",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_clock_skew: Option<GoDuration>,
    #[serde(
        rename = "sentryAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sentry_address: Option<String>,
    #[serde(
        rename = "controlPlaneTrustDomain",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub control_plane_trust_domain: Option<String>,
    #[serde(rename = "tokenValidators", default)]
    pub token_validators: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Allow,
    Deny,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct AccessControlSpec {
    #[serde(rename = "defaultAction", default)]
    pub default_action: Action,
    #[serde(
        rename = "trustDomain",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub trust_domain: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub policies: Vec<AppPolicy>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct AppPolicy {
    #[serde(rename = "appId")]
    pub app_id: String,
    #[serde(rename = "defaultAction", default)]
    pub default_action: Action,
    #[serde(
        rename = "trustDomain",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub trust_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub operations: Vec<OperationPolicy>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct OperationPolicy {
    pub name: String,
    #[serde(rename = "httpVerb", default)]
    pub http_verb: Vec<String>,
    pub action: Action,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct SecretsSpec {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub scopes: Vec<SecretScope>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct SecretScope {
    #[serde(rename = "storeName")]
    pub store_name: String,
    #[serde(rename = "defaultAccess", default)]
    pub default_access: Action,
    #[serde(rename = "allowedSecrets", default)]
    pub allowed_secrets: Vec<String>,
    #[serde(rename = "deniedSecrets", default)]
    pub denied_secrets: Vec<String>,
}

impl SecretScope {
    /// Dapr's rule: a non-empty allow list decides alone; otherwise the deny
    /// list, otherwise the default.
    pub fn allows(&self, key: &str) -> bool {
        if !self.allowed_secrets.is_empty() {
            return self.allowed_secrets.iter().any(|k| k == key);
        }
        if self.denied_secrets.iter().any(|k| k == key) {
            return false;
        }
        self.default_access == Action::Allow
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FeatureSpec {
    pub name: String,
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct PipelineSpec {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub handlers: Vec<PipelineHandler>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct PipelineHandler {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct NameResolutionSpec {
    #[serde(default)]
    pub component: String,
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ApiSpec {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub allowed: Vec<ApiRule>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub denied: Vec<ApiRule>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ApiRule {
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub protocol: String,
}

impl ApiRule {
    /// Rules without a protocol are HTTP rules, as in Dapr.
    fn is_for(&self, protocol: &str) -> bool {
        let own = if self.protocol.is_empty() {
            "http"
        } else {
            &self.protocol
        };
        own.eq_ignore_ascii_case(protocol)
    }

    fn matches(&self, protocol: &str, name: &str, version: &str) -> bool {
        self.is_for(protocol)
            && self.name == name
            && (self.version.is_empty() || self.version == version)
    }
}

impl ApiSpec {
    /// Dapr's rule: with an allow list for this protocol, only what it names;
    /// a deny list entry always wins. `protocol` is `http` or `grpc`.
    pub fn allows(&self, protocol: &str, name: &str, version: &str) -> bool {
        if self
            .denied
            .iter()
            .any(|r| r.matches(protocol, name, version))
        {
            return false;
        }
        let mut allow = self
            .allowed
            .iter()
            .filter(|r| r.is_for(protocol))
            .peekable();
        allow.peek().is_none() || allow.any(|r| r.matches(protocol, name, version))
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ComponentsSpec {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub deny: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct LoggingSpec {
    #[serde(
        rename = "apiLogging",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_logging: Option<ApiLoggingSpec>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ApiLoggingSpec {
    #[serde(default)]
    pub enabled: bool,
    #[serde(rename = "obfuscateURLs", default)]
    pub obfuscate_urls: bool,
    #[serde(rename = "omitHealthChecks", default)]
    pub omit_health_checks: bool,
}

impl ConfigurationSpec {
    /// Whether a preview feature is switched on. `default` is what applies
    /// when the Configuration does not mention it.
    pub fn feature(&self, name: &str, default: bool) -> bool {
        self.features
            .iter()
            .find(|f| f.name == name)
            .map_or(default, |f| f.enabled)
    }

    pub fn secret_scope(&self, store: &str) -> Option<&SecretScope> {
        self.secrets
            .as_ref()?
            .scopes
            .iter()
            .find(|s| s.store_name == store)
    }
}

/// A list field written with no value (`metadata:` or `scopes: ~`) is an
/// empty list, as daprd reads it.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}
