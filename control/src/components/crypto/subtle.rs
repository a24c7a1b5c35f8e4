//! The "subtle" operations of Dapr's cryptography API on one key of a
//! store: encrypt/decrypt a small message, wrap/unwrap a key, sign/verify a
//! digest. Algorithms are named as in JWA (RFC 7518) and RFC 8037; every
//! primitive is aws-lc-rs's.
//!
//! | family | names | key |
//! |---|---|---|
//! | AES-GCM | `A128GCM` `A192GCM` `A256GCM` (also `…GCMKW` to wrap) | 16/24/32-byte symmetric |
//! | ChaCha20-Poly1305 | `C20P` (`C20PKW`) | 32-byte symmetric |
//! | AES-CBC, PKCS#7 padding | `A128CBC` `A192CBC` `A256CBC` | 16/24/32-byte symmetric |
//! | AES-CBC + HMAC (RFC 7518 §5.2) | `A128CBC-HS256` `A192CBC-HS384` `A256CBC-HS512` | 32/48/64-byte symmetric |
//! | AES-CBC, no padding | `A128CBC-NOPAD` `A192CBC-NOPAD` `A256CBC-NOPAD` | 16/24/32-byte symmetric |
//! | AES key wrap (RFC 3394) | `A128KW` `A256KW` | 16/32-byte symmetric |
//! | RSA encryption | `RSA-OAEP` (SHA-1) `RSA-OAEP-256` `-384` `-512` (associated data is the label), `RSA1_5` | RSA (private to decrypt) |
//! | RSA signatures | `RS256` `RS384` `RS512` `PS256` `PS384` `PS512` | RSA (private to sign) |
//! | ECDSA | `ES256` (P-256) `ES384` (P-384) `ES512` (P-521) | EC; signature ASN.1 DER as daprd's (JOSE `r‖s` also verifies) |
//! | EdDSA | `EdDSA` (`Ed25519`) | Ed25519; signs the message itself |
//!
//! Sign and verify take a digest already computed with the algorithm's
//! hash (SHA-256 for `…256` and so on), except EdDSA which signs the bytes
//! given. A verification that fails is an answer (`false`), not an error.

use super::keys::{Curve, Key};
use aws_lc_rs::{aead, cipher, digest, rsa, signature};

/// An operation's failure, worded for the caller.
pub type Result<T> = std::result::Result<T, String>;

fn mismatch(algorithm: &str, needs: &str, key: &Key) -> String {
    format!(
        "key type mismatch: {algorithm} needs {needs}; the key is {}",
        key.kind()
    )
}

fn unsupported(algorithm: &str, what: &str) -> String {
    format!("unsupported algorithm `{algorithm}` for {what}")
}

/// The symmetric bytes of `key`, of one of the `sizes`.
fn symmetric<'k>(key: &'k Key, algorithm: &str, sizes: &[usize]) -> Result<&'k [u8]> {
    let needs = || {
        let sizes: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
        format!("a {}-byte symmetric key", sizes.join("/"))
    };
    match key {
        Key::Symmetric(k) if sizes.contains(&k.len()) => Ok(k),
        Key::Symmetric(k) => Err(format!(
            "key type mismatch: {algorithm} needs {}; the key has {} bytes",
            needs(),
            k.len()
        )),
        other => Err(mismatch(algorithm, &needs(), other)),
    }
}

