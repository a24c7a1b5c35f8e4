//! The one error type of the Dapr API. It renders both the HTTP body
//! (`{"errorCode","message","details"}`) and the gRPC status with a
//! `google.rpc.ErrorInfo` detail (domain `dapr.io`), so the two APIs can never
//! disagree about a failure.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use std::collections::HashMap;
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Clone, Debug)]
pub struct ApiError {
    pub http: StatusCode,
    pub grpc: tonic::Code,
    /// The legacy `ERR_*` code shown as `errorCode`.
    pub error_code: &'static str,
    /// The `ErrorInfo` reason; defaults to the error code.
    pub reason: Option<&'static str>,
    pub message: String,
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
        }
    }

    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    fn reason(&self) -> &'static str {
        self.reason.unwrap_or(self.error_code)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "errorCode": self.error_code,
            "message": self.message,
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": self.reason(),
                "domain": "dapr.io",
                "metadata": {},
            }],
        })
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
        let details = ErrorDetails::with_error_info(
            self.reason(),
            "dapr.io",
            HashMap::<String, String>::new(),
        );
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
