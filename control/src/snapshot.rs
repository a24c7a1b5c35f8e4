//! The runtime snapshot: everything a request needs from configuration, in
//! one immutable value behind an `ArcSwap`. A request loads it once and uses
//! that view to the end; a reload builds a new one and swaps it in.

use crate::components::{
    self, InitError, PubSubComponent, StateComponent, secretstores::SecretStore,
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
    pub components: Vec<RegisteredComponent>,
}

impl Snapshot {
    /// Builds a snapshot: initialises every component of `resources`.
    pub async fn build(
        generation: u64,
        resources: ResourceSet,
        configuration: Configuration,
        ctx: &LoadContext,
        on_skip: impl FnMut(&str, &str),
    ) -> Result<Self, InitError> {
        let policies = tandem_proxy::resilience::Policies::from_resources(
            resources.resiliencies.iter().map(|r| &r.resource),
        )
        .map_err(|message| InitError {
            component: "(resiliency)".into(),
            message,
        })?;
        let live = components::init_all(&resources.components, ctx, &policies, on_skip).await?;
        Ok(Self {
            generation,
            resources,
            configuration,
            secret_stores: live.secret_stores,
            state_stores: live.state_stores,
            pubsubs: live.pubsubs,
            components: live.registered,
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
            components: Vec::new(),
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