enum Symmetric {
    Aead(&'static aead::Algorithm),
    Cbc(&'static cipher::Algorithm, bool),
    /// AES-CBC then HMAC: the key is the MAC key then the AES key.
    CbcHmac(&'static cipher::Algorithm, aws_lc_rs::hmac::Algorithm),
}

fn symmetric_algorithm(name: &str) -> Option<(Symmetric, usize)> {
    let base = name
        .strip_suffix("KW")
        .filter(|b| b.ends_with("GCM") || *b == "C20P");
    Some(match base.unwrap_or(name) {
        "A128GCM" => (Symmetric::Aead(&aead::AES_128_GCM), 16),
        "A192GCM" => (Symmetric::Aead(&aead::AES_192_GCM), 24),
        "A256GCM" => (Symmetric::Aead(&aead::AES_256_GCM), 32),
        "C20P" => (Symmetric::Aead(&aead::CHACHA20_POLY1305), 32),
        "A128CBC" => (Symmetric::Cbc(&cipher::AES_128, true), 16),
        "A192CBC" => (Symmetric::Cbc(&cipher::AES_192, true), 24),
        "A256CBC" => (Symmetric::Cbc(&cipher::AES_256, true), 32),
        "A128CBC-HS256" => (
            Symmetric::CbcHmac(&cipher::AES_128, aws_lc_rs::hmac::HMAC_SHA256),
            32,
        ),
        "A192CBC-HS384" => (
            Symmetric::CbcHmac(&cipher::AES_192, aws_lc_rs::hmac::HMAC_SHA384),
            48,
        ),
        "A256CBC-HS512" => (
            Symmetric::CbcHmac(&cipher::AES_256, aws_lc_rs::hmac::HMAC_SHA512),
            64,
        ),
        "A128CBC-NOPAD" => (Symmetric::Cbc(&cipher::AES_128, false), 16),
        "A192CBC-NOPAD" => (Symmetric::Cbc(&cipher::AES_192, false), 24),
        "A256CBC-NOPAD" => (Symmetric::Cbc(&cipher::AES_256, false), 32),
        _ => return None,
    })
}

fn oaep(name: &str) -> Option<&'static rsa::OaepAlgorithm> {
    Some(match name {
        "RSA-OAEP" => &rsa::OAEP_SHA1_MGF1SHA1,
        "RSA-OAEP-256" => &rsa::OAEP_SHA256_MGF1SHA256,
        "RSA-OAEP-384" => &rsa::OAEP_SHA384_MGF1SHA384,
        "RSA-OAEP-512" => &rsa::OAEP_SHA512_MGF1SHA512,
        _ => return None,
    })
}

/// OAEP's label: the associated data, as daprd uses it.
fn label(associated_data: &[u8]) -> Option<&[u8]> {
    (!associated_data.is_empty()).then_some(associated_data)
}

fn fixed<const N: usize>(bytes: &[u8], what: &str, algorithm: &str) -> Result<[u8; N]> {
    bytes.try_into().map_err(|_| {
        format!(
            "invalid {what}: {algorithm} takes {N} bytes, {} given",
            bytes.len()
        )
    })
}

fn aead_key(alg: &'static aead::Algorithm, key: &[u8]) -> Result<aead::LessSafeKey> {
    aead::UnboundKey::new(alg, key)
        .map(aead::LessSafeKey::new)
        .map_err(|_| "the key does not fit the cipher".to_string())
}

/// The RSA public key of `key` (the public half of a private key).
fn rsa_public(key: &Key, algorithm: &str) -> Result<rsa::PublicEncryptingKey> {
    match key {
        Key::RsaPrivate(der) => Ok(rsa::PrivateDecryptingKey::from_pkcs8(der)
            .map_err(|e| e.to_string())?
            .public_key()),
        Key::RsaPublic(der) => rsa::PublicEncryptingKey::from_der(der).map_err(|e| e.to_string()),
        other => Err(mismatch(algorithm, "an RSA key", other)),
    }
}

fn rsa_private(key: &Key, algorithm: &str) -> Result<rsa::PrivateDecryptingKey> {
    match key {
        Key::RsaPrivate(der) => {
            rsa::PrivateDecryptingKey::from_pkcs8(der).map_err(|e| e.to_string())
        }
        Key::RsaPublic(_) => Err(format!(
            "{algorithm} needs the RSA private key; the key is only a public key"
        )),
        other => Err(mismatch(algorithm, "an RSA private key", other)),
    }
}

/// Encrypts `plaintext`; answers the ciphertext and, for an AEAD cipher,
/// its tag apart.
pub fn encrypt(
    key: &Key,
    algorithm: &str,
    plaintext: &[u8],
    nonce: &[u8],
    associated_data: &[u8],
) -> Result<(Vec<u8>, Vec<u8>)> {
    if let Some((family, size)) = symmetric_algorithm(algorithm) {
        let k = symmetric(key, algorithm, &[size])?;
        return match family {
            Symmetric::Aead(alg) => {
                let nonce = aead::Nonce::assume_unique_for_key(fixed(nonce, "nonce", algorithm)?);
                let mut out = plaintext.to_vec();
                let tag = aead_key(alg, k)?
                    .seal_in_place_separate_tag(nonce, aead::Aad::from(associated_data), &mut out)
                    .map_err(|_| "failed to encrypt the data".to_string())?;
                Ok((out, tag.as_ref().to_vec()))
            }
            Symmetric::CbcHmac(alg, mac) => {
                let iv: [u8; 16] = fixed(nonce, "nonce (IV)", algorithm)?;
                let (mac_key, enc_key) = k.split_at(k.len() / 2);
                let mut out = plaintext.to_vec();
                cipher::UnboundCipherKey::new(alg, enc_key)
                    .and_then(cipher::PaddedBlockEncryptingKey::cbc_pkcs7)
                    .and_then(|c| {
                        c.less_safe_encrypt(&mut out, cipher::EncryptionContext::Iv128(iv.into()))
                    })
                    .map_err(|_| "failed to encrypt the data".to_string())?;
                let tag = cbc_hmac_tag(mac, mac_key, associated_data, &iv, &out);
                Ok((out, tag))
            }
            Symmetric::Cbc(alg, padded) => {
                let iv: [u8; 16] = fixed(nonce, "nonce (IV)", algorithm)?;
                let unbound = cipher::UnboundCipherKey::new(alg, k)
                    .map_err(|_| "the key does not fit the cipher".to_string())?;
                let context = cipher::EncryptionContext::Iv128(iv.into());
                let mut out = plaintext.to_vec();
                if padded {
                    cipher::PaddedBlockEncryptingKey::cbc_pkcs7(unbound)
                        .and_then(|c| c.less_safe_encrypt(&mut out, context))
                        .map_err(|_| "failed to encrypt the data".to_string())?;
                } else {
                    if !out.len().is_multiple_of(16) {
                        return Err(format!(
                            "{algorithm} takes a plaintext whose length is a multiple of 16 bytes; \
                             {} given (use {} to pad)",
                            out.len(),
                            algorithm.trim_end_matches("-NOPAD")
                        ));
                    }
                    cipher::EncryptingKey::cbc(unbound)
                        .and_then(|c| c.less_safe_encrypt(&mut out, context))
                        .map_err(|_| "failed to encrypt the data".to_string())?;
                }
                Ok((out, Vec::new()))
            }
        };
    }
    if algorithm == "A128KW" || algorithm == "A256KW" || algorithm == "A192KW" {
        return key_wrap(key, algorithm, plaintext).map(|w| (w, Vec::new()));
    }
    if let Some(padding) = oaep(algorithm) {
        let public = rsa::OaepPublicEncryptingKey::new(rsa_public(key, algorithm)?)
            .map_err(|e| e.to_string())?;
        let mut out = vec![0u8; public.ciphertext_size()];
        let n = public
            .encrypt(padding, plaintext, &mut out, label(associated_data))
            .map_err(|_| {
                format!(
                    "failed to encrypt the data: {algorithm} with this key takes at most {} bytes",
                    public.max_plaintext_size(padding)
                )
            })?
            .len();
        out.truncate(n);
        return Ok((out, Vec::new()));
    }
    if algorithm == "RSA1_5" {
        let public = rsa::Pkcs1PublicEncryptingKey::new(rsa_public(key, algorithm)?)
            .map_err(|e| e.to_string())?;
        let mut out = vec![0u8; public.ciphertext_size()];
        let n = public
            .encrypt(plaintext, &mut out)
            .map_err(|_| {
                format!(
                    "failed to encrypt the data: RSA1_5 with this key takes at most {} bytes",
                    public.max_plaintext_size()
                )
            })?
            .len();
        out.truncate(n);
        return Ok((out, Vec::new()));
    }
    Err(unsupported(algorithm, "encryption"))
}

/// Decrypts what [`encrypt`] made; an AEAD cipher checks `tag` (and the
/// associated data) before anything is answered.
pub fn decrypt(
    key: &Key,
    algorithm: &str,
    ciphertext: &[u8],
    nonce: &[u8],
    tag: &[u8],
    associated_data: &[u8],
) -> Result<Vec<u8>> {
    const FAILED: &str = "failed to decrypt the data: the key, nonce, tag or data do not match";
    if let Some((family, size)) = symmetric_algorithm(algorithm) {
        let k = symmetric(key, algorithm, &[size])?;
        return match family {
            Symmetric::Aead(alg) => {
                let nonce = aead::Nonce::assume_unique_for_key(fixed(nonce, "nonce", algorithm)?);
                if tag.len() != alg.tag_len() {
                    return Err(format!(
                        "invalid tag: {algorithm} takes {} bytes, {} given",
                        alg.tag_len(),
                        tag.len()
                    ));
                }
                let mut buf = Vec::with_capacity(ciphertext.len() + tag.len());
                buf.extend_from_slice(ciphertext);
                buf.extend_from_slice(tag);
                let n = aead_key(alg, k)?
                    .open_in_place(nonce, aead::Aad::from(associated_data), &mut buf)
                    .map_err(|_| FAILED.to_string())?
                    .len();
                buf.truncate(n);
                Ok(buf)
            }
            Symmetric::CbcHmac(alg, mac) => {
                let iv: [u8; 16] = fixed(nonce, "nonce (IV)", algorithm)?;
                let (mac_key, enc_key) = k.split_at(k.len() / 2);
                if tag.len() != mac_key.len() {
                    return Err(format!(
                        "invalid tag: {algorithm} takes {} bytes, {} given",
                        mac_key.len(),
                        tag.len()
                    ));
                }
                // The tag is checked before anything is decrypted.
                let expected = cbc_hmac_tag(mac, mac_key, associated_data, &iv, ciphertext);
                aws_lc_rs::constant_time::verify_slices_are_equal(&expected, tag)
                    .map_err(|_| FAILED.to_string())?;
                let mut buf = ciphertext.to_vec();
                let n = cipher::UnboundCipherKey::new(alg, enc_key)
                    .and_then(cipher::PaddedBlockDecryptingKey::cbc_pkcs7)
                    .and_then(|c| {
                        c.decrypt(&mut buf, cipher::DecryptionContext::Iv128(iv.into()))
                            .map(|p| p.len())
                    })
                    .map_err(|_| FAILED.to_string())?;
                buf.truncate(n);
                Ok(buf)
            }
            Symmetric::Cbc(alg, padded) => {
                let iv: [u8; 16] = fixed(nonce, "nonce (IV)", algorithm)?;
                if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
                    return Err(format!(
                        "invalid ciphertext: {algorithm} takes a whole number of 16-byte blocks; \
                         {} bytes given",
                        ciphertext.len()
                    ));
                }
                let unbound = cipher::UnboundCipherKey::new(alg, k)
                    .map_err(|_| "the key does not fit the cipher".to_string())?;
                let context = cipher::DecryptionContext::Iv128(iv.into());
                let mut buf = ciphertext.to_vec();
                let n = if padded {
                    cipher::PaddedBlockDecryptingKey::cbc_pkcs7(unbound)
                        .and_then(|c| c.decrypt(&mut buf, context).map(|p| p.len()))
                } else {
                    cipher::DecryptingKey::cbc(unbound)
                        .and_then(|c| c.decrypt(&mut buf, context).map(|p| p.len()))
                }
                .map_err(|_| FAILED.to_string())?;
                buf.truncate(n);
                Ok(buf)
            }
        };
    }
    if algorithm == "A128KW" || algorithm == "A256KW" || algorithm == "A192KW" {
        return key_unwrap(key, algorithm, ciphertext);
    }
    if let Some(padding) = oaep(algorithm) {
        let private = rsa::OaepPrivateDecryptingKey::new(rsa_private(key, algorithm)?)
            .map_err(|e| e.to_string())?;
        let mut out = vec![0u8; private.min_output_size()];
        let n = private
            .decrypt(padding, ciphertext, &mut out, label(associated_data))
            .map_err(|_| FAILED.to_string())?
            .len();
        out.truncate(n);
        return Ok(out);
    }
    if algorithm == "RSA1_5" {
        let private = rsa::Pkcs1PrivateDecryptingKey::new(rsa_private(key, algorithm)?)
            .map_err(|e| e.to_string())?;
        let mut out = vec![0u8; private.min_output_size()];
        let n = private
            .decrypt(ciphertext, &mut out)
            .map_err(|_| FAILED.to_string())?
            .len();
        out.truncate(n);
        return Ok(out);
    }
    Err(unsupported(algorithm, "decryption"))
}

/// RFC 7518 §5.2.2.1: HMAC over the associated data, the IV, the
/// ciphertext and the associated data's length in bits (64-bit big
/// endian), cut to the MAC key's length.
fn cbc_hmac_tag(
    mac: aws_lc_rs::hmac::Algorithm,
    mac_key: &[u8],
    associated_data: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
) -> Vec<u8> {
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&aws_lc_rs::hmac::Key::new(mac, mac_key));
    ctx.update(associated_data);
    ctx.update(iv);
    ctx.update(ciphertext);
    ctx.update(&((associated_data.len() as u64) * 8).to_be_bytes());
    ctx.sign().as_ref()[..mac_key.len()].to_vec()
}

