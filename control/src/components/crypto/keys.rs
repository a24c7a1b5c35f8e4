//! Key files as daprd's local key stores read them: a JWK (`.json`, or
//! text starting with `{`), the first PEM block (`.pem`, or text starting
//! with `-----`: PKCS#8, PKCS#1, SEC1, SubjectPublicKeyInfo), else a
//! symmetric key — a file of 16, 24 or 32 bytes is the key itself, else
//! base64 (standard or URL alphabet), else the raw bytes.
//! Asymmetric keys are kept in the DER forms aws-lc-rs takes: PKCS#8 for a
//! private key, SubjectPublicKeyInfo for a public one.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// The elliptic curves ECDSA keys may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    pub const ALL: [Curve; 3] = [Curve::P256, Curve::P384, Curve::P521];

    /// The name JWKs give the curve (`crv`).
    pub fn jwk_name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// Bytes in one coordinate (and in a private scalar).
    pub fn size(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The signing algorithm of the curve with its usual hash, signatures
    /// in ASN.1 DER as daprd makes them (the hash is not used when a digest
    /// is signed).
    pub fn signing(self) -> &'static aws_lc_rs::signature::EcdsaSigningAlgorithm {
        use aws_lc_rs::signature::*;
        match self {
            Curve::P256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            Curve::P384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
            Curve::P521 => &ECDSA_P521_SHA512_ASN1_SIGNING,
        }
    }

    /// Verification of ASN.1 DER signatures (`fixed`: JOSE's `r‖s`).
    pub fn verification(
        self,
        fixed: bool,
    ) -> &'static aws_lc_rs::signature::EcdsaVerificationAlgorithm {
        use aws_lc_rs::signature::*;
        match (self, fixed) {
            (Curve::P256, false) => &ECDSA_P256_SHA256_ASN1,
            (Curve::P384, false) => &ECDSA_P384_SHA384_ASN1,
            (Curve::P521, false) => &ECDSA_P521_SHA512_ASN1,
            (Curve::P256, true) => &ECDSA_P256_SHA256_FIXED,
            (Curve::P384, true) => &ECDSA_P384_SHA384_FIXED,
            (Curve::P521, true) => &ECDSA_P521_SHA512_FIXED,
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Key {
    Symmetric(Vec<u8>),
    /// PKCS#8 DER.
    RsaPrivate(Vec<u8>),
    /// SubjectPublicKeyInfo DER.
    RsaPublic(Vec<u8>),
    /// PKCS#8 DER.
    EcPrivate(Curve, Vec<u8>),
    /// SubjectPublicKeyInfo DER.
    EcPublic(Curve, Vec<u8>),
    /// PKCS#8 DER.
    Ed25519Private(Vec<u8>),
    /// SubjectPublicKeyInfo DER.
    Ed25519Public(Vec<u8>),
}

fn rejected(what: &str) -> impl Fn(aws_lc_rs::error::KeyRejected) -> String + '_ {
    move |e| format!("{what} is not a usable key: {e}")
}

fn spki(
    key: &impl aws_lc_rs::encoding::AsDer<aws_lc_rs::encoding::PublicKeyX509Der<'static>>,
) -> Result<Vec<u8>, String> {
    key.as_der()
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| "the public key could not be encoded".to_string())
}

impl Key {
    /// What kind of key this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Key::Symmetric(_) => "a symmetric key",
            Key::RsaPrivate(_) => "an RSA private key",
            Key::RsaPublic(_) => "an RSA public key",
            Key::EcPrivate(..) => "an EC private key",
            Key::EcPublic(..) => "an EC public key",
            Key::Ed25519Private(_) => "an Ed25519 private key",
            Key::Ed25519Public(_) => "an Ed25519 public key",
        }
    }

    /// The public half of an asymmetric key (SubjectPublicKeyInfo DER);
    /// a symmetric key has none.
    pub fn public(&self) -> Result<Key, String> {
        use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};
        Ok(match self {
            Key::Symmetric(_) => return Err("a symmetric key has no public part".into()),
            Key::RsaPrivate(der) => Key::RsaPublic(spki(
                &aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(der)
                    .map_err(rejected("the RSA key"))?
                    .public_key(),
            )?),
            Key::EcPrivate(curve, der) => Key::EcPublic(
                *curve,
                spki(
                    EcdsaKeyPair::from_pkcs8(curve.signing(), der)
                        .map_err(rejected("the EC key"))?
                        .public_key(),
                )?,
            ),
            Key::Ed25519Private(der) => Key::Ed25519Public(spki(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(rejected("the Ed25519 key"))?
                    .public_key(),
            )?),
            Key::RsaPublic(d) => Key::RsaPublic(d.clone()),
            Key::EcPublic(c, d) => Key::EcPublic(*c, d.clone()),
            Key::Ed25519Public(d) => Key::Ed25519Public(d.clone()),
        })
    }

    /// The public key as a PEM `PUBLIC KEY` block.
    pub fn public_pem(&self) -> Result<String, String> {
        let der = match self.public()? {
            Key::RsaPublic(d) | Key::EcPublic(_, d) | Key::Ed25519Public(d) => d,
            _ => unreachable!("public() answers public keys"),
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        Ok(out)
    }

    /// The public key as a JWK (RFC 7517/7518/8037), `kid` set when given.
    pub fn public_jwk(&self, kid: &str) -> Result<serde_json::Value, String> {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut jwk = match self.public()? {
            Key::RsaPublic(d) => {
                let (n, e) = rsa_numbers(&d).ok_or("the RSA public key is malformed")?;
                serde_json::json!({"kty": "RSA", "n": b64(n), "e": b64(e)})
            }
            Key::EcPublic(curve, d) => {
                let size = curve.size();
                let point = d
                    .get(d.len().saturating_sub(2 * size + 1)..)
                    .filter(|p| p.len() == 2 * size + 1 && p[0] == 4)
                    .ok_or("the EC public key is malformed")?;
                serde_json::json!({
                    "kty": "EC",
                    "crv": curve.jwk_name(),
                    "x": b64(&point[1..1 + size]),
                    "y": b64(&point[1 + size..]),
                })
            }
            Key::Ed25519Public(d) => {
                let x = d
                    .get(d.len().saturating_sub(32)..)
                    .ok_or("the Ed25519 public key is malformed")?;
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x)})
            }
            _ => unreachable!("public() answers public keys"),
        };
        if !kid.is_empty() {
            jwk["kid"] = kid.into();
        }
        Ok(jwk)
    }
}

