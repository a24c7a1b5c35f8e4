//! Components: the registry that maps a Dapr type string to a constructor,
//! and the work of turning loaded `Component` resources into live ones —
//! resolving `secretKeyRef`/`envRef`, init timeouts, `ignoreErrors`.

pub mod bindings;
pub mod configuration;
pub mod conversation;
pub mod coordination;
pub mod crypto;
pub mod dapr_metadata;
pub mod lock;
pub mod metadata;
#[cfg(feature = "postgres")]
pub mod postgres_conn;
pub mod pubsub;
pub mod secretstores;
pub use tandem_stateful::shared_sqlite;
pub mod state;

use crate::snapshot::RegisteredComponent;
use secretstores::SecretStore;
use state::StateStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tandem_config::{Component, LoadContext, Loaded};

/// A live component of any building block.
#[derive(Clone)]
pub enum Live {
    Secret(Arc<dyn SecretStore>),
    State(Arc<dyn StateStore>),
    PubSub(Arc<dyn pubsub::PubSub>),
    Binding(Arc<dyn bindings::Binding>),
    Lock(Arc<dyn lock::LockStore>),
    Configuration(Arc<dyn configuration::ConfigurationStore>),
    Conversation(Arc<dyn conversation::Conversation>),
    Crypto(Arc<dyn crypto::KeyStore>),
    Coordination(coordination::Coordination),
}

impl Live {
    fn features(&self) -> Vec<&'static str> {
        match self {
            Live::Secret(s) => s.features(),
            Live::State(s) => s.features(),
            Live::PubSub(p) => p.features(),
            // As daprd lists them in the metadata API.
            Live::Binding(b) => {
                let mut f = Vec::new();
                if b.is_input() {
                    f.push("INPUT_BINDING");
                }
                if !b.operations().is_empty() {
                    f.push("OUTPUT_BINDING");
                }
                f
            }
            Live::Lock(_)
            | Live::Configuration(_)
            | Live::Conversation(_)
            | Live::Crypto(_)
            | Live::Coordination(_) => Vec::new(),
        }
    }
}

/// A lock store with the key prefix its `keyPrefix` metadata chose.
#[derive(Clone)]
pub struct LockComponent {
    pub store: Arc<dyn lock::LockStore>,
    pub prefix: Option<String>,
}

/// A binding with what the sidecar needs around it.
#[derive(Clone)]
pub struct BindingComponent {
    pub binding: Arc<dyn bindings::Binding>,
    pub direction: bindings::Direction,
    /// Metadata `route`: the app path input events are POSTed to
    /// (default `/<name>`).
    pub route: String,
    /// Sidecar → external system (output operations).
    pub outbound: Arc<tandem_proxy::resilience::Policy>,
    /// Sidecar → app (input events).
    pub inbound: Arc<tandem_proxy::resilience::Policy>,
}

/// A state store with the key prefix its `keyPrefix` metadata chose.
#[derive(Clone)]
pub struct StateComponent {
    pub store: Arc<dyn StateStore>,
    /// The component's outbound resiliency policy (may be empty).
    pub outbound: Arc<tandem_proxy::resilience::Policy>,
    /// `None`: keys are stored as given (`keyPrefix: none`).
    pub prefix: Option<String>,
    /// Transactions publish their upserts (`outboxPublishPubsub`, …).
    pub outbox: Option<crate::outbox::OutboxConfig>,
    /// `actorStateStore: "true"`: actors keep their state here.
    pub actor_store: bool,
}

/// A pub/sub broker with what the sidecar needs around it.
#[derive(Clone)]
pub struct PubSubComponent {
    pub broker: Arc<dyn pubsub::PubSub>,
    /// `consumerID` (default: the app id): the consumer group.
    pub consumer_id: String,
    pub scopes: pubsub::TopicScopes,
    /// Sidecar → broker (publish).
    pub outbound: Arc<tandem_proxy::resilience::Policy>,
    /// Sidecar → app (event delivery); shared by this component's
    /// subscriptions.
    pub inbound: Arc<tandem_proxy::resilience::Policy>,
    /// Metadata `concurrency`: how many messages of one subscription are
    /// delivered to the app at once (default 1: in order).
    pub concurrency: usize,
}

