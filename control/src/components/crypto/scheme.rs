//! Dapr's `dapr.io/enc/v1` encrypted format, byte for byte, so documents
//! move between daprd and tandem both ways:
//!
//! ```text
//! dapr.io/enc/v1\n
//! {"k":<key name>,"kw":<wrap id>,"wfk":<wrapped file key>,"cph":<cipher id>,"np":<nonce prefix>}\n
//! base64(HMAC-SHA256(header key, the two lines above))\n
//! segment 0 || segment 1 || …
//! ```
//!
//! A random 32-byte file key, wrapped by the key store, protects one
//! document. HKDF-SHA256 derives the header key (no salt, info `header`)
//! and the payload key (salt = the 7-byte nonce prefix, info `payload`).
//! The plaintext is cut into 64 KiB segments (the last 1..=64 KiB; none
//! for an empty document), each sealed with AES-256-GCM or
//! ChaCha20-Poly1305 under the nonce prefix || segment number (4 bytes,
//! big-endian) || 1 for the last segment, else 0 — so dropping, reordering
//! or cutting segments fails to open. Nothing is released before its
//! segment is authenticated.

use aws_lc_rs::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;

pub const SCHEME: &str = "dapr.io/enc/v1";
pub const SEGMENT: usize = 64 << 10;
const TAG: usize = 16;
pub const FILE_KEY: usize = 32;
pub const NONCE_PREFIX: usize = 7;

/// How the file key is wrapped (the manifest's `kw`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WrapAlgorithm {
    A256Kw = 1,
    A128CbcNoPad = 2,
    A192CbcNoPad = 3,
    A256CbcNoPad = 4,
    RsaOaep256 = 5,
}

impl WrapAlgorithm {
    /// A name as callers give it (any case; `AES` and `RSA` are aliases).
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "A256KW" | "AES" => Self::A256Kw,
            "A128CBC-NOPAD" => Self::A128CbcNoPad,
            "A192CBC-NOPAD" => Self::A192CbcNoPad,
            "A256CBC-NOPAD" => Self::A256CbcNoPad,
            "RSA-OAEP-256" | "RSA" => Self::RsaOaep256,
            other => {
                return Err(format!(
                    "option Algorithm is not valid: algorithm {other} is not supported (use A256KW/AES or RSA-OAEP-256/RSA)"
                ));
            }
        })
    }

    fn from_id(id: i64) -> Option<Self> {
        Some(match id {
            1 => Self::A256Kw,
            2 => Self::A128CbcNoPad,
            3 => Self::A192CbcNoPad,
            4 => Self::A256CbcNoPad,
            5 => Self::RsaOaep256,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::A256Kw => "A256KW",
            Self::A128CbcNoPad => "A128CBC-NOPAD",
            Self::A192CbcNoPad => "A192CBC-NOPAD",
            Self::A256CbcNoPad => "A256CBC-NOPAD",
            Self::RsaOaep256 => "RSA-OAEP-256",
        }
    }
}

/// The segments' cipher (the manifest's `cph`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    AesGcm = 1,
    ChaCha20Poly1305 = 2,
}

impl Cipher {
    /// A name as callers give it (any case; empty is AES-GCM).
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.to_ascii_uppercase().as_str() {
            "" | "AES-GCM" => Ok(Self::AesGcm),
            "CHACHA20-POLY1305" => Ok(Self::ChaCha20Poly1305),
            other => Err(format!(
                "option Cipher is not valid: cipher {other} is not supported (use aes-gcm or chacha20-poly1305)"
            )),
        }
    }

    fn key(self, key: &[u8; 32]) -> LessSafeKey {
        let alg = match self {
            Self::AesGcm => &AES_256_GCM,
            Self::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        };
        LessSafeKey::new(UnboundKey::new(alg, key).expect("a 32-byte key"))
    }
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn derive(file_key: &[u8], salt: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
        .extract(file_key)
        .expand(&[info], Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("32 bytes is a valid HKDF-SHA256 output");
    out
}

fn header_mac(file_key: &[u8], signed: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &derive(file_key, &[], b"header"));
    hmac::sign(&key, signed)
}

