"""An independent implementation of Dapr's `dapr.io/enc/v1` format,
written from its published description with the `cryptography` package,
to check that tandem's documents are the format and not only tandem's own
round trip."""
import base64
import hashlib
import hmac
import json
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEGMENT = 64 * 1024
CIPHERS = {1: AESGCM, 2: ChaCha20Poly1305}


def _hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _nonce(prefix, i, last):
    return prefix + i.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def encrypt(plain, wrap, kw, key_name="", cipher=1):
    """`wrap(file_key) -> wrapped bytes`; `kw` the wrap algorithm's id."""
    fk, np_ = os.urandom(32), os.urandom(7)
    manifest = {}
    if key_name:
        manifest["k"] = key_name
    manifest.update(kw=kw, wfk=base64.b64encode(wrap(fk)).decode(), cph=cipher,
                    np=base64.b64encode(np_).decode())
    head = b"dapr.io/enc/v1\n" + json.dumps(manifest, separators=(",", ":")).encode() + b"\n"
    mac = hmac.new(_hkdf(fk, None, b"header"), head, hashlib.sha256).digest()
    out = head + base64.b64encode(mac) + b"\n"
    aead = CIPHERS[cipher](_hkdf(fk, np_, b"payload"))
    segments = [plain[i:i + SEGMENT] for i in range(0, len(plain), SEGMENT)]
    for i, seg in enumerate(segments):
        out += aead.encrypt(_nonce(np_, i, i == len(segments) - 1), seg, None)
    return out


def decrypt(doc, unwrap):
    """`unwrap(kw, key_name, wrapped) -> file key`; returns (manifest, plaintext)."""
    first, manifest_line, mac_line, rest = doc.split(b"\n", 3)
    assert first == b"dapr.io/enc/v1", first
    manifest = json.loads(manifest_line)
    fk = unwrap(manifest["kw"], manifest.get("k", ""), base64.b64decode(manifest["wfk"]))
    want = hmac.new(_hkdf(fk, None, b"header"), first + b"\n" + manifest_line + b"\n", hashlib.sha256).digest()
    assert hmac.compare_digest(base64.b64decode(mac_line), want), "header MAC"
    np_ = base64.b64decode(manifest["np"])
    aead = CIPHERS[manifest["cph"]](_hkdf(fk, np_, b"payload"))
    sealed = SEGMENT + 16
    chunks = [rest[i:i + sealed] for i in range(0, len(rest), sealed)]
    plain = b"".join(aead.decrypt(_nonce(np_, i, i == len(chunks) - 1), c, None) for i, c in enumerate(chunks))
    return manifest, plain