/// A conversation (LLM) component with its outbound resiliency policy.
#[derive(Clone)]
pub struct ConversationComponent {
    pub llm: Arc<dyn conversation::Conversation>,
    pub outbound: Arc<tandem_proxy::resilience::Policy>,
}

/// How many messages `parallel` delivery keeps in flight per subscription.
const PARALLEL_DELIVERIES: usize = 100;

/// A broker's delivery concurrency from its metadata, as Dapr's components
/// spell it: `concurrency` as a number (Redis) or `single`/`parallel`
/// (JetStream), or `concurrencyMode: single|parallel` (RabbitMQ, Kafka).
/// Default 1: in order.
fn delivery_concurrency(m: &BTreeMap<String, String>) -> Result<usize, String> {
    let mode = |key: &str, v: &str| match v {
        "single" => Ok(1),
        "parallel" => Ok(PARALLEL_DELIVERIES),
        _ => match v.parse::<usize>() {
            Ok(n) if key == "concurrency" && (1..=10_000).contains(&n) => Ok(n),
            _ => Err(format!(
                "metadata `{key}` is `{v}`; expected single, parallel{}",
                if key == "concurrency" {
                    " or a number from 1 to 10000"
                } else {
                    ""
                }
            )),
        },
    };
    for key in ["concurrency", "concurrencyMode"] {
        if let Some(v) = m.get(key).filter(|v| !v.is_empty()) {
            return mode(key, v);
        }
    }
    Ok(1)
}

#[cfg(test)]
mod concurrency_tests {
    use super::*;

    #[test]
    fn delivery_concurrency_spellings() {
        let m = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(delivery_concurrency(&BTreeMap::new()), Ok(1));
        assert_eq!(delivery_concurrency(&m("concurrency", "8")), Ok(8));
        assert_eq!(delivery_concurrency(&m("concurrency", "single")), Ok(1));
        assert_eq!(
            delivery_concurrency(&m("concurrencyMode", "parallel")),
            Ok(PARALLEL_DELIVERIES)
        );
        assert!(delivery_concurrency(&m("concurrency", "0")).is_err());
        let e = delivery_concurrency(&m("concurrencyMode", "4")).unwrap_err();
        assert!(e.contains("single, parallel"), "{e}");
    }
}

/// Dapr's `keyPrefix`: `appid` (default), `name`, `namespace`, `none`, or a
/// literal.
fn key_prefix(
    metadata: &BTreeMap<String, String>,
    store: &str,
    ctx: &LoadContext,
) -> Option<String> {
    let app = || Some(ctx.app_id.clone()).filter(|a| !a.is_empty());
    match metadata
        .get("keyPrefix")
        .map(|s| s.trim())
        .unwrap_or("appid")
    {
        "" | "appid" => app(),
        "name" => Some(store.to_string()),
        "namespace" => match &ctx.namespace {
            Some(ns) => Some(format!("{ns}.{}", ctx.app_id)),
            None => app(),
        },
        "none" => None,
        literal => Some(literal.to_string()),
    }
}

type Constructor = fn(&BTreeMap<String, String>) -> Result<Live, String>;

struct Registration {
    type_name: &'static str,
    build: Constructor,
}

