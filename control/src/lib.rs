//! tandem's control side: the building blocks behind traits, their
//! components, the loopback Dapr HTTP and gRPC API, resource loading and the
//! runtime snapshot that hot reload swaps.
#![forbid(unsafe_code)]

pub mod actors;
pub mod api;
pub mod clock;
pub mod cloudevent;
pub mod components;
pub mod defaults;
pub mod delivery;
pub mod error;
pub mod home;
pub mod outbox;
pub mod reload;
pub mod runtime;
pub mod snapshot;
pub mod workflow;

pub use error::ApiError;
pub use runtime::Runtime;
pub use snapshot::Snapshot;
