//! The loopback Dapr API. `http` and `grpc` translate wire to calls of the
//! building-block modules here; the logic lives once, in these modules.

pub mod bindings;
pub mod configuration;
pub mod conversation;
pub mod crypto;
pub mod grpc;
pub mod http;
pub mod invoke;
pub mod jobs;
pub mod lock;
pub mod metadata;
pub mod pubsub;
pub mod secrets;
pub mod state;
pub mod streaming;
pub mod transparent;
pub mod workflows;
