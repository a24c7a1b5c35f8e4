//! The bindings building block: components that are triggered by an
//! external system (input) or write to one (output). A binding moves bytes
//! and metadata; the API's JSON rules, operation checks, resiliency and
//! delivery to the app belong to `crate::api::bindings` and
//! `crate::delivery::bindings`, so every binding behaves the same.

pub mod cron;
pub mod http;
pub mod localstorage;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;

pub use super::pubsub::SubscriptionHandle;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;

pub type Metadata = BTreeMap<String, String>;

/// One output operation as the app asked for it.
#[derive(Clone, Debug, Default)]
pub struct OutputRequest {
    pub operation: String,
    pub data: Bytes,
    pub metadata: Metadata,
}

/// What an output binding answers: data (`None`: nothing, a 204) and
/// metadata for the caller.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutputResponse {
    pub data: Option<Bytes>,
    pub metadata: Metadata,
}

/// One event from an input binding.
#[derive(Clone, Debug, Default)]
pub struct InputEvent {
    pub data: Bytes,
    pub metadata: Metadata,
}

/// What the app made of an input event: `Ok` with its answer acknowledges
/// the event; `Err` tells the binding it was not handled (a broker
/// redelivers; a schedule logs it).
pub type InputHandler =
    Arc<dyn Fn(InputEvent) -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync>;

/// How a binding failed an output operation.
#[derive(Debug, Clone, PartialEq)]
pub enum BindingError {
    /// The request cannot succeed as it is (a missing `key`, a path that
    /// leaves the root): the caller's to fix, not worth a retry.
    BadRequest(String),
    /// The system behind the binding failed or is unreachable.
    Failed(String),
}

impl std::fmt::Display for BindingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindingError::BadRequest(m) | BindingError::Failed(m) => f.write_str(m),
        }
    }
}

pub trait Binding: Send + Sync {
    /// The output operations it supports; empty for input-only bindings.
    fn operations(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn invoke<'a>(
        &'a self,
        req: OutputRequest,
    ) -> BoxFuture<'a, Result<OutputResponse, BindingError>> {
        let _ = req;
        Box::pin(async { Err(BindingError::BadRequest("not an output binding".into())) })
    }

    /// Whether it can trigger the app.
    fn is_input(&self) -> bool {
        false
    }

    /// Starts handing events to `handler`; they stop when the handle drops.
    fn read(&self, handler: InputHandler) -> Result<SubscriptionHandle, String> {
        let _ = handler;
        Err("not an input binding".into())
    }
}

/// Metadata `direction` (`input`, `output`, `input, output`): what the
/// component is used for. Without it both, as the binding supports, and an
/// input binding is only started once the app says it takes its events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Direction {
    pub input: bool,
    pub output: bool,
    /// Whether `direction` was given.
    pub declared: bool,
}

impl Direction {
    pub fn from_metadata(m: &Metadata) -> Result<Self, String> {
        let Some(text) = m.get("direction").filter(|v| !v.trim().is_empty()) else {
            return Ok(Self {
                input: true,
                output: true,
                declared: false,
            });
        };
        let mut d = Self {
            declared: true,
            ..Self::default()
        };
        for part in text.split(',').map(str::trim) {
            match part {
                "input" => d.input = true,
                "output" => d.output = true,
                other => {
                    return Err(format!(
                        "metadata `direction` has `{other}`; expected input, output or both (\"input, output\")"
                    ));
                }
            }
        }
        Ok(d)
    }
}

/// The answer to an operation a binding does not have (the API checks
/// operations first; this guards direct callers).
pub fn unsupported(operation: &str) -> BindingError {
    BindingError::BadRequest(format!("operation `{operation}` is not supported"))
}

/// A required request metadata value, or a `BadRequest` naming it.
pub fn required<'m>(m: &'m Metadata, key: &str, operation: &str) -> Result<&'m str, BindingError> {
    m.get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            BindingError::BadRequest(format!("operation `{operation}` needs metadata `{key}`"))
        })
}

/// `ttlInSeconds` request metadata: `None` when absent.
pub fn ttl_seconds(m: &Metadata) -> Result<Option<u64>, BindingError> {
    match m.get("ttlInSeconds").filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            BindingError::BadRequest(format!(
                "metadata `ttlInSeconds` is `{v}`; expected a whole number of seconds"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_from_metadata() {
        let m = |v: &str| Metadata::from([("direction".to_string(), v.to_string())]);
        let both = Direction::from_metadata(&Metadata::new()).unwrap();
        assert!(both.input && both.output && !both.declared);
        let d = Direction::from_metadata(&m("input, output")).unwrap();
        assert!(d.input && d.output && d.declared);
        let d = Direction::from_metadata(&m("output")).unwrap();
        assert!(!d.input && d.output);
        let e = Direction::from_metadata(&m("sideways")).unwrap_err();
        assert!(e.contains("sideways"), "{e}");
    }
}