fn kek(key: &Key, algorithm: &str) -> Result<aws_lc_rs::key_wrap::AesKek> {
    use aws_lc_rs::key_wrap::{AES_128, AES_256, AesKek};
    let cipher = match algorithm {
        "A128KW" => &AES_128,
        "A256KW" => &AES_256,
        _ => {
            return Err(unsupported(
                algorithm,
                "key wrapping (A128KW and A256KW are)",
            ));
        }
    };
    let k = symmetric(
        key,
        algorithm,
        &[if algorithm == "A128KW" { 16 } else { 32 }],
    )?;
    AesKek::new(cipher, k).map_err(|_| "the key does not fit the cipher".to_string())
}

fn key_wrap(key: &Key, algorithm: &str, plaintext_key: &[u8]) -> Result<Vec<u8>> {
    use aws_lc_rs::key_wrap::KeyWrap;
    if plaintext_key.len() < 16 || !plaintext_key.len().is_multiple_of(8) {
        return Err(format!(
            "invalid key to wrap: {algorithm} takes a multiple of 8 bytes, at least 16; {} given",
            plaintext_key.len()
        ));
    }
    let mut out = vec![0u8; plaintext_key.len() + 8];
    let n = kek(key, algorithm)?
        .wrap(plaintext_key, &mut out)
        .map_err(|_| "failed to wrap the key".to_string())?
        .len();
    out.truncate(n);
    Ok(out)
}

