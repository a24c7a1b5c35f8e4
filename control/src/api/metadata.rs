//! The metadata API: one builder for the gRPC message, and the JSON form the
//! HTTP API serves derived from it, so both always agree.

use crate::runtime::Runtime;
use serde_json::{Map, Value, json};
use tandem_proto::runtime::v1 as rt;

pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn build(runtime: &Runtime) -> rt::GetMetadataResponse {
    let snap = runtime.snapshot();
    let opts = &runtime.options;
    let mut extended: std::collections::HashMap<String, String> =
        runtime.extended().into_iter().collect();
    extended.insert("daprRuntimeVersion".into(), RUNTIME_VERSION.into());
    extended.insert("tandemVersion".into(), RUNTIME_VERSION.into());
    let subscriptions = runtime
        .subscriptions()
        .into_iter()
        .map(|(spec, kind)| {
            let routes = spec.effective_routes();
            let mut rules: Vec<rt::PubsubSubscriptionRule> = routes
                .rules
                .iter()
                .map(|r| rt::PubsubSubscriptionRule {
                    r#match: r.match_.clone(),
                    path: r.path.clone(),
                })
                .collect();
            if let Some(default) = routes.default {
                rules.push(rt::PubsubSubscriptionRule {
                    r#match: String::new(),
                    path: default,
                });
            }
            rt::PubsubSubscription {
                pubsub_name: spec.pubsubname,
                topic: spec.topic,
                metadata: spec.metadata.into_iter().collect(),
                rules: Some(rt::PubsubSubscriptionRules { rules }),
                dead_letter_topic: spec.dead_letter_topic.unwrap_or_default(),
                r#type: match kind {
                    crate::snapshot::SubscriptionKind::Declarative => {
                        rt::PubsubSubscriptionType::Declarative
                    }
                    crate::snapshot::SubscriptionKind::Programmatic => {
                        rt::PubsubSubscriptionType::Programmatic
                    }
                    crate::snapshot::SubscriptionKind::Streaming => {
                        rt::PubsubSubscriptionType::Streaming
                    }
                } as i32,
            }
        })
        .collect();
    let health = opts
        .enable_app_health_check
        .then(|| rt::AppConnectionHealthProperties {
            health_check_path: opts.app_health_check_path.clone(),
            health_probe_interval: tandem_config::GoDuration(opts.app_health_probe_interval)
                .to_string(),
            health_probe_timeout: tandem_config::GoDuration(opts.app_health_probe_timeout)
                .to_string(),
            health_threshold: opts.app_health_threshold as i32,
        });
    rt::GetMetadataResponse {
        id: opts.app_id.clone(),
        active_actors_count: Vec::new(),
        registered_components: snap
            .components
            .iter()
            .map(|c| rt::RegisteredComponents {
                name: c.name.clone(),
                r#type: c.type_.clone(),
                version: c.version.clone(),
                capabilities: c.capabilities.clone(),
            })
            .collect(),
        extended_metadata: extended,
        subscriptions,
        http_endpoints: snap
            .resources
            .http_endpoints
            .iter()
            .map(|h| rt::MetadataHttpEndpoint {
                name: h.resource.metadata.name.clone(),
            })
            .collect(),
        app_connection_properties: Some(rt::AppConnectionProperties {
            port: opts.app_port.map_or(0, i32::from),
            protocol: opts.app_protocol.as_str().into(),
            channel_address: opts.app_channel_address.clone(),
            max_concurrency: opts.app_max_concurrency.max(0) as i32,
            health,
        }),
        runtime_version: RUNTIME_VERSION.into(),
        enabled_features: snap
            .configuration
            .spec
            .features
            .iter()
            .filter(|f| f.enabled)
            .map(|f| f.name.clone())
            .collect(),
        actor_runtime: Some(rt::ActorRuntime {
            runtime_status: rt::actor_runtime::ActorRuntimeStatus::Disabled as i32,
            active_actors: Vec::new(),
            host_ready: false,
            placement: String::new(),
        }),
        scheduler: None,
        workflows: Some(rt::MetadataWorkflows {
            connected_workers: 0,
        }),
        mcp_servers: Vec::new(),
        workflow_access_policies: Vec::new(),
        resiliencies: snap
            .resources
            .resiliencies
            .iter()
            .map(|r| rt::MetadataNamedResource {
                name: r.resource.metadata.name.clone(),
            })
            .collect(),
    }
}

