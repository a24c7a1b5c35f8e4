"""The subtle cryptography RPCs through the Python SDK's generated stubs,
against `crypto.dapr.localstorage` with keys openssl wrote (RSA, EC P-256 as
PKCS#8, P-384 as SEC1, Ed25519, an RSA public key alone) and a P-521 JWK.
Every answer is checked with the `cryptography` package, and its outputs
are fed back the other way."""
import base64
import hashlib
import json
import os

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from dapr.proto.runtime.v1 import crypto_pb2 as pb
from dapr.proto.runtime.v1 import dapr_pb2_grpc

C = "crypto-localstorage"
KEYS = "keys"


def load(name):
    data = open(os.path.join(KEYS, name), "rb").read()
    if name.endswith(".json"):
        j = json.loads(data)
        num = lambda k: int.from_bytes(base64.urlsafe_b64decode(j[k] + "=" * (-len(j[k]) % 4)), "big")
        return ec.EllipticCurvePrivateNumbers(num("d"), ec.EllipticCurvePublicNumbers(num("x"), num("y"), ec.SECP521R1())).private_key()
    if b"PRIVATE" in data:
        return serialization.load_pem_private_key(data, None)
    return serialization.load_pem_public_key(data)


def spki(public):
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def b64u(b):
    return base64.urlsafe_b64decode(b + "=" * (-len(b) % 4))


def expect_error(call, request, code, *words):
    try:
        call(request)
    except grpc.RpcError as e:
        assert e.code() == code, (e.code(), e.details())
        for w in words:
            assert w in e.details(), (w, e.details())
        return e.details()
    raise AssertionError(f"no error for {request}")


