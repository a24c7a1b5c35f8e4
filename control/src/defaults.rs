//! The embedded default resources: what `tandem run` loads when no resources
//! dir is given and `~/.tandem/components` does not exist, and what
//! `tandem init` writes there. One source for both.

use tandem_config::{LoadContext, LoadError, ResourceSet, load_str};

/// File name → YAML. Building blocks add their default component here
/// (`statestore`, `pubsub`) when they land.
pub const DEFAULT_RESOURCES: &[(&str, &str)] = &[
    (
        "statestore.yaml",
        "# State in one SQLite file (default: $TANDEM_HOME/state.db, else\n\
# ~/.tandem/state.db), shared safely by every sidecar on this host. Point\n\
# connectionString elsewhere, or switch to state.redis / state.postgresql.\n\
apiVersion: dapr.io/v1alpha1\n\
kind: Component\n\
metadata:\n  name: statestore\n\
spec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: actorStateStore\n    value: \"true\"\n",
    ),
    (
        "pubsub.yaml",
        "# Pub/sub on a durable log in one SQLite file (default: $TANDEM_HOME/pubsub.db,\n\
# else ~/.tandem/pubsub.db) that every sidecar on this host shares: no broker\n\
# to run. Switch to pubsub.redis and friends for more than one host.\n\
apiVersion: dapr.io/v1alpha1\n\
kind: Component\n\
metadata:\n  name: pubsub\n\
spec:\n  type: pubsub.embedded\n  version: v1\n  metadata: []\n",
    ),
    (
        "localsecretstore.yaml",
        "# The sidecar's environment as a secret store: reads of `localsecretstore`\n\
# return environment variables. Replace with secretstores.local.file for a\n\
# JSON file of secrets.\n\
apiVersion: dapr.io/v1alpha1\n\
kind: Component\n\
metadata:\n  name: localsecretstore\n\
spec:\n  type: secretstores.local.env\n  version: v1\n  metadata: []\n",
    ),
];

pub fn embedded_resources(ctx: &LoadContext) -> Result<ResourceSet, LoadError> {
    let mut set = ResourceSet::default();
    for (name, text) in DEFAULT_RESOURCES {
        load_str(
            text,
            std::path::Path::new(&format!("<embedded>/{name}")),
            ctx,
            &mut set,
        )?;
    }
    Ok(set)
}