/// The HTTP `GET /v1.0/metadata` body, shaped like daprd's: empty lists and
/// maps are left out, except the objects daprd always writes.
pub fn to_json(m: &rt::GetMetadataResponse) -> Value {
    let mut o = Map::new();
    o.insert("id".into(), json!(m.id));
    o.insert("runtimeVersion".into(), json!(m.runtime_version));
    if !m.enabled_features.is_empty() {
        o.insert("enabledFeatures".into(), json!(m.enabled_features));
    }
    if !m.registered_components.is_empty() {
        let comps: Vec<Value> = m
            .registered_components
            .iter()
            .map(|c| {
                let mut v = json!({"name": c.name, "type": c.r#type, "version": c.version});
                if !c.capabilities.is_empty() {
                    v["capabilities"] = json!(c.capabilities);
                }
                v
            })
            .collect();
        o.insert("components".into(), Value::Array(comps));
    }
    let extended: std::collections::BTreeMap<_, _> = m.extended_metadata.iter().collect();
    o.insert("extended".into(), json!(extended));
    if !m.subscriptions.is_empty() {
        let subs: Vec<Value> = m
            .subscriptions
            .iter()
            .map(|s| {
                let mut v = json!({
                    "pubsubname": s.pubsub_name,
                    "topic": s.topic,
                    "type": rt::PubsubSubscriptionType::try_from(s.r#type)
                        .map(|t| t.as_str_name())
                        .unwrap_or("UNKNOWN"),
                });
                if !s.metadata.is_empty() {
                    let md: std::collections::BTreeMap<_, _> = s.metadata.iter().collect();
                    v["metadata"] = json!(md);
                }
                if let Some(rules) = &s.rules {
                    v["rules"] = Value::Array(
                        rules
                            .rules
                            .iter()
                            .map(|r| json!({"match": r.r#match, "path": r.path}))
                            .collect(),
                    );
                }
                if !s.dead_letter_topic.is_empty() {
                    v["deadLetterTopic"] = json!(s.dead_letter_topic);
                }
                v
            })
            .collect();
        o.insert("subscriptions".into(), Value::Array(subs));
    }
    if !m.http_endpoints.is_empty() {
        o.insert(
            "httpEndpoints".into(),
            Value::Array(
                m.http_endpoints
                    .iter()
                    .map(|h| json!({"name": h.name}))
                    .collect(),
            ),
        );
    }
    if let Some(p) = &m.app_connection_properties {
        let mut v = json!({"protocol": p.protocol, "channelAddress": p.channel_address});
        if p.port > 0 {
            v["port"] = json!(p.port);
        }
        if p.max_concurrency > 0 {
            v["maxConcurrency"] = json!(p.max_concurrency);
        }
        if let Some(h) = &p.health {
            v["health"] = json!({
                "healthCheckPath": h.health_check_path,
                "healthProbeInterval": h.health_probe_interval,
                "healthProbeTimeout": h.health_probe_timeout,
                "healthThreshold": h.health_threshold,
            });
        }
        o.insert("appConnectionProperties".into(), v);
    }
    if let Some(a) = &m.actor_runtime {
        o.insert(
            "actorRuntime".into(),
            json!({
                "runtimeStatus": rt::actor_runtime::ActorRuntimeStatus::try_from(a.runtime_status)
                    .map(|s| s.as_str_name())
                    .unwrap_or("DISABLED"),
                "hostReady": a.host_ready,
                "placement": a.placement,
            }),
        );
    }
    if !m.resiliencies.is_empty() {
        o.insert(
            "resiliencies".into(),
            Value::Array(
                m.resiliencies
                    .iter()
                    .map(|r| json!({"name": r.name}))
                    .collect(),
            ),
        );
    }
    o.insert(
        "workflows".into(),
        json!({"connectedWorkers": m.workflows.as_ref().map_or(0, |w| w.connected_workers)}),
    );
    Value::Object(o)
}