fn key_unwrap(key: &Key, algorithm: &str, wrapped: &[u8]) -> Result<Vec<u8>> {
    use aws_lc_rs::key_wrap::KeyWrap;
    let mut out = vec![0u8; wrapped.len()];
    let n = kek(key, algorithm)?
        .unwrap(wrapped, &mut out)
        .map_err(|_| {
            "failed to unwrap the key: the key or the wrapped data do not match".to_string()
        })?
        .len();
    out.truncate(n);
    Ok(out)
}

/// Wraps `plaintext_key` (raw bytes) with any encryption algorithm but
/// unpadded CBC, as daprd does: AES key wrap, an AEAD cipher (`A256GCMKW`,
/// `C20PKW` or the plain names), padded CBC, or RSA encryption.
pub fn wrap_key(
    key: &Key,
    algorithm: &str,
    plaintext_key: &[u8],
    nonce: &[u8],
    associated_data: &[u8],
) -> Result<(Vec<u8>, Vec<u8>)> {
    if plaintext_key.is_empty() {
        return Err("the key to wrap is empty".into());
    }
    match symmetric_algorithm(algorithm) {
        Some((Symmetric::Cbc(_, false), _)) => Err(unsupported(algorithm, "key wrapping")),
        _ => encrypt(key, algorithm, plaintext_key, nonce, associated_data),
    }
}

