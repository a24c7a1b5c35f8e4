//! The one error type of the Dapr API. It renders both the HTTP body
//! (`{"errorCode","message","details"}`) and the gRPC status with its
//! `google.rpc` details, so the two APIs can never disagree about a failure.
//! Which details an error carries — `ErrorInfo` (domain `dapr.io`),
//! `ResourceInfo`, `BadRequest`, `Help`, or none — follows daprd, from one
//! table (`DETAILS`) keyed by the error code.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use std::collections::BTreeMap;
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

#[derive(Clone, Debug)]
pub struct ApiError {
    pub http: StatusCode,
    pub grpc: tonic::Code,
    /// The legacy `ERR_*` code shown as `errorCode`.
    pub error_code: &'static str,
    /// The `ErrorInfo` reason, when the error code alone does not say it
    /// (see `DETAILS`).
    pub reason: Option<&'static str>,
    pub message: String,
    /// What the details say beyond the code (boxed: most errors have none,
    /// and errors travel in every `Result` of the API).
    pub extra: Option<Box<Extra>>,
}

#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// `ErrorInfo` metadata; `None` is JSON `null`, as from daprd.
    pub metadata: Option<BTreeMap<String, String>>,
    /// The component the error is about (`ResourceInfo`): its building
    /// block (`state`, `pubsub`) and name.
    pub resource: Option<(&'static str, String)>,
    /// The request field at fault (`BadRequest` field violation).
    pub field: Option<String>,
}

/// Which details daprd attaches to an error.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Details {
    /// None over HTTP; over gRPC one `ErrorInfo` whose reason is the error
    /// code (daprd's "basic" errors of the state, bindings and
    /// configuration gRPC handlers). daprd's legacy errors (secrets, lock,
    /// invocation, health, …) carry no details at all over gRPC; tandem
    /// gives them this `ErrorInfo` too, so an SDK's `error_code()` names
    /// the failure instead of "unknown" — the one place it adds to daprd.
    Basic,
    /// `ErrorInfo` with this reason over both APIs, after a `ResourceInfo`
    /// when `resource` (if the error names its component), a `BadRequest`
    /// when `violation`, and a `Help` link when `help` is set.
    Rich {
        reason: &'static str,
        resource: bool,
        violation: bool,
        help: Option<(&'static str, &'static str)>,
    },
}

const fn rich(reason: &'static str, resource: bool) -> Details {
    Details::Rich {
        reason,
        resource,
        violation: false,
        help: None,
    }
}