/// One DER element at the start of `input`: its tag, contents and what
/// follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The modulus and exponent of an RSA SubjectPublicKeyInfo, without the
/// sign bytes.
fn rsa_numbers(spki: &[u8]) -> Option<(&[u8], &[u8])> {
    let (_, body, _) = der_element(spki)?;
    let (_, _algorithm, rest) = der_element(body)?;
    let (_, bits, _) = der_element(rest)?;
    let (_, seq, _) = der_element(bits.get(1..)?)?;
    let (_, n, rest) = der_element(seq)?;
    let (_, e, _) = der_element(rest)?;
    let trim = |v: &[u8]| -> usize {
        let zeros = v.iter().take_while(|b| **b == 0).count();
        zeros.min(v.len().saturating_sub(1))
    };
    Some((&n[trim(n)..], &e[trim(e)..]))
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
        "PRIVATE KEY" => private_pkcs8(der)?,
        "RSA PRIVATE KEY" => {
            let p8 = pkcs1_to_pkcs8(&der);
            PrivateDecryptingKey::from_pkcs8(&p8)
                .map_err(|e| format!("the RSA PRIVATE KEY block is not a usable RSA key: {e}"))?;
            Key::RsaPrivate(p8)
        }
        "PUBLIC KEY" => public_spki(der)?,
        "RSA PUBLIC KEY" => {
            let spki = pkcs1_to_spki(&der);
            PublicEncryptingKey::from_der(&spki)
                .map_err(|e| format!("the RSA PUBLIC KEY block is not a usable RSA key: {e}"))?;
            Key::RsaPublic(spki)
        }
        "EC PRIVATE KEY" => {
            use aws_lc_rs::signature::EcdsaKeyPair;
            Curve::ALL
                .into_iter()
                .find_map(|c| {
                    let pair = EcdsaKeyPair::from_private_key_der(c.signing(), &der).ok()?;
                    Some(Key::EcPrivate(c, pair.to_pkcs8v1().ok()?.as_ref().to_vec()))
                })
                .ok_or("the EC PRIVATE KEY block is not a P-256, P-384 or P-521 key")?
        }
        other => return Err(format!("invalid PEM block type {other}")),
    })
}

/// A PKCS#8 private key: RSA, ECDSA on one of the curves, or Ed25519.
fn private_pkcs8(der: Vec<u8>) -> Result<Key, String> {
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair};
    if aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&der).is_ok() {
        return Ok(Key::RsaPrivate(der));
    }
    if let Some(c) = Curve::ALL
        .into_iter()
        .find(|c| EcdsaKeyPair::from_pkcs8(c.signing(), &der).is_ok())
    {
        return Ok(Key::EcPrivate(c, der));
    }
    if Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).is_ok() {
        return Ok(Key::Ed25519Private(der));
    }
    Err("the PRIVATE KEY block is not an RSA, EC (P-256/P-384/P-521) or Ed25519 key".into())
}