def main():
    channel = grpc.insecure_channel(f"127.0.0.1:{os.environ['DAPR_GRPC_PORT']}")
    d = dapr_pb2_grpc.DaprStub(channel)
    rsa = load("rsa-private-key.pem")
    p256, p384, p521, ed = load("ec-p256.pem"), load("ec-p384-sec1.pem"), load("ec-p521.json"), load("ed25519.pem")
    sym = open(os.path.join(KEYS, "symmetric-key-256"), "rb").read()

    # GetKey: the public half only, as PEM (SPKI) and as a JWK.
    for name, key in [("rsa-private-key.pem", rsa), ("rsa-public-key.pem", rsa), ("ec-p256.pem", p256),
                      ("ec-p384-sec1.pem", p384), ("ec-p521.json", p521), ("ed25519.pem", ed)]:
        r = d.SubtleGetKeyAlpha1(pb.SubtleGetKeyRequest(component_name=C, name=name))
        assert r.name == name, r
        assert "PRIVATE" not in r.public_key
        got = serialization.load_pem_public_key(r.public_key.encode())
        assert spki(got) == spki(key.public_key()), name
        r = d.SubtleGetKeyAlpha1(pb.SubtleGetKeyRequest(component_name=C, name=name, format=pb.SubtleGetKeyRequest.JSON))
        jwk = json.loads(r.public_key)
        assert "d" not in jwk and jwk["kid"] == name, jwk
        public = key.public_key()
        if jwk["kty"] == "RSA":
            n = public.public_numbers()
            assert (int.from_bytes(b64u(jwk["n"]), "big"), int.from_bytes(b64u(jwk["e"]), "big")) == (n.n, n.e)
        elif jwk["kty"] == "EC":
            n = public.public_numbers()
            assert jwk["crv"] == {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[n.curve.name]
            assert (int.from_bytes(b64u(jwk["x"]), "big"), int.from_bytes(b64u(jwk["y"]), "big")) == (n.x, n.y)
        else:
            assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
            assert b64u(jwk["x"]) == public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    print("GETKEY OK", flush=True)

    # Sign through the sidecar, verify here; sign here, verify through it.
    msg = b"sign me, as the Dapr docs' examples do"
    pss = lambda h: padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
    cases = [
        ("RS256", "rsa-private-key.pem", rsa, hashes.SHA256(), lambda h: padding.PKCS1v15()),
        ("RS512", "rsa-private-key.pem", rsa, hashes.SHA512(), lambda h: padding.PKCS1v15()),
        ("PS256", "rsa-private-key.pem", rsa, hashes.SHA256(), pss),
        ("PS384", "rsa-private-key.pem", rsa, hashes.SHA384(), pss),
        ("ES256", "ec-p256.pem", p256, hashes.SHA256(), None),
        ("ES384", "ec-p384-sec1.pem", p384, hashes.SHA384(), None),
        ("ES512", "ec-p521.json", p521, hashes.SHA512(), None),
        ("EdDSA", "ed25519.pem", ed, None, None),
    ]
    for alg, name, key, h, pad in cases:
        digest = msg if h is None else hashlib.new(h.name, msg).digest()
        sig = d.SubtleSignAlpha1(pb.SubtleSignRequest(component_name=C, digest=digest, algorithm=alg, key_name=name)).signature
        public = key.public_key()
        if alg.startswith(("RS", "PS")):
            public.verify(sig, msg, pad(h), h)
            theirs = key.sign(msg, pad(h), h)
        elif alg.startswith("ES"):
            # ASN.1 DER, as daprd signs; JOSE's fixed r||s verifies too.
            public.verify(sig, msg, ec.ECDSA(h))
            theirs = key.sign(msg, ec.ECDSA(h))
            size = (key.curve.key_size + 7) // 8
            r, s = utils.decode_dss_signature(theirs)
            jose = r.to_bytes(size, "big") + s.to_bytes(size, "big")
            assert d.SubtleVerifyAlpha1(pb.SubtleVerifyRequest(component_name=C, digest=digest, algorithm=alg,
                                                              key_name=name, signature=jose)).valid
        else:
            public.verify(sig, msg)
            theirs = key.sign(msg)
        verify_name = "rsa-public-key.pem" if name == "rsa-private-key.pem" else name
        for signature, valid in [(sig, True), (theirs, True), (sig[:-1] + bytes([sig[-1] ^ 1]), False)]:
            r = d.SubtleVerifyAlpha1(pb.SubtleVerifyRequest(component_name=C, digest=digest, algorithm=alg,
                                                           key_name=verify_name, signature=signature))
            assert r.valid is valid, (alg, valid)
    print("SIGN OK", flush=True)

    # Encrypt and decrypt, both ways.
    nonce, aad = os.urandom(12), b"header"
    for alg, cls in [("A256GCM", AESGCM), ("C20P", ChaCha20Poly1305)]:
        r = d.SubtleEncryptAlpha1(pb.SubtleEncryptRequest(component_name=C, plaintext=msg, algorithm=alg,
                                                         key_name="symmetric-key-256", nonce=nonce, associated_data=aad))
        assert len(r.tag) == 16
        assert cls(sym).decrypt(nonce, r.ciphertext + r.tag, aad) == msg
        sealed = cls(sym).encrypt(nonce, msg, aad)
        p = d.SubtleDecryptAlpha1(pb.SubtleDecryptRequest(component_name=C, ciphertext=sealed[:-16], tag=sealed[-16:],
                                                         algorithm=alg, key_name="symmetric-key-256", nonce=nonce,
                                                         associated_data=aad)).plaintext
        assert p == msg
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    r = d.SubtleEncryptAlpha1(pb.SubtleEncryptRequest(component_name=C, plaintext=msg, algorithm="RSA-OAEP-256",
                                                     key_name="rsa-public-key.pem"))
    assert r.tag == b"" and rsa.decrypt(r.ciphertext, oaep) == msg
    p = d.SubtleDecryptAlpha1(pb.SubtleDecryptRequest(component_name=C, ciphertext=rsa.public_key().encrypt(msg, oaep),
                                                     algorithm="RSA-OAEP-256", key_name="rsa-private-key.pem")).plaintext
    assert p == msg
    print("ENCRYPT OK", flush=True)

    # Wrap a key: AES-KW matches RFC 3394 as `cryptography` computes it.
    cek = os.urandom(32)
    r = d.SubtleWrapKeyAlpha1(pb.SubtleWrapKeyRequest(component_name=C, plaintext_key=cek, algorithm="A256KW",
                                                     key_name="symmetric-key-256"))
    assert r.wrapped_key == aes_key_wrap(sym, cek)
    u = d.SubtleUnwrapKeyAlpha1(pb.SubtleUnwrapKeyRequest(component_name=C, wrapped_key=r.wrapped_key, algorithm="A256KW",
                                                         key_name="symmetric-key-256"))
    assert u.plaintext_key == cek
    r = d.SubtleWrapKeyAlpha1(pb.SubtleWrapKeyRequest(component_name=C, plaintext_key=cek, algorithm="RSA-OAEP-256",
                                                     key_name="rsa-private-key.pem"))
    assert rsa.decrypt(r.wrapped_key, oaep) == cek
    print("WRAP OK", flush=True)

    # Bad input: a clear error, and the sidecar goes on.
    INTERNAL, INVALID = grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT
    expect_error(d.SubtleGetKeyAlpha1, pb.SubtleGetKeyRequest(component_name="nope", name="ed25519.pem"), INVALID, "nope", "not found")
    expect_error(d.SubtleGetKeyAlpha1, pb.SubtleGetKeyRequest(component_name=C, name="missing.pem"), INTERNAL, "missing.pem")
    expect_error(d.SubtleGetKeyAlpha1, pb.SubtleGetKeyRequest(component_name=C, name="../keys/ed25519.pem"), INTERNAL, "invalid key path")
    expect_error(d.SubtleGetKeyAlpha1, pb.SubtleGetKeyRequest(component_name=C, name="symmetric-key-256"), INTERNAL, "symmetric")
    expect_error(d.SubtleGetKeyAlpha1, pb.SubtleGetKeyRequest(component_name=C, name=""), INVALID, "key name")
    expect_error(d.SubtleSignAlpha1, pb.SubtleSignRequest(component_name=C, digest=b"x" * 31, algorithm="RS256",
                                                          key_name="rsa-private-key.pem"), INTERNAL, "invalid digest")
    expect_error(d.SubtleSignAlpha1, pb.SubtleSignRequest(component_name=C, digest=b"x" * 32, algorithm="RS256",
                                                          key_name="rsa-public-key.pem"), INTERNAL, "private key")
    expect_error(d.SubtleSignAlpha1, pb.SubtleSignRequest(component_name=C, digest=b"x" * 32, algorithm="ES256",
                                                          key_name="ec-p384-sec1.pem"), INTERNAL, "P-256")
    expect_error(d.SubtleSignAlpha1, pb.SubtleSignRequest(component_name=C, digest=b"x" * 32, algorithm="",
                                                          key_name="ec-p256.pem"), INVALID, "algorithm")
    expect_error(d.SubtleEncryptAlpha1, pb.SubtleEncryptRequest(component_name=C, plaintext=msg, algorithm="A256GCM",
                                                                key_name="symmetric-key-256", nonce=b"short"), INTERNAL, "nonce")
    expect_error(d.SubtleDecryptAlpha1, pb.SubtleDecryptRequest(component_name=C, ciphertext=sealed[:-16], tag=bytes(16),
                                                                algorithm="C20P", key_name="symmetric-key-256", nonce=nonce,
                                                                associated_data=aad), INTERNAL, "failed to decrypt")
    expect_error(d.SubtleEncryptAlpha1, pb.SubtleEncryptRequest(component_name=C, plaintext=msg, algorithm="XYZ",
                                                                key_name="symmetric-key-256"), INTERNAL, "unsupported algorithm")
    assert d.SubtleGetKeyAlpha1(pb.SubtleGetKeyRequest(component_name=C, name="ed25519.pem")).public_key
    print("ERRORS OK", flush=True)


if __name__ == "__main__":
    main()