/// Unwraps what [`wrap_key`] made.
pub fn unwrap_key(
    key: &Key,
    algorithm: &str,
    wrapped: &[u8],
    nonce: &[u8],
    tag: &[u8],
    associated_data: &[u8],
) -> Result<Vec<u8>> {
    match symmetric_algorithm(algorithm) {
        Some((Symmetric::Cbc(_, false), _)) => Err(unsupported(algorithm, "key unwrapping")),
        _ => decrypt(key, algorithm, wrapped, nonce, tag, associated_data),
    }
}

enum Signing {
    Rsa(
        &'static dyn signature::RsaEncoding,
        &'static signature::RsaParameters,
        &'static digest::Algorithm,
    ),
    Ecdsa(Curve, &'static digest::Algorithm),
    EdDsa,
}

fn signing(algorithm: &str) -> Option<Signing> {
    use signature::*;
    Some(match algorithm {
        "RS256" => Signing::Rsa(
            &RSA_PKCS1_SHA256,
            &RSA_PKCS1_2048_8192_SHA256,
            &digest::SHA256,
        ),
        "RS384" => Signing::Rsa(
            &RSA_PKCS1_SHA384,
            &RSA_PKCS1_2048_8192_SHA384,
            &digest::SHA384,
        ),
        "RS512" => Signing::Rsa(
            &RSA_PKCS1_SHA512,
            &RSA_PKCS1_2048_8192_SHA512,
            &digest::SHA512,
        ),
        "PS256" => Signing::Rsa(&RSA_PSS_SHA256, &RSA_PSS_2048_8192_SHA256, &digest::SHA256),
        "PS384" => Signing::Rsa(&RSA_PSS_SHA384, &RSA_PSS_2048_8192_SHA384, &digest::SHA384),
        "PS512" => Signing::Rsa(&RSA_PSS_SHA512, &RSA_PSS_2048_8192_SHA512, &digest::SHA512),
        "ES256" => Signing::Ecdsa(Curve::P256, &digest::SHA256),
        "ES384" => Signing::Ecdsa(Curve::P384, &digest::SHA384),
        "ES512" => Signing::Ecdsa(Curve::P521, &digest::SHA512),
        "EdDSA" | "Ed25519" => Signing::EdDsa,
        _ => return None,
    })
}

fn import_digest(
    bytes: &[u8],
    hash: &'static digest::Algorithm,
    algorithm: &str,
) -> Result<digest::Digest> {
    digest::Digest::import_less_safe(bytes, hash).map_err(|_| {
        format!(
            "invalid digest: {algorithm} signs a {}-byte hash of the message, {} bytes given",
            hash.output_len(),
            bytes.len()
        )
    })
}

fn curve_mismatch(algorithm: &str, wanted: Curve, key: &Key) -> String {
    let found = match key {
        Key::EcPrivate(c, _) | Key::EcPublic(c, _) => format!("a {} key", c.jwk_name()),
        other => other.kind().to_string(),
    };
    format!(
        "key type mismatch: {algorithm} needs a {} key; the key is {found}",
        wanted.jwk_name()
    )
}

/// Signs `digest` (for EdDSA: the message) with a private key.
pub fn sign(key: &Key, algorithm: &str, digest: &[u8]) -> Result<Vec<u8>> {
    let Some(how) = signing(algorithm) else {
        return Err(unsupported(algorithm, "signing"));
    };
    if matches!(
        key,
        Key::RsaPublic(_) | Key::EcPublic(..) | Key::Ed25519Public(_)
    ) {
        return Err(format!(
            "{algorithm} signing needs a private key; the key is {}",
            key.kind()
        ));
    }
    match (how, key) {
        (Signing::Rsa(encoding, _, hash), Key::RsaPrivate(der)) => {
            let d = import_digest(digest, hash, algorithm)?;
            let pair = signature::RsaKeyPair::from_pkcs8(der).map_err(|e| e.to_string())?;
            let mut out = vec![0u8; pair.public_modulus_len()];
            pair.sign_digest(encoding, &d, &mut out)
                .map_err(|_| "failed to sign the digest".to_string())?;
            Ok(out)
        }
        (Signing::Ecdsa(curve, hash), Key::EcPrivate(c, der)) if *c == curve => {
            let d = import_digest(digest, hash, algorithm)?;
            let pair = signature::EcdsaKeyPair::from_pkcs8(curve.signing(), der)
                .map_err(|e| e.to_string())?;
            pair.sign_digest(&d)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "failed to sign the digest".to_string())
        }
        (Signing::Ecdsa(curve, _), k) => Err(curve_mismatch(algorithm, curve, k)),
        (Signing::EdDsa, Key::Ed25519Private(der)) => {
            let pair = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|e| e.to_string())?;
            Ok(pair.sign(digest).as_ref().to_vec())
        }
        (Signing::EdDsa, k) => Err(mismatch(algorithm, "an Ed25519 key", k)),
        (Signing::Rsa(..), k) => Err(mismatch(algorithm, "an RSA key", k)),
    }
}

