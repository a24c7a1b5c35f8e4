"""The Python SDK's crypto client against `crypto.dapr.localstorage` with
the SDK example's keys (an RSA-4096 PEM and 32 random bytes, made with
openssl as its README says), and the documents checked against an
independent implementation of the format both ways."""
import os
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from dapr.clients import DaprClient
from dapr.clients.grpc._crypto import DecryptOptions, EncryptOptions

import enc_v1

COMPONENT = "crypto-localstorage"
KEYS = "keys"


def main():
    rsa = serialization.load_pem_private_key(open(os.path.join(KEYS, "rsa-private-key.pem"), "rb").read(), None)
    sym = open(os.path.join(KEYS, "symmetric-key-256"), "rb").read()
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)

    def unwrap(kw, key_name, wrapped):
        return rsa.decrypt(wrapped, oaep) if kw == 5 else aes_key_unwrap(sym, wrapped)

    with DaprClient() as d:
        # As the SDK's example: a string with the RSA key.
        message = 'The secret is "passw0rd"'
        enc = d.encrypt(data=message, options=EncryptOptions(
            component_name=COMPONENT, key_name="rsa-private-key.pem", key_wrap_algorithm="RSA")).read()
        assert len(enc) == 856, len(enc)  # the example's own number
        dec = d.decrypt(data=enc, options=DecryptOptions(component_name=COMPONENT, key_name="rsa-private-key.pem")).read()
        assert dec.decode() == message, dec
        manifest, plain = enc_v1.decrypt(enc, unwrap)
        assert (manifest["k"], manifest["kw"], manifest["cph"], plain.decode()) == ("rsa-private-key.pem", 5, 1, message), manifest
        print("RSA OK", flush=True)

        # A file with the AES key and ChaCha20-Poly1305, past several segments.
        data = os.urandom(300 * 1024 + 7)
        enc = d.encrypt(data=data, options=EncryptOptions(
            component_name=COMPONENT, key_name="symmetric-key-256", key_wrap_algorithm="aes",
            data_encryption_cipher="chacha20-poly1305")).read()
        manifest, plain = enc_v1.decrypt(enc, unwrap)
        assert plain == data and manifest["kw"] == 1 and manifest["cph"] == 2
        dec = d.decrypt(data=enc, options=DecryptOptions(component_name=COMPONENT)).read()
        assert dec == data
        print("AES OK", flush=True)

        # Documents made by the independent implementation decrypt in tandem.
        for kw, name, wrap in [
            (1, "symmetric-key-256", lambda fk: aes_key_wrap(sym, fk)),
            (5, "rsa-private-key.pem", lambda fk: rsa.public_key().encrypt(fk, oaep)),
        ]:
            for size in [0, 1, 64 * 1024, 64 * 1024 + 1, 200 * 1024]:
                data = os.urandom(size)
                doc = enc_v1.encrypt(data, wrap, kw, key_name=name, cipher=1 + size % 2)
                if size == 0:
                    continue  # the SDK sends nothing for an empty input
                dec = d.decrypt(data=doc, options=DecryptOptions(component_name=COMPONENT)).read()
                assert dec == data, (kw, size)
        print("INTEROP OK", flush=True)

        # A flipped byte is refused, not decrypted.
        bad = bytearray(enc)
        bad[-5] ^= 1
        try:
            d.decrypt(data=bytes(bad), options=DecryptOptions(component_name=COMPONENT)).read()
            raise SystemExit("a tampered document decrypted")
        except Exception as e:  # noqa: BLE001 - the SDK raises grpc errors
            assert "failed to decrypt segment" in str(e), e
        print("TAMPER OK", flush=True)


if __name__ == "__main__":
    sys.exit(main())