/// Every component type this build supports. Building blocks add theirs here.
const REGISTRY: &[Registration] = &[
    Registration {
        type_name: "bindings.cron",
        build: |m| bindings::cron::Cron::new(m).map(|b| Live::Binding(Arc::new(b))),
    },
    Registration {
        type_name: "bindings.http",
        build: |m| bindings::http::HttpBinding::new(m).map(|b| Live::Binding(Arc::new(b))),
    },
    Registration {
        type_name: "bindings.localstorage",
        build: |m| bindings::localstorage::LocalStorage::new(m).map(|b| Live::Binding(Arc::new(b))),
    },
    #[cfg(feature = "postgres")]
    Registration {
        type_name: "configuration.postgresql",
        build: |m| {
            tokio::runtime::Handle::current()
                .block_on(configuration::postgres::PostgresConfig::connect(m))
                .map(|c| Live::Configuration(Arc::new(c)))
        },
    },
    #[cfg(feature = "redis")]
    Registration {
        type_name: "configuration.redis",
        build: |m| {
            tokio::runtime::Handle::current()
                .block_on(configuration::redis::RedisConfig::connect(m))
                .map(|c| Live::Configuration(Arc::new(c)))
        },
    },
    Registration {
        type_name: "conversation.anthropic",
        build: |m| {
            conversation::anthropic::Anthropic::new(m)
                .and_then(|c| conversation::with_cache(c, m))
                .map(Live::Conversation)
        },
    },
    Registration {
        type_name: "conversation.echo",
        build: |m| conversation::echo::Echo::new(m).map(|c| Live::Conversation(Arc::new(c))),
    },
    Registration {
        type_name: "conversation.ollama",
        build: |m| {
            conversation::ollama::Ollama::new(m)
                .and_then(|c| conversation::with_cache(c, m))
                .map(Live::Conversation)
        },
    },
    Registration {
        type_name: "conversation.openai",
        build: |m| {
            conversation::openai::OpenAi::new(m)
                .and_then(|c| conversation::with_cache(c, m))
                .map(Live::Conversation)
        },
    },
    Registration {
        type_name: "coordination.etcd",
        build: |m| coordination::etcd(m).map(Live::Coordination),
    },
    Registration {
        type_name: "crypto.dapr.jwks",
        build: |m| {
            tokio::runtime::Handle::current()
                .block_on(crypto::jwks::Jwks::load(m))
                .map(|c| Live::Crypto(Arc::new(c)))
        },
    },
    Registration {
        type_name: "crypto.dapr.localstorage",
        build: |m| crypto::localstorage::LocalStorage::new(m).map(|c| Live::Crypto(Arc::new(c))),
    },
    Registration {
        type_name: "lock.in-memory",
        build: |m| lock::memory::MemoryLock::new(m).map(|l| Live::Lock(Arc::new(l))),
    },
    #[cfg(feature = "redis")]
    Registration {
        type_name: "lock.redis",
        build: |m| {
            tokio::runtime::Handle::current()
                .block_on(lock::redis::RedisLock::connect(m))
                .map(|l| Live::Lock(Arc::new(l)))
        },
    },
    #[cfg(feature = "mqtt")]
    Registration {
        type_name: "bindings.mqtt3",
        build: |m| bindings::mqtt::MqttBinding::new(m).map(|b| Live::Binding(Arc::new(b))),
    },
    #[cfg(feature = "postgres")]
    Registration {
        type_name: "bindings.postgresql",
        build: |m| {
            tokio::runtime::Handle::current()
                .block_on(bindings::postgres::PostgresBinding::connect(m))
                .map(|b| Live::Binding(Arc::new(b)))
        },
    },
    #[cfg(feature = "rabbitmq")]
    Registration {
        type_name: "bindings.rabbitmq",
        build: |m| {
            tokio::runtime::Handle::current()
                .block_on(bindings::rabbitmq::RabbitBinding::connect(m))
                .map(|b| Live::Binding(Arc::new(b)))
        },
    },
    #[cfg(feature = "redis")]
    Registration {
        type_name: "bindings.redis",
        build: |m| {
            tokio::runtime::Handle::current()
                .block_on(bindings::redis::RedisBinding::connect(m))
                .map(|b| Live::Binding(Arc::new(b)))
        },
    },
    Registration {
        type_name: "secretstores.local.file",
        build: |m| {
            secretstores::local_file::LocalFileStore::new(m).map(|s| Live::Secret(Arc::new(s)))
        },
    },
    Registration {
        type_name: "secretstores.local.env",
        build: |m| {
            secretstores::local_env::LocalEnvStore::new(m).map(|s| Live::Secret(Arc::new(s)))
        },
    },
    Registration {
        type_name: "pubsub.embedded",
        build: |m| pubsub::embedded::EmbeddedPubSub::new(m).map(|p| Live::PubSub(Arc::new(p))),
    },
    Registration {
        type_name: "pubsub.in-memory",
        build: |m| pubsub::memory::MemoryPubSub::new(m).map(|p| Live::PubSub(Arc::new(p))),
    },
    #[cfg(feature = "jetstream")]
    Registration {
        type_name: "pubsub.jetstream",
        build: |m| {
            tokio::runtime::Handle::current()
                .block_on(pubsub::jetstream::JetStreamPubSub::connect(m))
                .map(|p| Live::PubSub(Arc::new(p)))
        },
    },
    #[cfg(feature = "mqtt")]
    Registration {
        type_name: "pubsub.mqtt3",
        build: |m| pubsub::mqtt::MqttPubSub::new(m).map(|p| Live::PubSub(Arc::new(p))),
    },
    #[cfg(feature = "rabbitmq")]
    Registration {
        type_name: "pubsub.rabbitmq",
        build: |m| {
            tokio::runtime::Handle::current()
                .block_on(pubsub::rabbitmq::RabbitPubSub::connect(m))
                .map(|p| Live::PubSub(Arc::new(p)))
        },
    },
    #[cfg(feature = "redis")]
    Registration {
        type_name: "pubsub.redis",
        build: |m| {
            tokio::runtime::Handle::current()
                .block_on(pubsub::redis::RedisPubSub::connect(m))
                .map(|p| Live::PubSub(Arc::new(p)))
        },
    },
    Registration {
        type_name: "state.in-memory",
        build: |m| state::memory::MemoryStore::new(m).map(|s| Live::State(Arc::new(s))),
    },
    Registration {
        type_name: "state.sqlite",
        build: |m| state::sqlite::SqliteStore::new(m).map(|s| Live::State(Arc::new(s))),
    },
    #[cfg(feature = "postgres")]
    Registration {
        type_name: "state.postgresql",
        build: |m| {
            tokio::runtime::Handle::current()
                .block_on(state::postgres::PostgresStore::connect(m))
                .map(|s| Live::State(Arc::new(s)))
        },
    },
    #[cfg(feature = "redis")]
    Registration {
        type_name: "state.redis",
        // Constructors run on the blocking pool, inside the runtime.
        build: |m| {
            tokio::runtime::Handle::current()
                .block_on(state::redis::RedisStore::connect(m))
                .map(|s| Live::State(Arc::new(s)))
        },
    },
];

