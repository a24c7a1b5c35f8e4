//! The runtime snapshot: everything a request needs from configuration, in
//! one immutable value behind an `ArcSwap`. A request loads it once and uses
//! that view to the end; a reload builds a new one and swaps it in.

use crate::components::{
    self, BindingComponent, ConversationComponent, InitError, LockComponent, PubSubComponent,
    StateComponent, secretstores::SecretStore,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use tandem_config::{Configuration, LoadContext, ResourceSet, SubscriptionSpec};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredComponent {
    pub name: String,
    pub type_: String,
    pub version: String,
    pub capabilities: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionKind {
    Declarative,
    Programmatic,
    Streaming,
}

impl SubscriptionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionKind::Declarative => "DECLARATIVE",
            SubscriptionKind::Programmatic => "PROGRAMMATIC",
            SubscriptionKind::Streaming => "STREAMING",
        }
    }
}

pub struct Snapshot {
    pub generation: u64,
    pub resources: ResourceSet,
    pub configuration: Configuration,
    pub secret_stores: BTreeMap<String, Arc<dyn SecretStore>>,
    pub state_stores: BTreeMap<String, StateComponent>,
    pub pubsubs: BTreeMap<String, PubSubComponent>,
    pub bindings: BTreeMap<String, BindingComponent>,
    pub lock_stores: BTreeMap<String, LockComponent>,
    pub configuration_stores:
        BTreeMap<String, Arc<dyn components::configuration::ConfigurationStore>>,
    pub conversations: BTreeMap<String, ConversationComponent>,
    pub crypto: BTreeMap<String, Arc<dyn components::crypto::KeyStore>>,
    /// The coordination component, by name (none: the embedded engine).
    pub coordination: Option<(String, components::coordination::Coordination)>,
    pub components: Vec<RegisteredComponent>,
    /// The live components with their resources (what a reload may keep).
    pub instances: components::Instances,
    /// Resiliency policies by target, made on first use: each target keeps
    /// its breaker and budget state for the life of the snapshot, and past
    /// a reload when its settings did not change.
    policies: tandem_proxy::resilience::Policies,
}

impl Snapshot {
    /// The resiliency policy for calls to app `app_id`.
    pub fn app_policy(&self, app_id: &str) -> Arc<tandem_proxy::resilience::Policy> {
        self.policies.app(app_id)
    }

    /// The retry and breaker around calls to an actor (`targets.actors`).
    pub fn actor_policy(
        &self,
        actor_type: &str,
        actor_id: &str,
    ) -> std::sync::Arc<tandem_proxy::resilience::Policy> {
        self.policies.actor(actor_type, actor_id)
    }

    /// How long a call to an actor of `actor_type` may take
    /// (`targets.actors` or the default timeout policies).
    pub fn actor_timeout(&self, actor_type: &str) -> Option<std::time::Duration> {
        self.policies.actor_timeout(actor_type)
    }

    /// Builds a snapshot: initialises every component of `resources`,
    /// keeping those of `previous` whose resource did not change. Its
    /// resiliency policies report what they do to `metrics`.
    pub async fn build(
        generation: u64,
        resources: ResourceSet,
        configuration: Configuration,
        ctx: &LoadContext,
        metrics: &Arc<tandem_proxy::Metrics>,
        previous: Option<&Snapshot>,
        on_skip: impl FnMut(&str, &str),
    ) -> Result<Self, InitError> {
        let mut policies = tandem_proxy::resilience::Policies::from_resources(
            resources.resiliencies.iter().map(|r| &r.resource),
        )
        .map_err(|message| InitError {
            component: "(resiliency)".into(),
            message,
        })?;
        let m = metrics.clone();
        policies.observe(Arc::new(move |target, direction, what| {
            m.resiliency(target, direction, what)
        }));
        if let Some(p) = previous {
            policies.inherit(&p.policies);
        }
        let live = components::init_all(
            &resources.components,
            ctx,
            &policies,
            previous.map(|p| &p.instances),
            on_skip,
        )
        .await?;
        Ok(Self {
            generation,
            resources,
            configuration,
            secret_stores: live.secret_stores,
            state_stores: live.state_stores,
            pubsubs: live.pubsubs,
            bindings: live.bindings,
            lock_stores: live.lock_stores,
            configuration_stores: live.configuration_stores,
            conversations: live.conversations,
            crypto: live.crypto,
            coordination: live.coordination,
            components: live.registered,
            instances: live.instances,
            policies,
        })
    }

    pub fn empty() -> Self {
        Self {
            generation: 0,
            resources: ResourceSet::default(),
            configuration: Configuration::default(),
            secret_stores: BTreeMap::new(),
            state_stores: BTreeMap::new(),
            pubsubs: BTreeMap::new(),
            bindings: BTreeMap::new(),
            lock_stores: BTreeMap::new(),
            configuration_stores: BTreeMap::new(),
            conversations: BTreeMap::new(),
            crypto: BTreeMap::new(),
            coordination: None,
            components: Vec::new(),
            instances: Default::default(),
            policies: Default::default(),
        }
    }

    /// Declarative subscriptions of this snapshot.
    pub fn declarative_subscriptions(&self) -> impl Iterator<Item = &SubscriptionSpec> {
        self.resources
            .subscriptions
            .iter()
            .map(|s| &s.resource.spec)
    }
}
