//! Small pieces of HTTP wire handling the router needs: path cleaning,
//! percent-decoding, query parameters, bounded body reads, and bodies in
//! protobuf's JSON mapping.

use crate::error::ApiError;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::collections::BTreeMap;

/// Collapses `//` and drops a trailing `/`, as Dapr's router does.
pub fn clean_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut prev_slash = false;
    for c in path.chars() {
        if c == '/' {
            if prev_slash {
                continue;
            }
            prev_slash = true;
        } else {
            prev_slash = false;
        }
        out.push(c);
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

pub use crate::components::metadata::percent_decode;

/// Query parameters, decoded; the first value of a name wins.
pub fn query_params(query: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(&k.replace('+', " "));
        let v = percent_decode(&v.replace('+', " "));
        out.entry(k).or_insert(v);
    }
    out
}

/// Every value of query parameter `name`, repeated or comma separated
/// (`key=a&key=b,c`).
pub fn query_values(query: Option<&str>, name: &str) -> Vec<String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(&k.replace('+', " ")) == name)
                .then(|| percent_decode(&v.replace('+', " ")))
        })
        .flat_map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `metadata.<k>` query parameters as component metadata `<k>`.
pub fn metadata_params(query: Option<&str>) -> BTreeMap<String, String> {
    query_params(query)
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("metadata.").map(|k| (k.to_string(), v)))
        .collect()
}

pub fn body_too_large(len: u64, limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        tonic::Code::ResourceExhausted,
        "ERR_BODY_TOO_LARGE",
        format!(
            "request body is {len} bytes or more; the limit is {limit} bytes (raise it with --max-body-size)"
        ),
    )
}

/// Reads a request body up to `limit` bytes.
pub async fn read_body(body: Incoming, limit: u64) -> Result<Bytes, ApiError> {
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(body_too_large(limit + 1, limit))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_BODY_READ",
            format!("failed to read the request body: {e}"),
        )),
    }
}

/// daprd's 400 for a body it cannot read.
pub fn malformed_body(what: impl std::fmt::Display) -> ApiError {
    ApiError::malformed(format!("failed deserializing HTTP body: {what}"))
}

/// A request body in protobuf's JSON mapping: one object whose members may
/// be spelled lowerCamel (`keyName`) or as in the `.proto` (`key_name`),
/// `null` standing for absent, unknown members ignored.
pub struct ProtoJson(pub serde_json::Map<String, serde_json::Value>);

impl ProtoJson {
    /// An empty (or blank) body is an empty object; anything but an object
    /// is refused.
    pub fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(serde_json::Map::new()));
        }
        match serde_json::from_slice(raw) {
            Ok(serde_json::Value::Object(m)) => Ok(Self(m)),
            Ok(other) => Err(malformed_body(format!(
                "expected a JSON object, got {other}"
            ))),
            Err(e) => Err(malformed_body(e)),
        }
    }

    /// The member `camel` (or its proto name `snake`).
    pub fn get(&self, camel: &str, snake: &str) -> Option<&serde_json::Value> {
        self.0
            .get(camel)
            .or_else(|| self.0.get(snake))
            .filter(|v| !v.is_null())
    }

    /// A `string` member.
    pub fn text(&self, camel: &str, snake: &str) -> Result<Option<String>, ApiError> {
        match self.get(camel, snake) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(malformed_body(format!(
                "`{camel}` is {other}; expected a string"
            ))),
        }
    }

    /// A `bytes` member: base64, standard or URL alphabet, padded or not
    /// (empty when absent).
    pub fn bytes(&self, camel: &str, snake: &str) -> Result<Vec<u8>, ApiError> {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let text = self.text(camel, snake)?.unwrap_or_default();
        let t = text.trim_end_matches('=');
        STANDARD_NO_PAD
            .decode(t)
            .or_else(|_| URL_SAFE_NO_PAD.decode(t))
            .map_err(|e| malformed_body(format!("`{camel}` is not base64: {e}")))
    }
}

/// protobuf's JSON form of a Duration, member `field`: seconds with an `s`
/// (`"86400s"`, `"1.5s"`).
pub fn proto_duration(field: &str, v: &str) -> Result<std::time::Duration, ApiError> {
    v.strip_suffix('s')
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|n| n.is_finite() && *n >= 0.0 && *n < 3.2e11)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| {
            malformed_body(format!(
                "`{field}` is `{v}`; expected seconds with an `s`, like \"86400s\""
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean_path("//v1.0//metadata/"), "/v1.0/metadata");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path(""), "/");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn repeated_query_values() {
        let q = Some("key=a&key=b,c&other=x&key=d%20e");
        assert_eq!(query_values(q, "key"), ["a", "b", "c", "d e"]);
        assert!(query_values(None, "key").is_empty());
    }

    #[test]
    fn metadata_query() {
        let m = metadata_params(Some("metadata.a=1&b=2&metadata.c=x%20y&metadata.a=3"));
        assert_eq!(m.get("a").map(String::as_str), Some("1"));
        assert_eq!(m.get("c").map(String::as_str), Some("x y"));
        assert!(!m.contains_key("b"));
    }
}
