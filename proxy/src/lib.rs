//! The data plane. For now: the app channel (how the sidecar reaches its own
//! app, over HTTP or gRPC), app health probing, and the telemetry registry.
//! The mesh pipeline (route → resolve → policy → connect) grows here. This
//! crate knows nothing of state stores, pub/sub or other building blocks.
#![forbid(unsafe_code)]

pub mod access;
pub mod app_channel;
pub mod balance;
pub mod detect;
pub mod health;
pub mod identity;
pub mod invoke;
pub mod iptables;
#[cfg(feature = "mdns")]
pub mod mdns;
pub mod path;
pub mod registry;
pub mod resilience;
pub mod resolve;
pub mod sentry;
pub mod telemetry;
pub mod trace;
pub mod transparent;

pub use app_channel::{AppChannel, AppChannelConfig, AppChannelError};
pub use health::AppHealth;
pub use invoke::{Invoker, ProxyBody};
pub use registry::LocalRegistry;
pub use resolve::Resolver;
pub use telemetry::Metrics;
