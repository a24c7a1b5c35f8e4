//! Cryptography (Dapr's Encrypt/Decrypt, alpha1), shared by the HTTP and
//! gRPC doors: the key store found, the document's file key wrapped or
//! unwrapped there, and the data streamed through `dapr.io/enc/v1` by a
//! task of its own, a few segments at a time (a bounded channel holds what
//! the caller has not read yet), so memory does not grow with the
//! document.

use crate::components::crypto::KeyStore;
use crate::components::crypto::keys::Key;
use crate::components::crypto::scheme::{
    self, Cipher, Decryptor, Encryptor, HeaderRead, Manifest, WrapAlgorithm,
};
use crate::error::ApiError;
use crate::runtime::Runtime;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The caller's data, chunk by chunk (an error ends it).
pub type Chunks = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// What the caller reads back; an `Err` ends it.
pub type Output = mpsc::Receiver<Result<Bytes, String>>;

/// Chunks of output waiting for the caller: with 64 KiB segments, a
/// quarter MiB.
const QUEUED: usize = 4;

pub struct EncryptOptions {
    pub key_name: String,
    pub key_wrap_algorithm: String,
    pub data_encryption_cipher: String,
    pub omit_decryption_key_name: bool,
    pub decryption_key_name: String,
}

pub fn bad_request(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        tonic::Code::InvalidArgument,
        "ERR_BAD_REQUEST",
        format!("invalid request: {what}"),
    )
}

fn operation(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        tonic::Code::Internal,
        "ERR_CRYPTO",
        format!("failed to perform operation: {what}"),
    )
}

