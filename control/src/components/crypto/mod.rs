//! Cryptography components: key stores that hand the sidecar a named key,
//! Dapr's `dapr.io/enc/v1` format (`scheme`) that the Encrypt/Decrypt APIs
//! stream through, and the "subtle" one-shot operations (`subtle`). Keys
//! never leave the sidecar: only public halves are ever answered.

pub mod jwks;
pub mod keys;
pub mod localstorage;
pub mod scheme;
pub mod subtle;

use futures_util::future::BoxFuture;
use scheme::WrapAlgorithm;
use std::sync::Arc;

pub type KeyFuture<'a> = BoxFuture<'a, Result<Arc<keys::Key>, String>>;

pub trait KeyStore: Send + Sync {
    /// Key `name` as the store names its keys; the error says why there is
    /// none.
    fn key<'a>(&'a self, name: &'a str) -> KeyFuture<'a>;
}

/// Wraps a document's file key with a parsed key: AES key wrap (RFC 3394)
/// with a 32-byte symmetric key, or RSA-OAEP with SHA-256 (MGF1 SHA-256,
/// no label) with an RSA key (the public half of a private key) — the
/// subtle API's `A256KW` and `RSA-OAEP-256`. The format's unpadded-CBC
/// wraps are refused, as daprd's local engine refuses them.
pub fn wrap(key: &keys::Key, algorithm: WrapAlgorithm, input: &[u8]) -> Result<Vec<u8>, String> {
    match algorithm {
        WrapAlgorithm::A256Kw | WrapAlgorithm::RsaOaep256 => {
            subtle::wrap_key(key, algorithm.name(), input, &[], &[])
                .map(|(wrapped, _)| wrapped)
                .map_err(|e| format!("failed to encrypt data: {e}"))
        }
        _ => Err("failed to encrypt data: unsupported algorithm".into()),
    }
}

/// Unwraps what [`wrap`] made (an RSA key must be the private one).
pub fn unwrap(key: &keys::Key, algorithm: WrapAlgorithm, input: &[u8]) -> Result<Vec<u8>, String> {
    match algorithm {
        WrapAlgorithm::A256Kw | WrapAlgorithm::RsaOaep256 => {
            subtle::unwrap_key(key, algorithm.name(), input, &[], &[], &[])
                .map_err(|e| format!("failed to decrypt data: {e}"))
        }
        _ => Err("failed to decrypt data: unsupported algorithm".into()),
    }
}
