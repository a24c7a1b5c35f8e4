//! `POST /v1.0-alpha1/subtlecrypto/{name}/{getkey|encrypt|decrypt|wrapkey|
//! unwrapkey|sign|verify}`: the subtle operations over HTTP as daprd's
//! universal-API wrapper serves them (in builds that have them) — the body
//! is the gRPC request in protobuf's JSON mapping (lowerCamel names, proto
//! names accepted too, bytes in base64), the component comes from the path,
//! and the answer is the gRPC response in the same mapping.

use super::ApiResponse;
use super::handlers::compact_json;
use super::wire::{self, ProtoJson};
use crate::api::crypto::subtle;
use crate::error::ApiError;
use crate::runtime::Runtime;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::Request;
use hyper::body::Incoming;
use serde_json::{Value, json};
use tandem_proto::runtime::v1 as rt;

pub const OPERATIONS: &[&str] = &[
    "getkey",
    "encrypt",
    "decrypt",
    "wrapkey",
    "unwrapkey",
    "sign",
    "verify",
];

async fn body(rt: &Runtime, req: Request<Incoming>) -> Result<ProtoJson, ApiError> {
    ProtoJson::parse(&wire::read_body(req.into_body(), rt.options.max_body_size).await?)
}

fn b64(bytes: &[u8]) -> Value {
    Value::String(STANDARD.encode(bytes))
}

/// Runs operation `op` of store `name` on the request body.
pub async fn handle(
    rt: &Runtime,
    name: &str,
    op: &str,
    req: Request<Incoming>,
) -> Result<ApiResponse, ApiError> {
    let b = body(rt, req).await?;
    let component_name = name.to_string();
    let algorithm = b.text("algorithm", "algorithm")?.unwrap_or_default();
    let key_name = b.text("keyName", "key_name")?.unwrap_or_default();
    let answer = match op {
        "getkey" => {
            let format = match b.get("format", "format") {
                None => 0,
                Some(Value::String(s)) if s == "PEM" => 0,
                Some(Value::String(s)) if s == "JSON" => 1,
                Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(-1) as i32,
                Some(other) => {
                    return Err(wire::malformed_body(format!(
                        "`format` is {other}; expected \"PEM\" or \"JSON\""
                    )));
                }
            };
            let name = b.text("name", "name")?.unwrap_or_default();
            let r = subtle::get_key(
                rt,
                rt::SubtleGetKeyRequest {
                    component_name,
                    name,
                    format,
                },
            )
            .await?;
            json!({"name": r.name, "publicKey": r.public_key})
        }
        "encrypt" => {
            let r = subtle::encrypt(
                rt,
                rt::SubtleEncryptRequest {
                    component_name,
                    plaintext: b.bytes("plaintext", "plaintext")?,
                    algorithm,
                    key_name,
                    nonce: b.bytes("nonce", "nonce")?,
                    associated_data: b.bytes("associatedData", "associated_data")?,
                },
            )
            .await?;
            json!({"ciphertext": b64(&r.ciphertext), "tag": b64(&r.tag)})
        }
        "decrypt" => {
            let r = subtle::decrypt(
                rt,
                rt::SubtleDecryptRequest {
                    component_name,
                    ciphertext: b.bytes("ciphertext", "ciphertext")?,
                    algorithm,
                    key_name,
                    nonce: b.bytes("nonce", "nonce")?,
                    tag: b.bytes("tag", "tag")?,
                    associated_data: b.bytes("associatedData", "associated_data")?,
                },
            )
            .await?;
            json!({"plaintext": b64(&r.plaintext)})
        }
        "wrapkey" => {
            let r = subtle::wrap_key(
                rt,
                rt::SubtleWrapKeyRequest {
                    component_name,
                    plaintext_key: b.bytes("plaintextKey", "plaintext_key")?,
                    algorithm,
                    key_name,
                    nonce: b.bytes("nonce", "nonce")?,
                    associated_data: b.bytes("associatedData", "associated_data")?,
                },
            )
            .await?;
            json!({"wrappedKey": b64(&r.wrapped_key), "tag": b64(&r.tag)})
        }
        "unwrapkey" => {
            let r = subtle::unwrap_key(
                rt,
                rt::SubtleUnwrapKeyRequest {
                    component_name,
                    wrapped_key: b.bytes("wrappedKey", "wrapped_key")?,
                    algorithm,
                    key_name,
                    nonce: b.bytes("nonce", "nonce")?,
                    tag: b.bytes("tag", "tag")?,
                    associated_data: b.bytes("associatedData", "associated_data")?,
                },
            )
            .await?;
            json!({"plaintextKey": b64(&r.plaintext_key)})
        }
        "sign" => {
            let r = subtle::sign(
                rt,
                rt::SubtleSignRequest {
                    component_name,
                    digest: b.bytes("digest", "digest")?,
                    algorithm,
                    key_name,
                },
            )
            .await?;
            json!({"signature": b64(&r.signature)})
        }
        "verify" => {
            let r = subtle::verify(
                rt,
                rt::SubtleVerifyRequest {
                    component_name,
                    digest: b.bytes("digest", "digest")?,
                    algorithm,
                    key_name,
                    signature: b.bytes("signature", "signature")?,
                },
            )
            .await?;
            json!({"valid": r.valid})
        }
        _ => unreachable!("routed by OPERATIONS"),
    };
    Ok(compact_json(&answer))
}
