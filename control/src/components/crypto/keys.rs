//! Key files as daprd's local key stores read them: a JWK (`.json`, or
//! text starting with `{`), the first PEM block (`.pem`, or text starting
//! with `-----`: PKCS#8, PKCS#1, SEC1, SubjectPublicKeyInfo), else a
//! symmetric key — base64 (standard or URL alphabet) or the raw bytes.
//! Only what wrapping a file key needs is kept: the bytes of a symmetric
//! key, an RSA key in the DER form aws-lc-rs takes.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

#[derive(Debug, PartialEq)]
pub enum Key {
    Symmetric(Vec<u8>),
    /// PKCS#8 DER.
    RsaPrivate(Vec<u8>),
    /// SubjectPublicKeyInfo DER.
    RsaPublic(Vec<u8>),
    /// A key of a kind no wrap algorithm here takes (EC, Ed25519).
    Other(&'static str),
}

/// DER: a tag with its length and contents.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = contents.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(contents);
    out
}

/// AlgorithmIdentifier { rsaEncryption, NULL }.
const RSA_ALGORITHM: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// A PKCS#1 RSAPrivateKey inside a PKCS#8 PrivateKeyInfo.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(RSA_ALGORITHM);
    body.extend(der(0x04, pkcs1));
    der(0x30, &body)
}

/// A PKCS#1 RSAPublicKey inside a SubjectPublicKeyInfo.
fn pkcs1_to_spki(pkcs1: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut body = RSA_ALGORITHM.to_vec();
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}

fn pem(text: &str) -> Result<Key, String> {
    let begin = text
        .find("-----BEGIN ")
        .ok_or("no PEM block in the key file")?;
    let rest = &text[begin + 11..];
    let label_end = rest.find("-----").ok_or("a PEM header without its end")?;
    let label = &rest[..label_end];
    let body = &rest[label_end + 5..];
    let end = body
        .find("-----END ")
        .ok_or_else(|| format!("the PEM block `{label}` has no END line"))?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim_end_matches('=').as_bytes())
        .or_else(|_| STANDARD_NO_PAD.decode(b64.trim_end_matches('=').as_bytes()))
        .map_err(|e| format!("the PEM block `{label}` is not base64: {e}"))?;
    use aws_lc_rs::rsa::{PrivateDecryptingKey, PublicEncryptingKey};
    Ok(match label {
        "PRIVATE KEY" => {
            if PrivateDecryptingKey::from_pkcs8(&der).is_ok() {
                Key::RsaPrivate(der)
            } else {
                Key::Other("a non-RSA private key (EC or Ed25519)")
            }
        }
        "RSA PRIVATE KEY" => {
            let p8 = pkcs1_to_pkcs8(&der);
            PrivateDecryptingKey::from_pkcs8(&p8)
                .map_err(|e| format!("the RSA PRIVATE KEY block is not a usable RSA key: {e}"))?;
            Key::RsaPrivate(p8)
        }
        "PUBLIC KEY" => {
            if PublicEncryptingKey::from_der(&der).is_ok() {
                Key::RsaPublic(der)
            } else {
                Key::Other("a non-RSA public key (EC or Ed25519)")
            }
        }
        "RSA PUBLIC KEY" => {
            let spki = pkcs1_to_spki(&der);
            PublicEncryptingKey::from_der(&spki)
                .map_err(|e| format!("the RSA PUBLIC KEY block is not a usable RSA key: {e}"))?;
            Key::RsaPublic(spki)
        }
        "EC PRIVATE KEY" => Key::Other("an EC private key"),
        other => return Err(format!("invalid PEM block type {other}")),
    })
}

fn jwk(bytes: &[u8]) -> Result<Key, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the JWK is not JSON: {e}"))?;
    match v["kty"].as_str() {
        Some("oct") => {
            let k = v["k"].as_str().ok_or("an `oct` JWK without `k`")?;
            URL_SAFE_NO_PAD
                .decode(k.trim_end_matches('='))
                .map(Key::Symmetric)
                .map_err(|e| format!("the JWK's `k` is not base64url: {e}"))
        }
        Some("RSA") => rsa_jwk(&v),
        Some("EC") => Ok(Key::Other("an EC key")),
        Some("OKP") => Ok(Key::Other("an OKP (Ed25519) key")),
        other => Err(format!("invalid key type {other:?}")),
    }
}

/// A JWK's base64url big-endian number as a DER INTEGER.
fn jwk_integer(v: &serde_json::Value, name: &str) -> Result<Vec<u8>, String> {
    let text = v[name]
        .as_str()
        .ok_or_else(|| format!("the RSA JWK has no `{name}`"))?;
    let mut n = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| format!("the RSA JWK's `{name}` is not base64url: {e}"))?;
    while n.len() > 1 && n[0] == 0 {
        n.remove(0);
    }
    if n.first().is_some_and(|b| b & 0x80 != 0) {
        n.insert(0, 0);
    }
    Ok(der(0x02, &n))
}