/// daprd's details for every error code tandem returns, looked up by the
/// error code and, where one code has several reasons, by the reason the
/// error carries. Codes not listed are `Basic`.
const DETAILS: &[(&str, Option<&str>, Details)] = &[
    // state (daprd pkg/api/errors/state.go)
    (
        "ERR_STATE_STORE_NOT_FOUND",
        None,
        rich("DAPR_STATE_NOT_FOUND", false),
    ),
    (
        "ERR_STATE_STORE_NOT_CONFIGURED",
        None,
        rich("DAPR_STATE_NOT_CONFIGURED", false),
    ),
    (
        "ERR_MALFORMED_REQUEST",
        Some("DAPR_STATE_ILLEGAL_KEY"),
        Details::Rich {
            reason: "DAPR_STATE_ILLEGAL_KEY",
            resource: true,
            violation: true,
            help: None,
        },
    ),
    (
        "ERR_STATE_STORE_NOT_SUPPORTED",
        Some("DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED"),
        Details::Rich {
            reason: "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED",
            resource: true,
            violation: false,
            help: Some((
                "https://docs.dapr.io/reference/components-reference/supported-state-stores/",
                "Check the list of state stores and the features they support",
            )),
        },
    ),
    (
        "ERR_STATE_STORE_NOT_SUPPORTED",
        Some("DAPR_STATE_QUERYING_NOT_SUPPORTED"),
        rich("DAPR_STATE_QUERYING_NOT_SUPPORTED", true),
    ),
    (
        "ERR_STATE_STORE_TOO_MANY_TRANSACTIONS",
        None,
        rich("DAPR_STATE_TOO_MANY_TRANSACTIONS", true),
    ),
    (
        "ERR_STATE_QUERY",
        None,
        rich("DAPR_STATE_QUERY_FAILED", true),
    ),
    ("ERR_STATE_GET", None, Details::Basic),
    ("ERR_STATE_SAVE", None, Details::Basic),
    ("ERR_STATE_DELETE", None, Details::Basic),
    ("ERR_STATE_BULK_GET", None, Details::Basic),
    ("ERR_STATE_BULK_DELETE", None, Details::Basic),
    ("ERR_STATE_TRANSACTION", None, Details::Basic),
    ("ERR_STATE_STORE_NOT_SUPPORTED", None, Details::Basic),
    ("ERR_NOT_SUPPORTED_STATE_OPERATION", None, Details::Basic),
    // pub/sub (daprd pkg/api/errors/pubsub.go)
    (
        "ERR_PUBSUB_NOT_FOUND",
        None,
        rich("DAPR_PUBSUB_NOT_FOUND", false),
    ),
    (
        "ERR_PUBSUB_NOT_CONFIGURED",
        None,
        rich("DAPR_PUBSUB_NOT_CONFIGURED", false),
    ),
    (
        "ERR_PUBSUB_EMPTY",
        None,
        rich("DAPR_PUBSUB_NAME_EMPTY", true),
    ),
    (
        "ERR_TOPIC_NAME_EMPTY",
        None,
        rich("DAPR_PUBSUB_TOPIC_NAME_EMPTY", true),
    ),
    (
        "ERR_PUBSUB_REQUEST_METADATA",
        None,
        rich("DAPR_PUBSUB_METADATA_DESERIALIZATION", true),
    ),
    (
        "ERR_PUBSUB_CLOUD_EVENTS_SER",
        None,
        rich("DAPR_PUBSUB_CLOUD_EVENT_CREATION", true),
    ),
    (
        "ERR_PUBSUB_EVENTS_SER",
        Some("DAPR_PUBSUB_MARSHAL_ENVELOPE"),
        rich("DAPR_PUBSUB_MARSHAL_ENVELOPE", true),
    ),
    (
        "ERR_PUBSUB_EVENTS_SER",
        Some("DAPR_PUBSUB_MARSHAL_EVENTS"),
        rich("DAPR_PUBSUB_MARSHAL_EVENTS", true),
    ),
    (
        "ERR_PUBSUB_EVENTS_SER",
        None,
        rich("DAPR_PUBSUB_UNMARSHAL_EVENTS", true),
    ),
    (
        "ERR_PUBSUB_PUBLISH_MESSAGE",
        None,
        rich("DAPR_PUBSUB_PUBLISH_MESSAGE", true),
    ),
    (
        "ERR_PUBSUB_FORBIDDEN",
        None,
        rich("DAPR_PUBSUB_FORBIDDEN", true),
    ),
    (
        "ERR_PUBLISH_OUTBOX",
        None,
        rich("DAPR_PUBSUB_OUTBOX", false),
    ),
    // bindings and configuration: basic over gRPC, legacy over HTTP
    ("ERR_INVOKE_OUTPUT_BINDING", None, Details::Basic),
    (
        "ERR_CONFIGURATION_STORE_NOT_CONFIGURED",
        None,
        Details::Basic,
    ),
    ("ERR_CONFIGURATION_STORE_NOT_FOUND", None, Details::Basic),
    ("ERR_CONFIGURATION_GET", None, Details::Basic),
    ("ERR_CONFIGURATION_SUBSCRIBE", None, Details::Basic),
    ("ERR_CONFIGURATION_UNSUBSCRIBE", None, Details::Basic),
];

fn details_of(code: &str, reason: Option<&str>) -> Details {
    DETAILS
        .iter()
        .find(|(c, r, _)| *c == code && r.is_some() && *r == reason)
        .or_else(|| DETAILS.iter().find(|(c, r, _)| *c == code && r.is_none()))
        .map_or(Details::Basic, |(_, _, d)| *d)
}