pub fn supported_types() -> Vec<&'static str> {
    REGISTRY.iter().map(|r| r.type_name).collect()
}

/// Components that came up, ready to be put in a snapshot.
#[derive(Default)]
pub struct LiveComponents {
    pub secret_stores: BTreeMap<String, Arc<dyn SecretStore>>,
    pub state_stores: BTreeMap<String, StateComponent>,
    pub pubsubs: BTreeMap<String, PubSubComponent>,
    pub bindings: BTreeMap<String, BindingComponent>,
    pub lock_stores: BTreeMap<String, LockComponent>,
    pub configuration_stores: BTreeMap<String, Arc<dyn configuration::ConfigurationStore>>,
    pub conversations: BTreeMap<String, ConversationComponent>,
    pub crypto: BTreeMap<String, Arc<dyn crypto::KeyStore>>,
    /// The one coordination component, by name (none: the embedded engine).
    pub coordination: Option<(String, coordination::Coordination)>,
    pub registered: Vec<RegisteredComponent>,
    /// Every live component with the resource it was made from: a reload
    /// keeps the instances whose resource did not change.
    pub instances: Instances,
}

/// Live components by name, with their resources.
pub type Instances = BTreeMap<String, (Component, Live)>;

/// Why a component did not come up; `fatal` unless it had `ignoreErrors`.
#[derive(Debug)]
pub struct InitError {
    pub component: String,
    pub message: String,
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "component `{}`: {}", self.component, self.message)
    }
}