/// The manifest, as daprd writes it (field order, `k` left out when empty).
#[derive(Debug, PartialEq)]
pub struct Manifest {
    pub key_name: String,
    pub wrap: WrapAlgorithm,
    pub wrapped_key: Vec<u8>,
    pub cipher: Cipher,
    pub nonce_prefix: [u8; NONCE_PREFIX],
}

impl Manifest {
    fn line(&self) -> String {
        let mut m = serde_json::Map::new();
        if !self.key_name.is_empty() {
            m.insert("k".into(), self.key_name.clone().into());
        }
        m.insert("kw".into(), (self.wrap as i64).into());
        m.insert("wfk".into(), STANDARD.encode(&self.wrapped_key).into());
        m.insert("cph".into(), (self.cipher as i64).into());
        m.insert("np".into(), STANDARD.encode(self.nonce_prefix).into());
        // serde_json keeps insertion order only with preserve_order; write
        // the fields by hand in daprd's order instead.
        let mut out = String::from("{");
        for key in ["k", "kw", "wfk", "cph", "np"] {
            if let Some(v) = m.get(key) {
                if out.len() > 1 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).unwrap_or_default());
                out.push(':');
                out.push_str(&go_json(v));
            }
        }
        out.push('}');
        out
    }

    fn parse(line: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        let o = v.as_object()?;
        // Go's decoder matches names case-insensitively.
        let get = |name: &str| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        };
        let key_name = match get("k") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(v) => v.as_str()?.to_string(),
        };
        let wrap = WrapAlgorithm::from_id(get("kw")?.as_i64()?)?;
        let wrapped_key = STANDARD.decode(get("wfk")?.as_str()?).ok()?;
        let cipher = match get("cph")?.as_i64()? {
            1 => Cipher::AesGcm,
            2 => Cipher::ChaCha20Poly1305,
            _ => return None,
        };
        let np = STANDARD.decode(get("np")?.as_str()?).ok()?;
        if wrapped_key.is_empty() {
            return None;
        }
        Some(Self {
            key_name,
            wrap,
            wrapped_key,
            cipher,
            nonce_prefix: np.try_into().ok()?,
        })
    }
}