/// A SubjectPublicKeyInfo: RSA, ECDSA on one of the curves, or Ed25519.
fn public_spki(der: Vec<u8>) -> Result<Key, String> {
    use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
    if aws_lc_rs::rsa::PublicEncryptingKey::from_der(&der).is_ok() {
        return Ok(Key::RsaPublic(der));
    }
    if let Some(c) = Curve::ALL.into_iter().find(|c| {
        UnparsedPublicKey::new(c.verification(false), &der)
            .parse()
            .is_ok()
    }) {
        return Ok(Key::EcPublic(c, der));
    }
    if der.len() != 32 && UnparsedPublicKey::new(&ED25519, &der).parse().is_ok() {
        return Ok(Key::Ed25519Public(der));
    }
    Err("the PUBLIC KEY block is not an RSA, EC (P-256/P-384/P-521) or Ed25519 key".into())
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
        Some("EC") => ec_jwk(&v),
        Some("OKP") => okp_jwk(&v),
        other => Err(format!("invalid key type {other:?}")),
    }
}

/// A JWK member holding base64url bytes.
fn jwk_bytes(v: &serde_json::Value, kty: &str, name: &str) -> Result<Vec<u8>, String> {
    let text = v[name]
        .as_str()
        .ok_or_else(|| format!("the {kty} JWK has no `{name}`"))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| format!("the {kty} JWK's `{name}` is not base64url: {e}"))
}

/// `bytes` left-padded with zeros to `size` (writers may drop leading
/// zeros); longer is an error.
fn padded(mut bytes: Vec<u8>, size: usize, name: &str) -> Result<Vec<u8>, String> {
    if bytes.len() > size {
        return Err(format!(
            "the EC JWK's `{name}` is {} bytes; the curve takes {size}",
            bytes.len()
        ));
    }
    let mut out = vec![0u8; size - bytes.len()];
    out.append(&mut bytes);
    Ok(out)
}

/// An EC JWK (RFC 7518 §6.2): a private key when it has `d`.
fn ec_jwk(v: &serde_json::Value) -> Result<Key, String> {
    use aws_lc_rs::signature::{EcdsaKeyPair, UnparsedPublicKey};
    let crv = v["crv"].as_str().unwrap_or_default();
    let curve = Curve::ALL
        .into_iter()
        .find(|c| c.jwk_name() == crv)
        .ok_or_else(|| format!("the EC JWK's curve `{crv}` is not P-256, P-384 or P-521"))?;
    let size = curve.size();
    let mut point = vec![4u8];
    point.extend(padded(jwk_bytes(v, "EC", "x")?, size, "x")?);
    point.extend(padded(jwk_bytes(v, "EC", "y")?, size, "y")?);
    if v.get("d").is_some() {
        let d = padded(jwk_bytes(v, "EC", "d")?, size, "d")?;
        let pair = EcdsaKeyPair::from_private_key_and_public_key(curve.signing(), &d, &point)
            .map_err(rejected("the EC JWK"))?;
        let p8 = pair
            .to_pkcs8v1()
            .map_err(|_| "the EC JWK could not be encoded")?;
        Ok(Key::EcPrivate(curve, p8.as_ref().to_vec()))
    } else {
        let public = UnparsedPublicKey::new(curve.verification(false), &point)
            .parse()
            .map_err(rejected("the EC JWK"))?;
        Ok(Key::EcPublic(curve, spki(&public)?))
    }
}

/// An OKP JWK (RFC 8037): Ed25519 only.
fn okp_jwk(v: &serde_json::Value) -> Result<Key, String> {
    use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
    let crv = v["crv"].as_str().unwrap_or_default();
    if crv != "Ed25519" {
        return Err(format!(
            "the OKP JWK's curve `{crv}` is not supported; Ed25519 is"
        ));
    }
    let x = jwk_bytes(v, "OKP", "x")?;
    if x.len() != 32 {
        return Err("the OKP JWK's `x` is not 32 bytes".into());
    }
    if v.get("d").is_some() {
        let d = jwk_bytes(v, "OKP", "d")?;
        let pair =
            Ed25519KeyPair::from_seed_and_public_key(&d, &x).map_err(rejected("the OKP JWK"))?;
        let p8 = pair
            .to_pkcs8v1()
            .map_err(|_| "the OKP JWK could not be encoded")?;
        Ok(Key::Ed25519Private(p8.as_ref().to_vec()))
    } else {
        let public = UnparsedPublicKey::new(&ED25519, &x)
            .parse()
            .map_err(rejected("the OKP JWK"))?;
        Ok(Key::Ed25519Public(spki(&public)?))
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
    let zeros = n.iter().take_while(|b| **b == 0).count();
    n.drain(..zeros.min(n.len().saturating_sub(1)));
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
    // A file of an AES key's length is that key, raw, whatever its bytes
    // look like (daprd's order: 32 hex digits are a 32-byte key).
    if [16, 24, 32].contains(&bytes.len()) {
        return Ok(Key::Symmetric(bytes.to_vec()));
    }
    if bytes.first() == Some(&b'{') {
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
        // 32 hex digits without a newline: a raw 32-byte key, as daprd reads it.
        let hex = b"00112233445566778899aabbccddeeff";
        assert_eq!(parse(hex, ""), Ok(Key::Symmetric(hex.to_vec())));
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
        assert!(matches!(keys["ec"], Key::EcPublic(Curve::P256, _)));
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