/// The key store `name`, with daprd's errors when there is none.
pub fn store(rt: &Runtime, name: &str) -> Result<Arc<dyn KeyStore>, ApiError> {
    let snap = rt.snapshot();
    if snap.crypto.is_empty() {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_CRYPTO_PROVIDERS_NOT_CONFIGURED",
            "crypto providers not configured: add a component of type crypto.dapr.localstorage",
        ));
    }
    if name.is_empty() {
        return Err(bad_request("missing component name"));
    }
    snap.crypto.get(name).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            "ERR_CRYPTO_PROVIDER_NOT_FOUND",
            format!(
                "crypto provider {name} not found; loaded: [{}]",
                snap.crypto.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

enum Transform {
    Seal(Encryptor),
    Open(Decryptor),
}

impl Transform {
    fn push(&mut self, data: &[u8]) -> Result<Vec<Bytes>, String> {
        match self {
            Transform::Seal(e) => e.push(data),
            Transform::Open(d) => d.push(data),
        }
    }

    fn finish(self) -> Result<Option<Bytes>, String> {
        match self {
            Transform::Seal(e) => e.finish(),
            Transform::Open(d) => d.finish(),
        }
    }
}

/// Runs `t` over `first` and then the rest of `input` on a task of its
/// own; the caller reads the result from the channel. A caller that stops
/// reading stops the task.
fn pump(first: Vec<Bytes>, mut input: Chunks, mut t: Transform) -> Output {
    let (tx, rx) = mpsc::channel(QUEUED);
    tokio::spawn(async move {
        let send_all = |outs: Vec<Bytes>| {
            let tx = tx.clone();
            async move {
                for o in outs {
                    if tx.send(Ok(o)).await.is_err() {
                        return false;
                    }
                }
                true
            }
        };
        if !send_all(first).await {
            return;
        }
        while let Some(chunk) = input.next().await {
            let result = chunk.and_then(|c| t.push(&c));
            match result {
                Ok(outs) => {
                    if !send_all(outs).await {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        match t.finish() {
            Ok(last) => {
                send_all(last.into_iter().collect()).await;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
            }
        }
    });
    rx
}

/// Starts encrypting `input` with key store `store`: the key is checked
/// and the file key wrapped before anything is streamed, so those errors
/// come back whole.
pub async fn encrypt(
    store: Arc<dyn KeyStore>,
    o: EncryptOptions,
    input: Chunks,
) -> Result<Output, ApiError> {
    let wrap = WrapAlgorithm::parse(&o.key_wrap_algorithm).map_err(operation)?;
    let cipher = Cipher::parse(&o.data_encryption_cipher).map_err(operation)?;
    let (file_key, nonce_prefix) = scheme::fresh();
    let wrapped_key = store
        .key(&o.key_name)
        .await
        .map_err(|e| format!("failed to retrieve the key encryption key: {e}"))
        .and_then(|key| crate::components::crypto::wrap(&key, wrap, &file_key))
        .map_err(|e| operation(format!("failed to wrap the file key: {e}")))?;
    let key_name = if o.omit_decryption_key_name {
        String::new()
    } else if !o.decryption_key_name.is_empty() {
        o.decryption_key_name
    } else {
        o.key_name
    };
    let manifest = Manifest {
        key_name,
        wrap,
        wrapped_key,
        cipher,
        nonce_prefix,
    };
    let (header, encryptor) = Encryptor::new(&file_key, &manifest);
    Ok(pump(vec![header], input, Transform::Seal(encryptor)))
}

/// Starts decrypting `input`: its header is read and checked (the key
/// unwrapped, the MAC verified) before anything is streamed.
pub async fn decrypt(
    store: Arc<dyn KeyStore>,
    key_name: &str,
    mut input: Chunks,
) -> Result<Output, ApiError> {
    let mut head = BytesMut::new();
    // The header is three lines: it is parsed once three newlines (or the
    // end, or 64 KiB) are in, not at every chunk — a caller sending it a
    // byte at a time costs no more than one sending it whole.
    let mut newlines = 0;
    let header = loop {
        let chunk = input.next().await;
        let at_end = chunk.is_none();
        if let Some(c) = chunk {
            let c = c.map_err(operation)?;
            newlines += c.iter().filter(|b| **b == b'\n').count();
            head.extend_from_slice(&c);
        }
        if newlines < 3 && !at_end && head.len() < scheme::SEGMENT {
            continue;
        }
        match scheme::read_header(&head.clone().freeze(), at_end).map_err(operation)? {
            HeaderRead::Done(h) => break h,
            HeaderRead::More => continue,
        }
    };
    let name = if key_name.is_empty() {
        header.manifest.key_name.clone()
    } else {
        key_name.to_string()
    };
    if name.is_empty() {
        return Err(operation(
            "document's manifest does not contain a key name, and no key name was provided",
        ));
    }
    // A key that cannot unwrap shows as a bad signature: the answer does
    // not tell whether a key of that name exists.
    let file_key = match store.key(&name).await {
        Ok(key) => crate::components::crypto::unwrap(
            &key,
            header.manifest.wrap,
            &header.manifest.wrapped_key,
        )
        .ok(),
        Err(_) => None,
    };
    let (decryptor, rest) = header.open(file_key.as_deref()).map_err(operation)?;
    let first: Vec<Bytes> = if rest.is_empty() { vec![] } else { vec![rest] };
    // The bytes after the header go through the decryptor first.
    let input: Chunks =
        Box::pin(futures_util::stream::iter(first.into_iter().map(Ok)).chain(input));
    Ok(pump(Vec::new(), input, Transform::Open(decryptor)))
}

/// The key `key_name` of store `component` for a subtle operation; a key
/// that cannot be had is reported by `failed` (the operation's error).
pub async fn subtle_key(
    rt: &Runtime,
    component: &str,
    key_name: &str,
    failed: impl Fn(String) -> ApiError,
) -> Result<Arc<Key>, ApiError> {
    let store = store(rt, component)?;
    if key_name.is_empty() {
        return Err(bad_request("missing key name"));
    }
    store
        .key(key_name)
        .await
        .map_err(|e| failed(format!("failed to retrieve key {key_name}: {e}")))
}

/// GetKey's failure: daprd's `ERR_CRYPTO_KEY`.
pub fn get_key_failed(e: String) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        tonic::Code::Internal,
        "ERR_CRYPTO_KEY",
        e,
    )
}

/// A subtle operation's failure (bad algorithm, key, nonce, tag, data):
/// daprd's `ERR_CRYPTO` with its words, then what to fix.
pub fn subtle_failed(op: &'static str) -> impl Fn(String) -> ApiError {
    move |e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            tonic::Code::Internal,
            "ERR_CRYPTO",
            format!("failed to perform operation: failed to {op}: {e}"),
        )
    }
}

/// Empty algorithm names are refused before the key is read.
pub fn subtle_algorithm(algorithm: &str) -> Result<&str, ApiError> {
    if algorithm.is_empty() {
        return Err(bad_request("missing algorithm"));
    }
    Ok(algorithm)
}

/// The subtle operations, shared by the gRPC and HTTP doors (their
/// messages are the gRPC ones): one key, one small message each.
pub mod subtle {
    use super::{get_key_failed, subtle_algorithm, subtle_failed, subtle_key};
    use crate::components::crypto::subtle;
    use crate::error::ApiError;
    use crate::runtime::Runtime;
    use tandem_proto::runtime::v1 as rt;

    pub async fn get_key(
        r: &Runtime,
        req: rt::SubtleGetKeyRequest,
    ) -> Result<rt::SubtleGetKeyResponse, ApiError> {
        let key = subtle_key(r, &req.component_name, &req.name, get_key_failed).await?;
        let public_key = match rt::subtle_get_key_request::KeyFormat::try_from(req.format) {
            Ok(rt::subtle_get_key_request::KeyFormat::Pem) => key.public_pem(),
            Ok(rt::subtle_get_key_request::KeyFormat::Json) => {
                key.public_jwk(&req.name).map(|j| j.to_string())
            }
            Err(_) => {
                return Err(super::bad_request(format!(
                    "invalid key format {}: PEM (0) or JSON (1)",
                    req.format
                )));
            }
        }
        .map_err(|e| get_key_failed(format!("failed to retrieve key {}: {e}", req.name)))?;
        Ok(rt::SubtleGetKeyResponse {
            name: req.name,
            public_key,
        })
    }

    pub async fn encrypt(
        r: &Runtime,
        req: rt::SubtleEncryptRequest,
    ) -> Result<rt::SubtleEncryptResponse, ApiError> {
        let algorithm = subtle_algorithm(&req.algorithm)?;
        let key = subtle_key(
            r,
            &req.component_name,
            &req.key_name,
            subtle_failed("encrypt"),
        )
        .await?;
        let (ciphertext, tag) = subtle::encrypt(
            &key,
            algorithm,
            &req.plaintext,
            &req.nonce,
            &req.associated_data,
        )
        .map_err(subtle_failed("encrypt"))?;
        Ok(rt::SubtleEncryptResponse { ciphertext, tag })
    }

    pub async fn decrypt(
        r: &Runtime,
        req: rt::SubtleDecryptRequest,
    ) -> Result<rt::SubtleDecryptResponse, ApiError> {
        let algorithm = subtle_algorithm(&req.algorithm)?;
        let key = subtle_key(
            r,
            &req.component_name,
            &req.key_name,
            subtle_failed("decrypt"),
        )
        .await?;
        let plaintext = subtle::decrypt(
            &key,
            algorithm,
            &req.ciphertext,
            &req.nonce,
            &req.tag,
            &req.associated_data,
        )
        .map_err(subtle_failed("decrypt"))?;
        Ok(rt::SubtleDecryptResponse { plaintext })
    }

    pub async fn wrap_key(
        r: &Runtime,
        req: rt::SubtleWrapKeyRequest,
    ) -> Result<rt::SubtleWrapKeyResponse, ApiError> {
        let algorithm = subtle_algorithm(&req.algorithm)?;
        let key = subtle_key(
            r,
            &req.component_name,
            &req.key_name,
            subtle_failed("wrap key"),
        )
        .await?;
        let (wrapped_key, tag) = subtle::wrap_key(
            &key,
            algorithm,
            &req.plaintext_key,
            &req.nonce,
            &req.associated_data,
        )
        .map_err(subtle_failed("wrap key"))?;
        Ok(rt::SubtleWrapKeyResponse { wrapped_key, tag })
    }

    pub async fn unwrap_key(
        r: &Runtime,
        req: rt::SubtleUnwrapKeyRequest,
    ) -> Result<rt::SubtleUnwrapKeyResponse, ApiError> {
        let algorithm = subtle_algorithm(&req.algorithm)?;
        let key = subtle_key(
            r,
            &req.component_name,
            &req.key_name,
            subtle_failed("unwrap key"),
        )
        .await?;
        let plaintext_key = subtle::unwrap_key(
            &key,
            algorithm,
            &req.wrapped_key,
            &req.nonce,
            &req.tag,
            &req.associated_data,
        )
        .map_err(subtle_failed("unwrap key"))?;
        Ok(rt::SubtleUnwrapKeyResponse { plaintext_key })
    }

    pub async fn sign(
        r: &Runtime,
        req: rt::SubtleSignRequest,
    ) -> Result<rt::SubtleSignResponse, ApiError> {
        let algorithm = subtle_algorithm(&req.algorithm)?;
        let key = subtle_key(r, &req.component_name, &req.key_name, subtle_failed("sign")).await?;
        let signature =
            subtle::sign(&key, algorithm, &req.digest).map_err(subtle_failed("sign"))?;
        Ok(rt::SubtleSignResponse { signature })
    }

    pub async fn verify(
        r: &Runtime,
        req: rt::SubtleVerifyRequest,
    ) -> Result<rt::SubtleVerifyResponse, ApiError> {
        let algorithm = subtle_algorithm(&req.algorithm)?;
        let key = subtle_key(
            r,
            &req.component_name,
            &req.key_name,
            subtle_failed("verify"),
        )
        .await?;
        let valid = subtle::verify(&key, algorithm, &req.digest, &req.signature)
            .map_err(subtle_failed("verify"))?;
        Ok(rt::SubtleVerifyResponse { valid })
    }
}