const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Initialises every component in order: secret stores first (others may
/// reference them), then the rest. A failure is returned unless the
/// component says `ignoreErrors: true`, in which case it is logged, counted
/// through `on_skip`, and left out.
/// `previous`: the live components of the snapshot being replaced; one
/// whose resource is unchanged is kept as it is (its connections too)
/// instead of being made again.
pub async fn init_all(
    components: &[Loaded<Component>],
    ctx: &LoadContext,
    policies: &tandem_proxy::resilience::Policies,
    previous: Option<&Instances>,
    mut on_skip: impl FnMut(&str, &str),
) -> Result<LiveComponents, InitError> {
    let mut live = LiveComponents::default();
    let (secret_first, rest): (Vec<_>, Vec<_>) = components
        .iter()
        .partition(|c| c.resource.spec.type_.starts_with("secretstores."));
    for loaded in secret_first.into_iter().chain(rest) {
        let c = &loaded.resource;
        let name = c.metadata.name.clone();
        let kept = previous
            .and_then(|p| p.get(&name))
            .filter(|(was, _)| was == c)
            .map(|(_, l)| l.clone());
        match init_one(loaded, &live, ctx, kept).await {
            Ok((component, metadata)) => {
                live.instances
                    .insert(name.clone(), (c.clone(), component.clone()));
                let mut features = component.features();
                // ACTOR is a claim about ETag + transactions together.
                if !(features.contains(&state::feature::ETAG)
                    && features.contains(&state::feature::TRANSACTIONAL))
                {
                    features.retain(|f| *f != state::feature::ACTOR);
                }
                live.registered.push(RegisteredComponent {
                    name: name.clone(),
                    type_: c.spec.type_.clone(),
                    version: if c.spec.version.is_empty() {
                        "v1".into()
                    } else {
                        c.spec.version.clone()
                    },
                    capabilities: features.into_iter().map(String::from).collect(),
                });
                match component {
                    Live::Secret(s) => {
                        live.secret_stores.insert(name.clone(), s);
                    }
                    Live::PubSub(broker) => {
                        let consumer_id = metadata
                            .get("consumerID")
                            .filter(|c| !c.is_empty())
                            .cloned()
                            .unwrap_or_else(|| ctx.app_id.clone());
                        live.pubsubs.insert(
                            name.clone(),
                            PubSubComponent {
                                broker,
                                consumer_id,
                                scopes: pubsub::TopicScopes::from_metadata(&metadata),
                                outbound: policies.component_outbound(&name, "Pubsub"),
                                inbound: policies.component_inbound(&name, "Pubsub"),
                                concurrency: delivery_concurrency(&metadata).unwrap_or(1),
                            },
                        );
                    }
                    Live::Configuration(store) => {
                        live.configuration_stores.insert(name.clone(), store);
                    }
                    Live::Crypto(store) => {
                        live.crypto.insert(name.clone(), store);
                    }
                    Live::Coordination(engine) => {
                        if let Some((first, _)) = &live.coordination {
                            return Err(InitError {
                                component: name,
                                message: format!(
                                    "only one coordination component may be loaded and `{first}` already is; remove one of the two (this one is defined at {})",
                                    loaded.source
                                ),
                            });
                        }
                        live.coordination = Some((name.clone(), engine));
                    }
                    Live::Conversation(llm) => {
                        live.conversations.insert(
                            name.clone(),
                            ConversationComponent {
                                llm,
                                outbound: policies.component_outbound(&name, "Conversation"),
                            },
                        );
                    }
                    Live::Lock(store) => {
                        live.lock_stores.insert(
                            name.clone(),
                            LockComponent {
                                store,
                                prefix: key_prefix(&metadata, &name, ctx),
                            },
                        );
                    }
                    Live::Binding(binding) => {
                        live.bindings.insert(
                            name.clone(),
                            BindingComponent {
                                binding,
                                // Checked by init_one.
                                direction: bindings::Direction::from_metadata(&metadata)
                                    .unwrap_or_default(),
                                route: metadata
                                    .get("route")
                                    .filter(|r| !r.is_empty())
                                    .map(|r| format!("/{}", r.trim_start_matches('/')))
                                    .unwrap_or_else(|| format!("/{name}")),
                                outbound: policies.component_outbound(&name, "Binding"),
                                inbound: policies.component_inbound(&name, "Binding"),
                            },
                        );
                    }
                    Live::State(store) => {
                        let prefix = key_prefix(&metadata, &name, ctx);
                        let outbound = policies.component_outbound(&name, "Statestore");
                        live.state_stores.insert(
                            name.clone(),
                            StateComponent {
                                store,
                                prefix,
                                outbound,
                                // Checked by init_one.
                                outbox: crate::outbox::OutboxConfig::from_metadata(&metadata)
                                    .ok()
                                    .flatten(),
                                actor_store: metadata
                                    .get("actorStateStore")
                                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
                            },
                        );
                    }
                }
                tracing::info!(component = %name, r#type = %c.spec.type_, "component loaded");
            }
            Err(message) => {
                let message = format!("{message} (defined at {})", loaded.source);
                if c.spec.ignore_errors {
                    tracing::warn!(component = %name, error = %message, "component failed to initialise; skipped because ignoreErrors is true");
                    on_skip(&name, &message);
                } else {
                    return Err(InitError {
                        component: name,
                        message,
                    });
                }
            }
        }
    }
    // An outbox names pubsubs that may be defined in any file.
    for (name, state) in &live.state_stores {
        if let Some(o) = &state.outbox {
            for p in [&o.publish_pubsub, &o.internal_pubsub] {
                if !live.pubsubs.contains_key(p) {
                    return Err(InitError {
                        component: name.clone(),
                        message: format!(
                            "the outbox publishes through pubsub `{p}`, which is not loaded; loaded pubsubs: [{}]",
                            live.pubsubs.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
        }
    }
    Ok(live)
}

async fn init_one(
    loaded: &Loaded<Component>,
    live: &LiveComponents,
    ctx: &LoadContext,
    kept: Option<Live>,
) -> Result<(Live, BTreeMap<String, String>), String> {
    let c = &loaded.resource;
    let Some(reg) = REGISTRY.iter().find(|r| r.type_name == c.spec.type_) else {
        return Err(format!(
            "unknown component type `{}`; supported types: {}",
            c.spec.type_,
            supported_types().join(", ")
        ));
    };
    let mut metadata = resolve_metadata(c, live).await?;
    if c.spec.type_.starts_with("pubsub.") {
        // As daprd does: a broker's consumer group (or client id) is the
        // app id unless the component names one.
        let id = metadata.entry("consumerID".into()).or_default();
        if id.is_empty() {
            *id = ctx.app_id.clone();
        }
        delivery_concurrency(&metadata)?;
    }
    if c.spec.type_.starts_with("state.") {
        crate::outbox::OutboxConfig::from_metadata(&metadata)?;
    }
    if c.spec.type_.starts_with("bindings.") {
        bindings::Direction::from_metadata(&metadata)?;
        // The route becomes a request path to the app: it must be one.
        if let Some(route) = metadata.get("route").filter(|r| !r.is_empty()) {
            let path = format!("/{}", route.trim_start_matches('/'));
            if path.parse::<http::uri::PathAndQuery>().is_err() {
                return Err(format!(
                    "metadata `route` is `{route}`: not a valid URL path (spaces and control characters must be percent-encoded)"
                ));
            }
        }
        // A broker client's id, as for pub/sub: the app id unless given.
        let id = metadata.entry("consumerID".into()).or_default();
        if id.is_empty() {
            *id = ctx.app_id.clone();
        }
    }
    if let Some(kept) = kept {
        return Ok((kept, metadata));
    }
    let timeout = c
        .spec
        .init_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_INIT_TIMEOUT);
    let build = reg.build;
    // Constructors may block on I/O (reading files, connecting); keep them
    // off the async workers and bound them by `initTimeout`.
    let task = tokio::task::spawn_blocking(move || build(&metadata).map(|live| (live, metadata)));
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(format!("initialisation panicked: {join}")),
        Err(_) => Err(format!(
            "initialisation did not finish within {}s (spec.initTimeout)",
            timeout.as_secs_f64()
        )),
    }
}

/// The value a `secretKeyRef` points at, read from secret store
/// `store_name` (a resource's `auth.secretStore`); `what` names the field
/// in errors.
pub async fn read_secret_ref(
    stores: &BTreeMap<String, Arc<dyn SecretStore>>,
    store_name: &str,
    r: &tandem_config::SecretKeyRef,
    what: &str,
) -> Result<String, String> {
    if store_name.is_empty() {
        return Err(format!(
            "{what} uses secretKeyRef but the resource has no `auth.secretStore`; add one naming a secret store component"
        ));
    }
    let store = stores.get(store_name).ok_or_else(|| {
        format!(
            "{what} refers to secret store `{store_name}`, which is not defined (or failed to load); defined secret stores: [{}]",
            stores.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let secret = store
        .get(&r.name, &BTreeMap::new())
        .await
        .map_err(|e| {
            format!(
                "{what}: cannot read secret `{}` from `{store_name}`: {e}",
                r.name
            )
        })?
        .ok_or_else(|| {
            format!(
                "{what}: secret `{}` does not exist in `{store_name}`",
                r.name
            )
        })?;
    let key = if r.key.is_empty() { &r.name } else { &r.key };
    secret.get(key).cloned().ok_or_else(|| {
        format!(
            "{what}: secret `{}` in `{store_name}` has no key `{key}`",
            r.name
        )
    })
}

/// Component metadata as plain strings: literals as they are, `envRef` from
/// the environment, `secretKeyRef` through `auth.secretStore`.
async fn resolve_metadata(
    c: &Component,
    live: &LiveComponents,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in &c.spec.metadata {
        let value = if let Some(r) = &item.secret_key_ref {
            read_secret_ref(
                &live.secret_stores,
                &c.auth.secret_store,
                r,
                &format!("metadata `{}`", item.name),
            )
            .await?
        } else if let Some(var) = &item.env_ref {
            std::env::var(var).map_err(|_| {
                format!(
                    "metadata `{}` uses envRef `{var}`, but that environment variable is not set",
                    item.name
                )
            })?
        } else {
            item.value_string().unwrap_or_default()
        };
        out.insert(item.name.clone(), value);
    }
    dapr_metadata::normalize(&c.spec.type_, &c.spec.version, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefix_modes() {
        let md = |v: &str| BTreeMap::from([("keyPrefix".to_string(), v.to_string())]);
        let ctx = |ns: Option<&str>| LoadContext {
            app_id: "orders".into(),
            namespace: ns.map(String::from),
        };
        let none = BTreeMap::new();
        assert_eq!(
            key_prefix(&none, "store", &ctx(None)).as_deref(),
            Some("orders")
        );
        assert_eq!(
            key_prefix(&md("appid"), "store", &ctx(None)).as_deref(),
            Some("orders")
        );
        assert_eq!(
            key_prefix(&md("name"), "store", &ctx(None)).as_deref(),
            Some("store")
        );
        assert_eq!(
            key_prefix(&md("namespace"), "store", &ctx(Some("prod"))).as_deref(),
            Some("prod.orders")
        );
        assert_eq!(
            key_prefix(&md("namespace"), "store", &ctx(None)).as_deref(),
            Some("orders"),
            "falls back to the app id"
        );
        assert_eq!(key_prefix(&md("none"), "store", &ctx(None)), None);
        assert_eq!(
            key_prefix(&md("shared-v2"), "store", &ctx(None)).as_deref(),
            Some("shared-v2")
        );
        let anonymous = LoadContext {
            app_id: String::new(),
            namespace: None,
        };
        assert_eq!(
            key_prefix(&none, "store", &anonymous),
            None,
            "no app id, no prefix"
        );
    }
}