/// An RSA JWK (RFC 7518 §6.3): a private key when it has `d` (and the CRT
/// values, which every writer includes), else a public key.
fn rsa_jwk(v: &serde_json::Value) -> Result<Key, String> {
    use aws_lc_rs::rsa::{PrivateDecryptingKey, PublicEncryptingKey};
    let mut body = Vec::new();
    if v.get("d").is_some() {
        body.extend_from_slice(&[0x02, 0x01, 0x00]);
        for name in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
            body.extend(jwk_integer(v, name)?);
        }
        let p8 = pkcs1_to_pkcs8(&der(0x30, &body));
        PrivateDecryptingKey::from_pkcs8(&p8)
            .map_err(|e| format!("the RSA JWK is not a usable private key: {e}"))?;
        Ok(Key::RsaPrivate(p8))
    } else {
        for name in ["n", "e"] {
            body.extend(jwk_integer(v, name)?);
        }
        let spki = pkcs1_to_spki(&der(0x30, &body));
        PublicEncryptingKey::from_der(&spki)
            .map_err(|e| format!("the RSA JWK is not a usable public key: {e}"))?;
        Ok(Key::RsaPublic(spki))
    }
}

/// The keys of a JWK Set (`{"keys": [...]}`) by `kid`, or one JWK.
pub fn parse_set(bytes: &[u8]) -> Result<Vec<(String, Key)>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let keys: Vec<&serde_json::Value> = match v.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.iter().collect(),
        Some(_) => return Err("the JWKS's `keys` is not a list".into()),
        None => vec![&v],
    };
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| {
            let kid = k["kid"]
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("key {i} of the JWKS has no `kid`: its name"))?;
            let key = jwk(k.to_string().as_bytes()).map_err(|e| format!("key `{kid}`: {e}"))?;
            Ok((kid.to_string(), key))
        })
        .collect()
}

/// Parses a key file; `extension` (lower case, no dot) hints the format.
pub fn parse(bytes: &[u8], extension: &str) -> Result<Key, String> {
    match extension {
        "json" => return jwk(bytes),
        "pem" => return pem(&String::from_utf8_lossy(bytes)),
        _ => {}
    }
    if bytes.first() == Some(&b'{') && ![16, 24, 32].contains(&bytes.len()) {
        return jwk(bytes);
    }
    if bytes.len() > 10 && bytes.starts_with(b"-----") {
        return pem(&String::from_utf8_lossy(bytes));
    }
    let mut end = bytes.len();
    while end > 0 && matches!(bytes[end - 1], b'\n' | b'=') {
        end -= 1;
    }
    let trimmed: Vec<u8> = bytes[..end]
        .iter()
        .copied()
        .filter(|b| *b != b'\r' && *b != b'\n')
        .collect();
    if let Ok(k) = STANDARD_NO_PAD.decode(&trimmed) {
        return Ok(Key::Symmetric(k));
    }
    if let Ok(k) = URL_SAFE_NO_PAD.decode(&trimmed) {
        return Ok(Key::Symmetric(k));
    }
    Ok(Key::Symmetric(bytes.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_keys_in_each_spelling() {
        let raw: Vec<u8> = (0u8..32).collect();
        assert_eq!(parse(&raw, ""), Ok(Key::Symmetric(raw.clone())));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        assert_eq!(
            parse(format!("{b64}\n").as_bytes(), ""),
            Ok(Key::Symmetric(raw.clone()))
        );
        let url = URL_SAFE_NO_PAD.encode([0xfbu8; 32]);
        assert_eq!(
            parse(url.as_bytes(), ""),
            Ok(Key::Symmetric(vec![0xfb; 32]))
        );
        let jwk = format!(r#"{{"kty":"oct","k":"{}"}}"#, URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(
            parse(jwk.as_bytes(), "json"),
            Ok(Key::Symmetric(raw.clone()))
        );
        assert_eq!(parse(jwk.as_bytes(), ""), Ok(Key::Symmetric(raw)));
        assert!(
            parse(b"{\"kty\":\"XYZ\"}", "json")
                .unwrap_err()
                .contains("invalid key type")
        );
        assert!(parse(b"not json", "json").is_err());
        assert!(
            parse(
                b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                "pem"
            )
            .unwrap_err()
            .contains("invalid PEM block type")
        );
    }

    #[test]
    fn a_jwk_set_by_kid_with_rsa_keys_that_wrap_and_unwrap() {
        let set = parse_set(include_bytes!("../../../../tests/fixtures/jwks.json")).unwrap();
        let keys: std::collections::BTreeMap<_, _> = set.into_iter().collect();
        assert!(matches!(keys["rsa-private"], Key::RsaPrivate(_)));
        assert!(matches!(keys["rsa-public"], Key::RsaPublic(_)));
        assert_eq!(keys["sym"], Key::Symmetric((0u8..32).collect()));
        assert!(matches!(keys["ec"], Key::Other(_)));
        use crate::components::crypto::{scheme::WrapAlgorithm::RsaOaep256, unwrap, wrap};
        let fk = [5u8; 32];
        for by in ["rsa-private", "rsa-public"] {
            let w = wrap(&keys[by], RsaOaep256, &fk).unwrap();
            assert_eq!(w.len(), 256);
            assert_eq!(unwrap(&keys["rsa-private"], RsaOaep256, &w).unwrap(), fk);
        }
        assert!(parse_set(br#"{"keys":[{"kty":"RSA","kid":"x","n":"AQAB"}]}"#).is_err());
        assert!(
            parse_set(br#"{"keys":{}}"#)
                .unwrap_err()
                .contains("not a list")
        );
    }

    #[test]
    fn der_lengths() {
        assert_eq!(der(0x04, &[1, 2]), [0x04, 2, 1, 2]);
        let long = der(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }
}