/// A JSON value as Go's encoder writes it (`<`, `>`, `&`, U+2028/9
/// escaped), so a header is byte-identical to daprd's.
fn go_json(v: &serde_json::Value) -> String {
    serde_json::to_string(v)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// A fresh file key and nonce prefix.
pub fn fresh() -> ([u8; FILE_KEY], [u8; NONCE_PREFIX]) {
    let mut fk = [0u8; FILE_KEY];
    let mut np = [0u8; NONCE_PREFIX];
    aws_lc_rs::rand::fill(&mut fk).expect("the system's random source");
    aws_lc_rs::rand::fill(&mut np).expect("the system's random source");
    (fk, np)
}

fn nonce(prefix: &[u8; NONCE_PREFIX], n: u32, last: bool) -> Nonce {
    let mut b = [0u8; 12];
    b[..NONCE_PREFIX].copy_from_slice(prefix);
    b[NONCE_PREFIX..11].copy_from_slice(&n.to_be_bytes());
    b[11] = u8::from(last);
    Nonce::assume_unique_for_key(b)
}

/// Seals a document segment by segment.
pub struct Encryptor {
    key: LessSafeKey,
    prefix: [u8; NONCE_PREFIX],
    next: u32,
    buf: Vec<u8>,
}

impl Encryptor {
    /// The header to send first, and the encryptor for what follows.
    pub fn new(file_key: &[u8; FILE_KEY], manifest: &Manifest) -> (Bytes, Self) {
        let mut header = format!("{SCHEME}\n{}\n", manifest.line()).into_bytes();
        let mac = header_mac(file_key, &header);
        header.extend_from_slice(STANDARD.encode(mac.as_ref()).as_bytes());
        header.push(b'\n');
        let payload = derive(file_key, &manifest.nonce_prefix, b"payload");
        (
            Bytes::from(header),
            Self {
                key: manifest.cipher.key(&payload),
                prefix: manifest.nonce_prefix,
                next: 0,
                buf: Vec::with_capacity(SEGMENT + TAG),
            },
        )
    }

    /// Seals the pending segment where it lies (no copy) and starts a new
    /// one.
    fn seal(&mut self, last: bool) -> Result<Bytes, String> {
        let n = self.next;
        self.next = n
            .checked_add(1)
            .ok_or_else(|| "input stream is too large".to_string())?;
        let mut seg = std::mem::replace(&mut self.buf, Vec::with_capacity(SEGMENT + TAG));
        self.key
            .seal_in_place_append_tag(nonce(&self.prefix, n, last), Aad::empty(), &mut seg)
            .map_err(|_| "failed to encrypt segment".to_string())?;
        Ok(Bytes::from(seg))
    }

    /// Takes plaintext; returns the segments now complete. A full segment
    /// is sealed only once more follows (the last one is marked).
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Bytes>, String> {
        let mut out = Vec::new();
        let mut data = data;
        // Fill the pending segment first, then seal whole segments straight
        // from the input while more follows.
        loop {
            if self.buf.len() == SEGMENT && !data.is_empty() {
                out.push(self.seal(false)?);
            }
            if data.is_empty() {
                break;
            }
            let room = SEGMENT - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(out)
    }

    /// The last segment (none for an empty document).
    pub fn finish(mut self) -> Result<Option<Bytes>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.seal(true).map(Some)
    }
}

/// A document's header, read from the front of its bytes.
pub struct Header {
    pub manifest: Manifest,
    signed_len: usize,
    mac: Vec<u8>,
    /// Bytes after the header.
    pub rest: Bytes,
    raw: Bytes,
}

/// What `read_header` needs more of.
pub enum HeaderRead {
    Done(Box<Header>),
    /// The three lines are not all here yet.
    More,
}

/// Parses the header at the front of `data` (the first 64 KiB at most).
pub fn read_header(data: &Bytes, at_end: bool) -> Result<HeaderRead, String> {
    let window = &data[..data.len().min(SEGMENT)];
    let mut ends = window
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i);
    let (Some(a), Some(b), Some(c)) = (ends.next(), ends.next(), ends.next()) else {
        if !at_end && data.len() < SEGMENT {
            return Ok(HeaderRead::More);
        }
        let lines = window.iter().filter(|b| **b == b'\n').count();
        return Err(format!(
            "invalid header: {}",
            match lines {
                0 => "scheme name not found",
                1 => "manifest not found",
                _ => "message authentication code not found",
            }
        ));
    };
    if &window[..a] != SCHEME.as_bytes() {
        return Err("invalid header: unsupported scheme".into());
    }
    if b == a + 1 || c == b + 1 {
        return Err("invalid header: invalid format".into());
    }
    let manifest = Manifest::parse(&window[a + 1..b]).ok_or("invalid header: invalid manifest")?;
    let mac = STANDARD
        .decode(&window[b + 1..c])
        .map_err(|e| format!("failed to decode header's signature: {e}"))?;
    Ok(HeaderRead::Done(Box::new(Header {
        manifest,
        signed_len: b + 1,
        mac,
        rest: data.slice(c + 1..),
        raw: data.clone(),
    })))
}

impl Header {
    /// Checks the header's MAC with the unwrapped file key (a key that
    /// failed to unwrap is checked as zeros: the error does not say
    /// whether the key exists) and returns the decryptor.
    pub fn open(self, file_key: Option<&[u8]>) -> Result<(Decryptor, Bytes), String> {
        let fk: [u8; FILE_KEY] = file_key
            .and_then(|k| k.try_into().ok())
            .unwrap_or([0u8; FILE_KEY]);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &derive(&fk, &[], b"header"));
        hmac::verify(&key, &self.raw[..self.signed_len], &self.mac)
            .map_err(|_| "failed to validate the document's signature".to_string())?;
        let payload = derive(&fk, &self.manifest.nonce_prefix, b"payload");
        Ok((
            Decryptor {
                key: self.manifest.cipher.key(&payload),
                prefix: self.manifest.nonce_prefix,
                next: 0,
                buf: Vec::with_capacity(SEGMENT + TAG),
            },
            self.rest,
        ))
    }
}

