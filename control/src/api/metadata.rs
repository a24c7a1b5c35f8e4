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
    let actor_counts: Vec<rt::ActiveActorsCount> = runtime
        .actors
        .get()
        .map(|a| {
            a.counts()
                .into_iter()
                .map(|(r#type, count)| rt::ActiveActorsCount {
                    r#type,
                    count: count as i32,
                })
                .collect()
        })
        .unwrap_or_default();
    rt::GetMetadataResponse {
        id: opts.app_id.clone(),
        active_actors_count: actor_counts.clone(),
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
            // daprd builds that serve the subtle crypto API list this
            // made-up feature and apps (Dapr's own e2e app) look for it:
            // listed once a crypto component makes the API usable.
            .chain((!snap.crypto.is_empty()).then(|| "_SubtleCrypto".to_string()))
            .collect(),
        actor_runtime: Some(match runtime.actors.get() {
            Some(a) => rt::ActorRuntime {
                runtime_status: rt::actor_runtime::ActorRuntimeStatus::Running as i32,
                active_actors: actor_counts,
                host_ready: a.ready() && !a.config().entities.is_empty(),
                placement: if a.ready() {
                    "placement: connected".into()
                } else {
                    "placement: disconnected".into()
                },
            },
            None => rt::ActorRuntime {
                runtime_status: rt::actor_runtime::ActorRuntimeStatus::Initializing as i32,
                active_actors: Vec::new(),
                host_ready: false,
                placement: "placement: disconnected".into(),
            },
        }),
        // daprd lists the scheduler instances it is connected to; tandem
        // the engine its jobs live in.
        scheduler: Some(rt::MetadataScheduler {
            connected_addresses: match &snap.coordination {
                Some((_, c)) => c.addresses.clone(),
                None => vec![format!(
                    "sqlite://{}",
                    crate::home::dir().join("jobs.db").display()
                )],
            },
        }),
        workflows: Some(rt::MetadataWorkflows {
            connected_workers: runtime
                .workflows
                .get()
                .map_or(0, |w| w.connected_workers() as i32),
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

/// The HTTP `GET /v1.0/metadata` body, shaped like daprd's: its keys in
/// daprd's order, empty lists, maps and strings left out where daprd's
/// `omitempty` leaves them out, and the objects daprd always writes kept.
pub fn to_json(m: &rt::GetMetadataResponse) -> Value {
    let mut o = Map::new();
    if !m.id.is_empty() {
        o.insert("id".into(), json!(m.id));
    }
    if !m.runtime_version.is_empty() {
        o.insert("runtimeVersion".into(), json!(m.runtime_version));
    }
    if !m.enabled_features.is_empty() {
        o.insert("enabledFeatures".into(), json!(m.enabled_features));
    }
    if !m.registered_components.is_empty() {
        let comps: Vec<Value> = m
            .registered_components
            .iter()
            .map(|c| {
                let mut v = Map::new();
                for (k, val) in [
                    ("name", &c.name),
                    ("type", &c.r#type),
                    ("version", &c.version),
                ] {
                    if !val.is_empty() {
                        v.insert(k.into(), json!(val));
                    }
                }
                if !c.capabilities.is_empty() {
                    v.insert("capabilities".into(), json!(c.capabilities));
                }
                Value::Object(v)
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
                let mut v = Map::new();
                v.insert("pubsubname".into(), json!(s.pubsub_name));
                v.insert("topic".into(), json!(s.topic));
                if !s.metadata.is_empty() {
                    let md: std::collections::BTreeMap<_, _> = s.metadata.iter().collect();
                    v.insert("metadata".into(), json!(md));
                }
                // A flat list over HTTP (the gRPC message nests it).
                let rules: Vec<Value> = s
                    .rules
                    .iter()
                    .flat_map(|r| &r.rules)
                    .map(|r| {
                        let mut rule = Map::new();
                        if !r.r#match.is_empty() {
                            rule.insert("match".into(), json!(r.r#match));
                        }
                        if !r.path.is_empty() {
                            rule.insert("path".into(), json!(r.path));
                        }
                        Value::Object(rule)
                    })
                    .collect();
                if !rules.is_empty() {
                    v.insert("rules".into(), Value::Array(rules));
                }
                v.insert("deadLetterTopic".into(), json!(s.dead_letter_topic));
                v.insert(
                    "type".into(),
                    json!(
                        rt::PubsubSubscriptionType::try_from(s.r#type)
                            .map(|t| t.as_str_name())
                            .unwrap_or("UNKNOWN")
                    ),
                );
                Value::Object(v)
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
    let p = m.app_connection_properties.clone().unwrap_or_default();
    let mut v = Map::new();
    if p.port > 0 {
        v.insert("port".into(), json!(p.port));
    }
    if !p.protocol.is_empty() {
        v.insert("protocol".into(), json!(p.protocol));
    }
    if !p.channel_address.is_empty() {
        v.insert("channelAddress".into(), json!(p.channel_address));
    }
    if p.max_concurrency > 0 {
        v.insert("maxConcurrency".into(), json!(p.max_concurrency));
    }
    if let Some(h) = &p.health {
        let mut health = Map::new();
        // daprd names the path for HTTP apps only.
        if !h.health_check_path.is_empty() && !p.protocol.starts_with("grpc") {
            health.insert("healthCheckPath".into(), json!(h.health_check_path));
        }
        health.insert("healthProbeInterval".into(), json!(h.health_probe_interval));
        health.insert("healthProbeTimeout".into(), json!(h.health_probe_timeout));
        if h.health_threshold > 0 {
            health.insert("healthThreshold".into(), json!(h.health_threshold));
        }
        v.insert("health".into(), Value::Object(health));
    }
    o.insert("appConnectionProperties".into(), Value::Object(v));
    let a = m.actor_runtime.clone().unwrap_or_default();
    let mut actors = Map::new();
    actors.insert(
        "runtimeStatus".into(),
        json!(
            rt::actor_runtime::ActorRuntimeStatus::try_from(a.runtime_status)
                .map(|s| s.as_str_name())
                .unwrap_or("DISABLED")
        ),
    );
    if !a.active_actors.is_empty() {
        actors.insert(
            "activeActors".into(),
            Value::Array(
                a.active_actors
                    .iter()
                    .map(|c| json!({"type": c.r#type, "count": c.count}))
                    .collect(),
            ),
        );
    }
    actors.insert("hostReady".into(), json!(a.host_ready));
    if !a.placement.is_empty() {
        actors.insert("placement".into(), json!(a.placement));
    }
    o.insert("actorRuntime".into(), Value::Object(actors));
    if let Some(s) = m
        .scheduler
        .as_ref()
        .filter(|s| !s.connected_addresses.is_empty())
    {
        o.insert(
            "scheduler".into(),
            json!({"connected_addresses": s.connected_addresses}),
        );
    }
    let workers = m.workflows.as_ref().map_or(0, |w| w.connected_workers);
    o.insert(
        "workflows".into(),
        if workers > 0 {
            json!({"connectedWorkers": workers})
        } else {
            json!({})
        },
    );
    // tandem's addition (newer Dapr versions list them too).
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
    Value::Object(o)
}