/// Whether `signature` is `key`'s over `digest` (the public half of a
/// private key checks). A wrong signature answers `false`; a digest of the
/// wrong size or a key of the wrong kind is an error.
pub fn verify(key: &Key, algorithm: &str, digest: &[u8], sig: &[u8]) -> Result<bool> {
    let Some(how) = signing(algorithm) else {
        return Err(unsupported(algorithm, "verification"));
    };
    let public = match key {
        Key::Symmetric(_) => return Err(mismatch(algorithm, "an asymmetric key", key)),
        k => k.public()?,
    };
    let ok = match (how, &public) {
        (Signing::Rsa(_, params, hash), Key::RsaPublic(der)) => {
            let d = import_digest(digest, hash, algorithm)?;
            signature::UnparsedPublicKey::new(params, der)
                .verify_digest(&d, sig)
                .is_ok()
        }
        (Signing::Ecdsa(curve, hash), Key::EcPublic(c, der)) if *c == curve => {
            let d = import_digest(digest, hash, algorithm)?;
            // ASN.1 DER as daprd signs; then JOSE's fixed `r‖s`.
            let with = |fixed: bool| {
                signature::UnparsedPublicKey::new(curve.verification(fixed), der)
                    .verify_digest(&d, sig)
                    .is_ok()
            };
            with(false) || (sig.len() == 2 * curve.size() && with(true))
        }
        (Signing::Ecdsa(curve, _), k) => return Err(curve_mismatch(algorithm, curve, k)),
        (Signing::EdDsa, Key::Ed25519Public(der)) => {
            signature::UnparsedPublicKey::new(&signature::ED25519, der)
                .verify(digest, sig)
                .is_ok()
        }
        (Signing::EdDsa, k) => return Err(mismatch(algorithm, "an Ed25519 key", k)),
        (Signing::Rsa(..), k) => return Err(mismatch(algorithm, "an RSA key", k)),
    };
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair};

    fn rsa_key() -> Key {
        let pair = rsa::KeyPair::generate(rsa::KeySize::Rsa2048).unwrap();
        let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().unwrap();
        Key::RsaPrivate(der.as_ref().to_vec())
    }

    fn ec_key(curve: Curve) -> Key {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let p8 = EcdsaKeyPair::generate_pkcs8(curve.signing(), &rng).unwrap();
        Key::EcPrivate(curve, p8.as_ref().to_vec())
    }

    fn ed_key() -> Key {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        Key::Ed25519Private(
            Ed25519KeyPair::generate_pkcs8(&rng)
                .unwrap()
                .as_ref()
                .to_vec(),
        )
    }

    fn sym(n: usize) -> Key {
        Key::Symmetric((0..n as u8).collect())
    }

    #[test]
    fn every_symmetric_cipher_round_trips_and_refuses_tampering() {
        let data = b"the subtle API encrypts small messages".to_vec();
        let aad = b"context";
        for (alg, size, nonce_len, tagged) in [
            ("A128GCM", 16, 12, true),
            ("A192GCM", 24, 12, true),
            ("A256GCM", 32, 12, true),
            ("C20P", 32, 12, true),
            ("A128CBC", 16, 16, false),
            ("A192CBC", 24, 16, false),
            ("A256CBC", 32, 16, false),
            ("A128CBC-HS256", 32, 16, true),
            ("A192CBC-HS384", 48, 16, true),
            ("A256CBC-HS512", 64, 16, true),
        ] {
            let key = sym(size);
            let nonce = vec![9u8; nonce_len];
            let (ct, tag) = encrypt(&key, alg, &data, &nonce, aad).unwrap();
            assert_ne!(ct, data, "{alg}");
            let tag_len = match alg {
                _ if !tagged => 0,
                _ if alg.contains("-HS") => size / 2,
                _ => 16,
            };
            assert_eq!(tag.len(), tag_len, "{alg}");
            assert_eq!(decrypt(&key, alg, &ct, &nonce, &tag, aad).unwrap(), data);
            // A key of another size, a short nonce, a flipped byte.
            let e = encrypt(&sym(size + 8), alg, &data, &nonce, aad).unwrap_err();
            assert!(e.contains("key type mismatch"), "{alg}: {e}");
            let e = encrypt(&key, alg, &data, &nonce[1..], aad).unwrap_err();
            assert!(e.contains("invalid nonce"), "{alg}: {e}");
            let e = encrypt(&rsa_key(), alg, &data, &nonce, aad).unwrap_err();
            assert!(e.contains("an RSA private key"), "{alg}: {e}");
            let mut bad = ct.clone();
            bad[0] ^= 1;
            if tagged {
                assert!(
                    decrypt(&key, alg, &bad, &nonce, &tag, aad).is_err(),
                    "{alg}"
                );
                assert!(decrypt(&key, alg, &ct, &nonce, &tag, b"other").is_err());
                let mut t = tag.clone();
                t[tag_len - 1] ^= 1;
                assert!(decrypt(&key, alg, &ct, &nonce, &t, aad).is_err());
                let e = decrypt(&key, alg, &ct, &nonce, &[], aad).unwrap_err();
                assert!(e.contains("invalid tag"), "{e}");
            } else {
                let e = decrypt(&key, alg, &ct[1..], &nonce, &[], aad).unwrap_err();
                assert!(e.contains("16-byte blocks"), "{e}");
            }
        }
        // Unpadded CBC takes whole blocks only.
        let (ct, _) = encrypt(&sym(16), "A128CBC-NOPAD", &[1u8; 32], &[0; 16], &[]).unwrap();
        assert_eq!(ct.len(), 32);
        assert_eq!(
            decrypt(&sym(16), "A128CBC-NOPAD", &ct, &[0; 16], &[], &[]).unwrap(),
            [1u8; 32]
        );
        let e = encrypt(&sym(16), "A128CBC-NOPAD", &[1u8; 31], &[0; 16], &[]).unwrap_err();
        assert!(e.contains("multiple of 16"), "{e}");
        for alg in [
            "",
            "XC20P",
            "A128GCMKW2",
            "aes-gcm",
            "A256GCM ",
            "ECDH-ES",
            "HS256",
        ] {
            let e = encrypt(&sym(32), alg, &data, &[0; 12], &[]).unwrap_err();
            assert!(e.contains("unsupported algorithm"), "{alg}: {e}");
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn aes_gcm_matches_a_published_vector() {
        // NIST GCM test case 3 (AES-128, 96-bit IV, no AAD).
        let key = Key::Symmetric(hex("feffe9928665731c6d6a8f9467308308"));
        let iv = hex("cafebabefacedbaddecaf888");
        let pt = hex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        );
        let (ct, tag) = encrypt(&key, "A128GCM", &pt, &iv, &[]).unwrap();
        assert_eq!(
            ct,
            hex(
                "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
                 21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
            )
        );
        assert_eq!(tag, hex("4d5c2af327cd64a62cf35abd2ba6fab4"));
    }

    #[test]
    fn aes_cbc_hmac_matches_rfc_7518() {
        // RFC 7518 appendix B.1 (AES_128_CBC_HMAC_SHA_256).
        let key = Key::Symmetric((0u8..32).collect());
        let p = b"A cipher system must not be required to be secret, and it must be able \
                  to fall into the hands of the enemy without inconvenience";
        let iv = hex("1af38c2dc2b96ffdd86694092341bc04");
        let a = b"The second principle of Auguste Kerckhoffs";
        let (e, t) = encrypt(&key, "A128CBC-HS256", p, &iv, a).unwrap();
        assert_eq!(t, hex("652c3fa36b0a7c5b3219fab3a30bc1c4"));
        assert_eq!(&e[..16], hex("c80edfa32ddf39d5ef00c0b468834279").as_slice());
        assert_eq!(decrypt(&key, "A128CBC-HS256", &e, &iv, &t, a).unwrap(), p);
    }

    #[test]
    fn keys_wrap_with_aes_kw_aead_and_rsa() {
        let cek = [7u8; 32];
        // RFC 3394 §4.1: 128-bit key data with a 128-bit KEK.
        let kek = Key::Symmetric((0u8..16).collect());
        let data: Vec<u8> = (0u8..16).map(|i| i * 0x11).collect();
        let (w, tag) = wrap_key(&kek, "A128KW", &data, &[], &[]).unwrap();
        assert!(tag.is_empty());
        assert_eq!(
            w,
            [
                0x1F, 0xA6, 0x8B, 0x0A, 0x81, 0x12, 0xB4, 0x47, 0xAE, 0xF3, 0x4B, 0xD8, 0xFB, 0x5A,
                0x7B, 0x82, 0x9D, 0x3E, 0x86, 0x23, 0x71, 0xD2, 0xCF, 0xE5
            ]
        );
        assert_eq!(unwrap_key(&kek, "A128KW", &w, &[], &[], &[]).unwrap(), data);
        let (w, _) = wrap_key(&sym(32), "A256KW", &cek, &[], &[]).unwrap();
        assert_eq!(w.len(), 40);
        assert!(unwrap_key(&sym(16), "A256KW", &w, &[], &[], &[]).is_err());
        let mut bad = w.clone();
        bad[3] ^= 1;
        assert!(unwrap_key(&sym(32), "A256KW", &bad, &[], &[], &[]).is_err());
        assert!(
            wrap_key(&sym(32), "A256KW", &[1; 12], &[], &[])
                .unwrap_err()
                .contains("multiple of 8")
        );
        assert!(
            wrap_key(&sym(24), "A192KW", &cek, &[], &[])
                .unwrap_err()
                .contains("unsupported")
        );
        for alg in ["A256GCMKW", "A256GCM", "C20PKW"] {
            let (w, tag) = wrap_key(&sym(32), alg, &cek, &[3; 12], b"ad").unwrap();
            assert_eq!(
                unwrap_key(&sym(32), alg, &w, &[3; 12], &tag, b"ad").unwrap(),
                cek
            );
        }
        assert!(wrap_key(&sym(16), "A128CBC-NOPAD", &cek, &[0; 16], &[]).is_err());
        let (w, _) = wrap_key(&sym(16), "A128CBC", &cek, &[0; 16], &[]).unwrap();
        assert_eq!(
            unwrap_key(&sym(16), "A128CBC", &w, &[0; 16], &[], &[]).unwrap(),
            cek
        );
        assert!(wrap_key(&sym(32), "A256KW", &[], &[], &[]).is_err());
        let rsa = rsa_key();
        let public = rsa.public().unwrap();
        for alg in [
            "RSA-OAEP",
            "RSA-OAEP-256",
            "RSA-OAEP-384",
            "RSA-OAEP-512",
            "RSA1_5",
        ] {
            let (w, tag) = wrap_key(&public, alg, &cek, &[], &[]).unwrap();
            assert!(tag.is_empty());
            assert_eq!(w.len(), 256, "{alg}");
            assert_eq!(unwrap_key(&rsa, alg, &w, &[], &[], &[]).unwrap(), cek);
            let e = unwrap_key(&public, alg, &w, &[], &[], &[]).unwrap_err();
            assert!(e.contains("private key"), "{e}");
        }
        // OAEP's label is the associated data.
        let (w, _) = encrypt(&public, "RSA-OAEP-256", &cek, &[], b"label").unwrap();
        assert!(decrypt(&rsa, "RSA-OAEP-256", &w, &[], &[], &[]).is_err());
        assert_eq!(
            decrypt(&rsa, "RSA-OAEP-256", &w, &[], &[], b"label").unwrap(),
            cek
        );
        let e = encrypt(&public, "RSA-OAEP-512", &[0; 200], &[], &[]).unwrap_err();
        assert!(e.contains("at most 126 bytes"), "{e}");
    }

    #[test]
    fn every_signature_verifies_with_the_public_half_only() {
        let sha =
            |alg: &'static digest::Algorithm| digest::digest(alg, b"message").as_ref().to_vec();
        let rsa = rsa_key();
        let cases = [
            ("RS256", &rsa, sha(&digest::SHA256)),
            ("RS384", &rsa, sha(&digest::SHA384)),
            ("RS512", &rsa, sha(&digest::SHA512)),
            ("PS256", &rsa, sha(&digest::SHA256)),
            ("PS384", &rsa, sha(&digest::SHA384)),
            ("PS512", &rsa, sha(&digest::SHA512)),
        ];
        let p256 = ec_key(Curve::P256);
        let p384 = ec_key(Curve::P384);
        let p521 = ec_key(Curve::P521);
        let ed = ed_key();
        let more = [
            ("ES256", &p256, sha(&digest::SHA256), 0),
            ("ES384", &p384, sha(&digest::SHA384), 0),
            ("ES512", &p521, sha(&digest::SHA512), 0),
            ("EdDSA", &ed, b"the whole message".to_vec(), 64),
        ];
        let all = cases
            .into_iter()
            .map(|(a, k, d)| (a, k, d, 256))
            .chain(more);
        for (alg, key, d, len) in all {
            let sig = sign(key, alg, &d).unwrap();
            if len > 0 {
                assert_eq!(sig.len(), len, "{alg}");
            } else {
                // ECDSA: ASN.1 DER, a SEQUENCE of two INTEGERs.
                assert_eq!(sig[0], 0x30, "{alg}");
            }
            let len = sig.len();
            let public = key.public().unwrap();
            assert!(verify(&public, alg, &d, &sig).unwrap(), "{alg}");
            assert!(verify(key, alg, &d, &sig).unwrap(), "{alg}");
            let mut bad = sig.clone();
            bad[len / 2] ^= 1;
            assert!(!verify(&public, alg, &d, &bad).unwrap(), "{alg}");
            assert!(!verify(&public, alg, &d, &[]).unwrap(), "{alg}");
            let e = sign(&public, alg, &d).unwrap_err();
            assert!(e.contains("needs a private key"), "{alg}: {e}");
            if alg != "EdDSA" {
                let e = sign(key, alg, &d[1..]).unwrap_err();
                assert!(e.contains("invalid digest"), "{alg}: {e}");
                let mut other = d.clone();
                other[0] ^= 1;
                assert!(!verify(&public, alg, &other, &sig).unwrap(), "{alg}");
            }
            let e = sign(&sym(32), alg, &d).unwrap_err();
            assert!(e.contains("key type mismatch"), "{alg}: {e}");
            let e = verify(&sym(32), alg, &d, &sig).unwrap_err();
            assert!(e.contains("key type mismatch"), "{alg}: {e}");
        }
        // JOSE's fixed-size `r‖s` verifies too.
        let Key::EcPrivate(_, der) = &p256 else {
            unreachable!()
        };
        let jose =
            signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
                .unwrap()
                .sign_digest(&digest::digest(&digest::SHA256, b"message"))
                .unwrap();
        assert_eq!(jose.as_ref().len(), 64);
        let d = sha(&digest::SHA256);
        assert!(verify(&p256, "ES256", &d, jose.as_ref()).unwrap());
        assert!(!verify(&p256, "ES256", &d[..], &jose.as_ref()[..63]).unwrap());
        let e = sign(&p384, "ES256", &sha(&digest::SHA256)).unwrap_err();
        assert!(
            e.contains("needs a P-256 key; the key is a P-384 key"),
            "{e}"
        );
        let e = sign(&ed, "RS256", &sha(&digest::SHA256)).unwrap_err();
        assert!(e.contains("needs an RSA key"), "{e}");
        assert!(
            sign(&rsa, "HS256", &[0; 32])
                .unwrap_err()
                .contains("unsupported")
        );
    }
}