impl ApiError {
    pub fn new(
        http: StatusCode,
        grpc: tonic::Code,
        error_code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            http,
            grpc,
            error_code,
            reason: None,
            message: message.into(),
            extra: None,
        }
    }

    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    fn extra(&self) -> Extra {
        self.extra.as_deref().cloned().unwrap_or_default()
    }

    /// The component this error is about (`ResourceInfo`).
    pub fn on(mut self, block: &'static str, name: &str) -> Self {
        self.extra_mut().resource = Some((block, name.to_string()));
        self
    }

    /// The request field at fault (`BadRequest`).
    pub fn field(mut self, field: &str) -> Self {
        self.extra_mut().field = Some(field.to_string());
        self
    }

    /// One entry of the `ErrorInfo` metadata.
    pub fn meta(mut self, key: &str, value: impl Into<String>) -> Self {
        self.extra_mut()
            .metadata
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_string(), value.into());
        self
    }

    fn details(&self) -> Details {
        details_of(self.error_code, self.reason)
    }

    /// The details as daprd writes them in its HTTP bodies (each a map, so
    /// keys in alphabetical order and all present), in daprd's order:
    /// violation or help first, then the resource, then the error info.
    fn json_details(&self) -> Vec<serde_json::Value> {
        use serde_json::json;
        let Details::Rich {
            reason,
            resource,
            violation,
            help,
        } = self.details()
        else {
            return Vec::new();
        };
        let extra = self.extra();
        let mut out = Vec::new();
        if violation {
            out.push(json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [{
                    "field": extra.field.clone().unwrap_or_default(),
                    "description": self.message,
                }],
            }));
        }
        if let Some((url, description)) = help {
            out.push(json!({
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{"description": description, "url": url}],
            }));
        }
        if resource && let Some((block, name)) = &extra.resource {
            // daprd's pub/sub errors put their message in the description.
            let description = if *block == "pubsub" {
                self.message.as_str()
            } else {
                ""
            };
            out.push(json!({
                "@type": "type.googleapis.com/google.rpc.ResourceInfo",
                "description": description,
                "owner": "",
                "resource_name": name,
                "resource_type": block,
            }));
        }
        out.push(json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "domain": "dapr.io",
            "metadata": extra.metadata,
            "reason": reason,
        }));
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "errorCode": self.error_code,
            "message": self.message,
        });
        let details = self.json_details();
        if !details.is_empty() {
            body["details"] = serde_json::Value::Array(details);
        }
        body
    }

    pub fn to_http(&self) -> Response<Full<Bytes>> {
        let body = serde_json::to_vec(&self.to_json()).expect("JSON of plain values");
        Response::builder()
            .status(self.http)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("valid response parts")
    }

    pub fn to_status(&self) -> tonic::Status {
        let extra = self.extra();
        let metadata = || {
            extra
                .metadata
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>()
        };
        let mut details = match self.details() {
            Details::Basic => ErrorDetails::with_error_info(self.error_code, "dapr.io", metadata()),
            Details::Rich { reason, .. } => {
                ErrorDetails::with_error_info(reason, "dapr.io", metadata())
            }
        };
        if let Details::Rich {
            resource,
            violation,
            help,
            ..
        } = self.details()
        {
            if violation {
                details.set_bad_request(vec![FieldViolation::new(
                    extra.field.clone().unwrap_or_default(),
                    self.message.clone(),
                )]);
            }
            if let Some((url, description)) = help {
                details.set_help(vec![tonic_types::HelpLink::new(description, url)]);
            }
            if resource && let Some((block, name)) = &extra.resource {
                let description = if *block == "pubsub" {
                    self.message.clone()
                } else {
                    String::new()
                };
                details.set_resource_info(*block, name.clone(), "", description);
            }
        }
        tonic::Status::with_error_details(self.grpc, self.message.clone(), details)
    }

    // ---- the errors shared by several APIs ----

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_MALFORMED_REQUEST",
            message,
        )
    }

    /// Refused by Configuration `spec.api` allow/deny lists.
    pub fn api_not_allowed(protocol: &str, name: &str, version: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            tonic::Code::PermissionDenied,
            "ERR_PERMISSION_DENIED",
            format!(
                "the `{name}` {version} API over {protocol} is not allowed by this sidecar's Configuration (spec.api allowed/denied)"
            ),
        )
    }

    pub fn unimplemented(api: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            tonic::Code::Unimplemented,
            "ERR_API_UNIMPLEMENTED",
            format!("the {api} API is not implemented by this version of tandem yet"),
        )
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.to_status()
    }
}
