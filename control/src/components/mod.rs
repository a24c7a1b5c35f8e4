//! Components: the registry that maps a Dapr type string to a constructor,
//! and the work of turning loaded `Component` resources into live ones —
//! resolving `secretKeyRef`/`envRef`, init timeouts, `ignoreErrors`.

pub mod secretstores;

use crate::snapshot::RegisteredComponent;
use secretstores::SecretStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tandem_config::{Component, Loaded};

/// A live component of any building block.
pub enum Live {
    Secret(Arc<dyn SecretStore>),
}

type Constructor = fn(&BTreeMap<String, String>) -> Result<Live, String>;

struct Registration {
    type_name: &'static str,
    build: Constructor,
}

/// Every component type this build supports. Building blocks add theirs here.
const REGISTRY: &[Registration] = &[
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
];

pub fn supported_types() -> Vec<&'static str> {
    REGISTRY.iter().map(|r| r.type_name).collect()
}

/// Components that came up, ready to be put in a snapshot.
#[derive(Default)]
pub struct LiveComponents {
    pub secret_stores: BTreeMap<String, Arc<dyn SecretStore>>,
    pub registered: Vec<RegisteredComponent>,
}

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
pub async fn init_all(
    components: &[Loaded<Component>],
    mut on_skip: impl FnMut(&str, &str),
) -> Result<LiveComponents, InitError> {
    let mut live = LiveComponents::default();
    let (secret_first, rest): (Vec<_>, Vec<_>) = components
        .iter()
        .partition(|c| c.resource.spec.type_.starts_with("secretstores."));
    for loaded in secret_first.into_iter().chain(rest) {
        let c = &loaded.resource;
        let name = c.metadata.name.clone();
        match init_one(loaded, &live).await {
            Ok(component) => {
                let features = match &component {
                    Live::Secret(s) => s.features(),
                };
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
    Ok(live)
}

async fn init_one(loaded: &Loaded<Component>, live: &LiveComponents) -> Result<Live, String> {
    let c = &loaded.resource;
    let Some(reg) = REGISTRY.iter().find(|r| r.type_name == c.spec.type_) else {
        return Err(format!(
            "unknown component type `{}`; supported types: {}",
            c.spec.type_,
            supported_types().join(", ")
        ));
    };
    let metadata = resolve_metadata(c, live).await?;
    let timeout = c
        .spec
        .init_timeout
        .map(|d| d.0)
        .unwrap_or(DEFAULT_INIT_TIMEOUT);
    let build = reg.build;
    // Constructors may block on I/O (reading files, connecting); keep them
    // off the async workers and bound them by `initTimeout`.
    let task = tokio::task::spawn_blocking(move || build(&metadata));
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(format!("initialisation panicked: {join}")),
        Err(_) => Err(format!(
            "initialisation did not finish within {}s (spec.initTimeout)",
            timeout.as_secs_f64()
        )),
    }
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
            let store_name = &c.auth.secret_store;
            if store_name.is_empty() {
                return Err(format!(
                    "metadata `{}` uses secretKeyRef but the component has no `auth.secretStore`; add one naming a secret store component",
                    item.name
                ));
            }
            let store = live.secret_stores.get(store_name).ok_or_else(|| {
                format!(
                    "metadata `{}` refers to secret store `{store_name}`, which is not defined (or failed to load); defined secret stores: [{}]",
                    item.name,
                    live.secret_stores.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            let secret = store
                .get(&r.name, &BTreeMap::new())
                .await
                .map_err(|e| {
                    format!(
                        "metadata `{}`: cannot read secret `{}` from `{store_name}`: {e}",
                        item.name, r.name
                    )
                })?
                .ok_or_else(|| {
                    format!(
                        "metadata `{}`: secret `{}` does not exist in `{store_name}`",
                        item.name, r.name
                    )
                })?;
            let key = if r.key.is_empty() { &r.name } else { &r.key };
            secret.get(key).cloned().ok_or_else(|| {
                format!(
                    "metadata `{}`: secret `{}` in `{store_name}` has no key `{key}`",
                    item.name, r.name
                )
            })?
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
    Ok(out)
}