/// Opens a document's segments, releasing each only once authenticated.
pub struct Decryptor {
    key: LessSafeKey,
    prefix: [u8; NONCE_PREFIX],
    next: u32,
    buf: Vec<u8>,
}

impl Decryptor {
    /// Opens the pending segment where it lies (no copy) and starts a new
    /// one.
    fn open(&mut self, last: bool) -> Result<Bytes, String> {
        let n = self.next;
        let mut seg = std::mem::replace(&mut self.buf, Vec::with_capacity(SEGMENT + TAG));
        let len = self
            .key
            .open_in_place(nonce(&self.prefix, n, last), Aad::empty(), &mut seg)
            .map_err(|_| format!("error processing segment {n}: failed to decrypt segment"))?
            .len();
        self.next = n
            .checked_add(1)
            .ok_or_else(|| "input stream is too large".to_string())?;
        seg.truncate(len);
        Ok(Bytes::from(seg))
    }

    /// Takes ciphertext; returns the plaintext of the segments now
    /// complete and authenticated (a full segment waits until more
    /// follows: only then is it known not to be the last).
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Bytes>, String> {
        const SEALED: usize = SEGMENT + TAG;
        let mut out = Vec::new();
        let mut data = data;
        loop {
            if self.buf.len() == SEALED && !data.is_empty() {
                out.push(self.open(false)?);
            }
            if data.is_empty() {
                break;
            }
            let take = (SEALED - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(out)
    }

    /// The last segment's plaintext (none for an empty document).
    pub fn finish(mut self) -> Result<Option<Bytes>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        if self.buf.len() <= TAG {
            return Err(format!(
                "error processing segment {}: failed to decrypt segment",
                self.next
            ));
        }
        self.open(true).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(np: [u8; 7], k: &str) -> Manifest {
        Manifest {
            key_name: k.into(),
            wrap: WrapAlgorithm::A256Kw,
            wrapped_key: vec![9; 40],
            cipher: Cipher::AesGcm,
            nonce_prefix: np,
        }
    }

    fn encrypt(fk: &[u8; 32], m: &Manifest, plain: &[u8], chunk: usize) -> Vec<u8> {
        let (header, mut e) = Encryptor::new(fk, m);
        let mut out = header.to_vec();
        for c in plain.chunks(chunk.max(1)) {
            for s in e.push(c).unwrap() {
                out.extend_from_slice(&s);
            }
        }
        if let Some(s) = e.finish().unwrap() {
            out.extend_from_slice(&s);
        }
        out
    }

    fn decrypt(fk: &[u8; 32], doc: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
        let all = Bytes::copy_from_slice(doc);
        let HeaderRead::Done(h) = read_header(&all, true)? else {
            unreachable!()
        };
        let (mut d, rest) = h.open(Some(fk))?;
        let mut out = Vec::new();
        for c in rest.chunks(chunk.max(1)) {
            for p in d.push(c)? {
                out.extend_from_slice(&p);
            }
        }
        if let Some(p) = d.finish()? {
            out.extend_from_slice(&p);
        }
        Ok(out)
    }

    #[test]
    fn round_trips_at_every_segment_edge_and_in_any_chunking() {
        let fk = [7u8; 32];
        let m = manifest([1, 2, 3, 4, 5, 6, 7], "mykey");
        for len in [
            0,
            1,
            11,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            2 * SEGMENT,
            5 * SEGMENT - 3,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for chunk in [1000, 65_536, 70_000] {
                let doc = encrypt(&fk, &m, &plain, chunk);
                let segments = len.div_ceil(SEGMENT);
                let header = doc.len() - len - segments * TAG;
                assert_eq!(doc.len(), header + len + segments * TAG, "len {len}");
                assert_eq!(decrypt(&fk, &doc, chunk + 7).unwrap(), plain, "len {len}");
            }
        }
    }

    #[test]
    fn the_header_is_daprs() {
        let m = manifest([0; 7], "");
        let (header, _) = Encryptor::new(&[0; 32], &m);
        let text = String::from_utf8(header.to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "dapr.io/enc/v1");
        assert_eq!(
            lines[1],
            format!(
                r#"{{"kw":1,"wfk":"{}","cph":1,"np":"AAAAAAAAAA=="}}"#,
                STANDARD.encode([9u8; 40])
            )
        );
        assert_eq!(lines[2].len(), 44);
        let named = manifest([0; 7], "a<b");
        assert!(named.line().starts_with(r#"{"k":"a\u003cb","kw":1,"#));
        assert_eq!(Manifest::parse(named.line().as_bytes()).unwrap(), named);
    }

    #[test]
    fn tampering_truncation_and_wrong_keys_fail_without_releasing_plaintext() {
        let fk = [3u8; 32];
        let m = manifest([5; 7], "k");
        let plain = vec![42u8; 3 * SEGMENT + 10];
        let doc = encrypt(&fk, &m, &plain, 4096);
        let header = doc.len() - plain.len() - 4 * TAG;
        // A flipped byte in the second segment: the first is released, the
        // second is not.
        let mut bad = doc.clone();
        bad[header + SEGMENT + TAG + 5] ^= 1;
        let e = decrypt(&fk, &bad, 1 << 20).unwrap_err();
        assert_eq!(e, "error processing segment 1: failed to decrypt segment");
        // Cut at a segment boundary: the new last segment is not marked.
        let cut = &doc[..header + 2 * (SEGMENT + TAG)];
        assert!(decrypt(&fk, cut, 4096).unwrap_err().contains("segment 1"));
        // Cut inside the tag.
        let cut = &doc[..doc.len() - 3];
        assert!(decrypt(&fk, cut, 4096).unwrap_err().contains("segment 3"));
        // Segments swapped.
        let mut swapped = doc[..header].to_vec();
        swapped.extend_from_slice(&doc[header + SEGMENT + TAG..header + 2 * (SEGMENT + TAG)]);
        swapped.extend_from_slice(&doc[header..header + SEGMENT + TAG]);
        swapped.extend_from_slice(&doc[header + 2 * (SEGMENT + TAG)..]);
        assert!(
            decrypt(&fk, &swapped, 4096)
                .unwrap_err()
                .contains("segment 0")
        );
        // Wrong key, or a changed manifest: the MAC fails.
        assert_eq!(
            decrypt(&[4u8; 32], &doc, 4096).unwrap_err(),
            "failed to validate the document's signature"
        );
        let mut edited = doc.clone();
        let at = doc.windows(6).position(|w| w == b"\"cph\":").unwrap() + 6;
        edited[at] = b'2';
        assert!(
            decrypt(&fk, &edited, 4096)
                .unwrap_err()
                .contains("signature")
        );
        // Not the scheme; a header cut short.
        let e = decrypt(&fk, b"dapr.io/enc/v2\n{}\nxx\n", 1).unwrap_err();
        assert_eq!(e, "invalid header: unsupported scheme");
        let e = decrypt(&fk, b"dapr.io/enc/v1\n{\"kw\":1}\n", 1).unwrap_err();
        assert_eq!(e, "invalid header: message authentication code not found");
        let e = decrypt(
            &fk,
            b"dapr.io/enc/v1\n{\"kw\":9,\"wfk\":\"AA==\",\"cph\":1,\"np\":\"AAAAAAAAAA==\"}\nxx\n",
            1,
        )
        .unwrap_err();
        assert_eq!(e, "invalid header: invalid manifest");
    }
}
