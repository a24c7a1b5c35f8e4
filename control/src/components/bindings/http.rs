//! `bindings.http`: an output binding that sends HTTP requests to `url`.
//! Operations are the verbs (`get`, `head`, `post`, `put`, `patch`,
//! `delete`, `options`, `trace`) and `create` (a POST). Request metadata
//! `path` is appended to the URL; every other request metadata item is sent
//! as a header. The answer's body is the response data; its status
//! (`statusCode`, `status`) and headers are the response metadata. A status
//! of 400 or more is an error unless `errorIfNot2XX` is `false`.
//!
//! TLS: the system's roots, plus `MTLSRootCA`; a client certificate from
//! `MTLSClientCert` + `MTLSClientKey` (each PEM text or a file path).
//! `securityToken` is sent in the `securityTokenHeader` header.

use super::*;
use http_body_util::BodyExt;
use std::time::Duration;
use tandem_proxy::invoke::{HttpsClient, OutsideTls};

pub struct HttpBinding {
    url: String,
    client: HttpsClient,
    token: Option<(::http::HeaderName, ::http::HeaderValue)>,
    error_if_not_2xx: bool,
    timeout: Duration,
    /// `maxResponseBodySize` (Dapr's default 100Mi).
    max_body: usize,
}

/// PEM text given inline or as a file path.
fn pem(m: &Metadata, key: &str) -> Result<Option<String>, String> {
    match m.get(key).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) if v.contains("-----BEGIN") => Ok(Some(v.clone())),
        Some(path) => std::fs::read_to_string(path).map(Some).map_err(|e| {
            format!("metadata `{key}`: not PEM text, and `{path}` cannot be read: {e}")
        }),
    }
}

impl HttpBinding {
    pub fn new(m: &Metadata) -> Result<Self, String> {
        let url = m
            .get("url")
            .filter(|v| !v.is_empty())
            .ok_or("metadata `url` is required: the base URL requests go to")?
            .trim_end_matches('/')
            .to_string();
        let parsed: ::http::Uri = url
            .parse()
            .map_err(|e| format!("metadata `url` `{url}`: {e}"))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) {
            return Err(format!(
                "metadata `url` `{url}` must start with http:// or https://"
            ));
        }
        let tls = OutsideTls {
            root_ca: pem(m, "MTLSRootCA")?,
            certificate: pem(m, "MTLSClientCert")?,
            private_key: pem(m, "MTLSClientKey")?,
        };
        let client = tls.client(false)?;
        let token = match m.get("securityToken").filter(|v| !v.is_empty()) {
            None => None,
            Some(t) => {
                let name = m
                    .get("securityTokenHeader")
                    .filter(|v| !v.is_empty())
                    .ok_or("metadata `securityToken` needs `securityTokenHeader`: the header it goes in")?;
                Some((
                    ::http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|e| format!("metadata `securityTokenHeader`: {e}"))?,
                    ::http::HeaderValue::from_str(t)
                        .map_err(|e| format!("metadata `securityToken`: {e}"))?,
                ))
            }
        };
        let error_if_not_2xx = m.get("errorIfNot2XX").is_none_or(|v| v != "false");
        let timeout =
            super::super::metadata::duration(m, "responseTimeout", Duration::from_secs(60))?;
        let max_body = match m
            .get("maxResponseBodySize")
            .filter(|v| !v.trim().is_empty())
        {
            None => 100 << 20,
            Some(v) => tandem_config::parse_quantity(v.trim())
                .map_err(|e| format!("metadata `maxResponseBodySize`: {e}"))?
                as usize,
        };
        Ok(Self {
            url,
            client,
            token,
            error_if_not_2xx,
            timeout,
            max_body,
        })
    }

    async fn send(&self, req: OutputRequest) -> Result<OutputResponse, BindingError> {
        let method = match req.operation.as_str() {
            "create" => ::http::Method::POST,
            op => ::http::Method::from_bytes(op.to_ascii_uppercase().as_bytes())
                .map_err(|_| BindingError::BadRequest(format!("operation `{op}` is not a verb")))?,
        };
        let path = req.metadata.get("path").map(String::as_str).unwrap_or("");
        let url = if path.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{}", self.url, path.trim_start_matches('/'))
        };
        let mut builder = ::http::Request::builder().method(method).uri(&url);
        for (k, v) in &req.metadata {
            if k == "path" {
                continue;
            }
            let (Ok(name), Ok(value)) = (
                ::http::HeaderName::from_bytes(k.as_bytes()),
                ::http::HeaderValue::from_str(v),
            ) else {
                return Err(BindingError::BadRequest(format!(
                    "metadata `{k}` cannot be sent as an HTTP header"
                )));
            };
            builder = builder.header(name, value);
        }
        if let Some((name, value)) = &self.token {
            builder = builder.header(name.clone(), value.clone());
        }
        let request = builder
            .body(tandem_proxy::invoke::full(req.data))
            .map_err(|e| BindingError::BadRequest(format!("{url}: {e}")))?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| {
                BindingError::Failed(format!("{url}: no answer within {:?}", self.timeout))
            })?
            .map_err(|e| {
                BindingError::Failed(format!(
                    "{url}: {}",
                    tandem_proxy::app_channel::error_chain(&e)
                ))
            })?;
        let status = resp.status();
        let mut metadata = Metadata::new();
        for (name, value) in resp.headers() {
            if let Ok(v) = value.to_str() {
                metadata.insert(name.as_str().to_string(), v.to_string());
            }
        }
        metadata.insert("statusCode".into(), status.as_u16().to_string());
        metadata.insert("status".into(), status.to_string());
        let body = http_body_util::Limited::new(resp.into_body(), self.max_body);
        let body = tokio::time::timeout(self.timeout, body.collect())
            .await
            .map_err(|_| {
                BindingError::Failed(format!(
                    "{url}: the body did not arrive within {:?}",
                    self.timeout
                ))
            })?
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    BindingError::Failed(format!(
                        "{url}: the response body is larger than maxResponseBodySize ({} bytes)",
                        self.max_body
                    ))
                } else {
                    BindingError::Failed(format!("{url}: {e}"))
                }
            })?
            .to_bytes();
        if self.error_if_not_2xx && status.as_u16() >= 400 {
            return Err(BindingError::Failed(format!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )));
        }
        Ok(OutputResponse {
            data: (!body.is_empty()).then_some(body),
            metadata,
        })
    }
}

impl Binding for HttpBinding {
    fn operations(&self) -> Vec<&'static str> {
        vec![
            "create", "get", "head", "post", "put", "patch", "delete", "options", "trace",
        ]
    }

    fn invoke<'a>(
        &'a self,
        req: OutputRequest,
    ) -> BoxFuture<'a, Result<OutputResponse, BindingError>> {
        Box::pin(self.send(req))
    }
}
