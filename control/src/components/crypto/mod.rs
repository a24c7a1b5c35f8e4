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

/// Wrap and unwrap with a parsed key: AES key wrap (RFC 3394) with a
/// 32-byte symmetric key, RSA-OAEP with SHA-256 (MGF1 SHA-256, no label)
/// with an RSA key (the public half of a private key for wrapping).
pub fn wrap(key: &keys::Key, algorithm: WrapAlgorithm, input: &[u8]) -> Result<Vec<u8>, String> {
    use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrap};
    use aws_lc_rs::rsa::{
        OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
    };
    match (algorithm, key) {
        (WrapAlgorithm::A256Kw, keys::Key::Symmetric(k)) if k.len() == 32 => {
            let kek = AesKek::new(&AES_256, k).map_err(|_| "key type mismatch".to_string())?;
            let mut out = vec![0u8; input.len() + 8];
            let n = kek
                .wrap(input, &mut out)
                .map_err(|_| "failed to encrypt data: invalid plaintext length".to_string())?
                .len();
            out.truncate(n);
            Ok(out)
        }
        (WrapAlgorithm::RsaOaep256, keys::Key::RsaPrivate(der) | keys::Key::RsaPublic(der)) => {
            let public = match key {
                keys::Key::RsaPrivate(_) => PrivateDecryptingKey::from_pkcs8(der)
                    .map_err(|e| e.to_string())?
                    .public_key(),
                _ => PublicEncryptingKey::from_der(der).map_err(|e| e.to_string())?,
            };
            let oaep = OaepPublicEncryptingKey::new(public).map_err(|e| e.to_string())?;
            let mut out = vec![0u8; oaep.ciphertext_size()];
            let n = oaep
                .encrypt(&OAEP_SHA256_MGF1SHA256, input, &mut out, None)
                .map_err(|_| "failed to encrypt data".to_string())?
                .len();
            out.truncate(n);
            Ok(out)
        }
        (
            WrapAlgorithm::A128CbcNoPad | WrapAlgorithm::A192CbcNoPad | WrapAlgorithm::A256CbcNoPad,
            _,
        ) => Err("failed to encrypt data: unsupported algorithm".into()),
        _ => Err(format!(
            "failed to encrypt data: key type mismatch ({} needs {})",
            algorithm.name(),
            needs(algorithm)
        )),
    }
}

fn needs(algorithm: WrapAlgorithm) -> &'static str {
    match algorithm {
        WrapAlgorithm::RsaOaep256 => "an RSA key",
        _ => "a 32-byte symmetric key",
    }
}

pub fn unwrap(key: &keys::Key, algorithm: WrapAlgorithm, input: &[u8]) -> Result<Vec<u8>, String> {
    use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrap};
    use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey};
    match (algorithm, key) {
        (WrapAlgorithm::A256Kw, keys::Key::Symmetric(k)) if k.len() == 32 => {
            let kek = AesKek::new(&AES_256, k).map_err(|_| "key type mismatch".to_string())?;
            let mut out = vec![0u8; input.len()];
            let n = kek
                .unwrap(input, &mut out)
                .map_err(|_| "failed to decrypt data".to_string())?
                .len();
            out.truncate(n);
            Ok(out)
        }
        (WrapAlgorithm::RsaOaep256, keys::Key::RsaPrivate(der)) => {
            let private = PrivateDecryptingKey::from_pkcs8(der).map_err(|e| e.to_string())?;
            let oaep = OaepPrivateDecryptingKey::new(private).map_err(|e| e.to_string())?;
            let mut out = vec![0u8; oaep.min_output_size()];
            let n = oaep
                .decrypt(&OAEP_SHA256_MGF1SHA256, input, &mut out, None)
                .map_err(|_| "failed to decrypt data".to_string())?
                .len();
            out.truncate(n);
            Ok(out)
        }
        (WrapAlgorithm::RsaOaep256, keys::Key::RsaPublic(_)) => Err(
            "failed to decrypt data: an RSA public key cannot unwrap; the private key is needed"
                .into(),
        ),
        _ => Err(format!(
            "failed to decrypt data: key type mismatch ({} needs {})",
            algorithm.name(),
            needs(algorithm)
        )),
    }
}
