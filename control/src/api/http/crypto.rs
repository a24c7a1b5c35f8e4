//! `PUT /v1.0-alpha1/crypto/{name}/encrypt|decrypt`: the body is the data,
//! the options are Dapr's `dapr-*` headers, the answer is the result as
//! `application/octet-stream`. Up to 1 MiB of the result is held before
//! the answer starts, so a small document's error (a tampered segment, say)
//! is still a clean 500; past that the result streams, and an error cuts
//! the body short (no last chunk, or a reset stream) — nothing
//! unauthenticated is ever sent. HTTP/1.0 cannot show a cut (its body ends
//! with the connection), so its answers are held whole.

use crate::api::crypto::{self as api, Chunks, EncryptOptions, Output, bad_request};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tandem_proxy::invoke::ProxyBody;

const HELD: usize = 1 << 20;

fn header_value(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// daprd's truthy words.
fn truthy(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "t" | "on" | "1"
    )
}

/// The request body as chunks, cut off with an error past `max` bytes
/// (`--max-body-size`, as for every API; a body without a length is only
/// known to be too large once it is).
fn body_chunks(body: Incoming, max: u64) -> Chunks {
    let mut seen = 0u64;
    Box::pin(
        http_body_util::BodyStream::new(body)
            .filter_map(|frame| async move {
                match frame {
                    Ok(f) => f.into_data().ok().map(Ok),
                    Err(e) => Some(Err(format!("reading the request body: {e}"))),
                }
            })
            .map(move |chunk| {
                let chunk = chunk?;
                seen += chunk.len() as u64;
                if seen > max {
                    return Err(format!(
                        "the request body is larger than the sidecar's limit of {max} bytes (--max-body-size)"
                    ));
                }
                Ok(chunk)
            }),
    )
}

fn error_body(message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({"errorCode": "ERROR", "message": message}).to_string();
    Response::builder()
        .status(StatusCode::INTERNAL_SERVER_ERROR)
        .header(header::CONTENT_TYPE, "application/json")
        .body(tandem_proxy::invoke::full(Bytes::from(body)))
        .expect("valid response parts")
}

/// The answer: the held part (`hold` bytes at most), then the rest as it
/// comes.
async fn answer(mut out: Output, hold: usize) -> Response<ProxyBody> {
    let mut held = Vec::new();
    let mut size = 0;
    let mut done = false;
    while size < hold {
        match out.recv().await {
            Some(Ok(b)) => {
                size += b.len();
                held.push(b);
            }
            Some(Err(e)) => return error_body(&e),
            None => {
                done = true;
                break;
            }
        }
    }
    let head = futures_util::stream::iter(held.into_iter().map(|b| Ok(Frame::data(b))));
    let rest = futures_util::stream::unfold((out, done), |(mut out, done)| async move {
        if done {
            return None;
        }
        match out.recv().await {
            Some(Ok(b)) => Some((Ok(Frame::data(b)), (out, false))),
            Some(Err(e)) => Some((Err(tandem_proxy::invoke::BoxError::from(e)), (out, true))),
            None => None,
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(StreamBody::new(head.chain(rest)).boxed_unsync())
        .expect("valid response parts")
}

pub async fn handle(
    rt: &Runtime,
    name: &str,
    operation: &str,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    // An HTTP/1.0 answer ends when the connection closes, so a cut body
    // would read as a whole one: it is held whole (the request is bounded
    // by --max-body-size, the answer by as much plus the format's
    // overhead). HTTP/1.1's chunks and HTTP/2's frames show a cut.
    let hold = if req.version() <= http::Version::HTTP_10 {
        usize::MAX
    } else {
        HELD
    };
    let start = async {
        let store = api::store(rt, name)?;
        if operation == "encrypt" {
            let o = EncryptOptions {
                key_name: header_value(&req, "dapr-key-name"),
                key_wrap_algorithm: header_value(&req, "dapr-key-wrap-algorithm"),
                data_encryption_cipher: header_value(&req, "dapr-data-encryption-cipher"),
                omit_decryption_key_name: truthy(&header_value(
                    &req,
                    "dapr-omit-decryption-key-name",
                )),
                decryption_key_name: header_value(&req, "dapr-decryption-key-name"),
            };
            if o.key_name.is_empty() {
                return Err(bad_request("missing header 'dapr-key-name'"));
            }
            if o.key_wrap_algorithm.is_empty() {
                return Err(bad_request("missing header 'dapr-key-wrap-algorithm'"));
            }
            api::encrypt(
                store,
                o,
                body_chunks(req.into_body(), rt.options.max_body_size),
            )
            .await
        } else {
            let key = header_value(&req, "dapr-key-name");
            api::decrypt(
                store,
                &key,
                body_chunks(req.into_body(), rt.options.max_body_size),
            )
            .await
        }
    };
    match start.await {
        Ok(out) => answer(out, hold).await,
        Err(e) => error_response(e),
    }
}

fn error_response(e: ApiError) -> Response<ProxyBody> {
    e.to_http().map(tandem_proxy::invoke::boxed)
}
