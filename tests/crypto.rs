//! The cryptography API through a real sidecar: HTTP encrypt/decrypt with
//! Dapr's headers and errors, keys in every file form `openssl` writes,
//! large documents streamed, and the gRPC streams' sequence rules.

mod common;

use common::{TempDir, component, sidecar};
use std::process::Command;
use tandem_proto::common::v1::StreamPayload;
use tandem_proto::runtime::v1 as rt;
use tandem_proto::runtime::v1::dapr_client::DaprClient;

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sidecar with `keys` (crypto.dapr.localstorage) over a folder with an
/// AES key (raw and base64), RSA keys (PKCS#8, PKCS#1, public only), an EC key.
fn setup() -> (common::Sidecar, TempDir) {
    let dir = TempDir::new("crypto");
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(keys.join("team")).unwrap();
    let k = |name: &str| keys.join(name).display().to_string();
    std::fs::write(keys.join("aes"), [0x11u8; 32]).unwrap();
    std::fs::write(
        keys.join("team/v2"),
        "ERERERERERERERERERERERERERERERERERERERERERE=\n",
    )
    .unwrap();
    std::fs::write(keys.join("short"), [0x11u8; 16]).unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &k("rsa.pem"),
    ]);
    openssl(&[
        "rsa",
        "-in",
        &k("rsa.pem"),
        "-traditional",
        "-out",
        &k("rsa-pkcs1.pem"),
    ]);
    openssl(&[
        "rsa",
        "-in",
        &k("rsa.pem"),
        "-pubout",
        "-out",
        &k("rsa-public.pem"),
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &k("ec.pem"),
    ]);
    dir.write(
        "res/keys.yaml",
        &component(
            "keys",
            "crypto.dapr.localstorage",
            &[("path", keys.to_str().unwrap())],
        ),
    );
    let s = sidecar()
        .args(["--resources-path", dir.path().join("res").to_str().unwrap()])
        .start();
    (s, dir)
}

fn put(s: &common::Sidecar, op: &str, headers: &[(&str, &str)], body: &[u8]) -> common::Resp {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    common::http(
        s.http,
        "PUT",
        &format!("/v1.0-alpha1/crypto/keys/{op}"),
        &headers,
        body,
    )
    .unwrap()
}

#[test]
fn http_encrypts_and_decrypts_with_every_key_form_and_refuses_bad_input() {
    let (s, _dir) = setup();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    for (key, alg, cipher) in [
        ("aes", "AES", ""),
        ("team/v2", "A256KW", "chacha20-poly1305"),
        ("rsa.pem", "RSA", "AES-GCM"),
        ("rsa-pkcs1.pem", "rsa-oaep-256", ""),
    ] {
        let r = put(
            &s,
            "encrypt",
            &[
                ("dapr-key-name", key),
                ("dapr-key-wrap-algorithm", alg),
                ("dapr-data-encryption-cipher", cipher),
            ],
            &data,
        );
        assert_eq!(r.status, 200, "{key}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert!(r.body.starts_with(b"dapr.io/enc/v1\n{\"k\":\""), "{key}");
        let back = put(&s, "decrypt", &[], &r.body);
        assert_eq!(back.status, 200, "{key}: {}", back.text());
        assert!(back.body == data, "{key}: round trip");
    }
    // Encrypted for the public key, decrypted with the private one named.
    let r = put(
        &s,
        "encrypt",
        &[
            ("dapr-key-name", "rsa-public.pem"),
            ("dapr-key-wrap-algorithm", "RSA"),
            ("dapr-omit-decryption-key-name", "yes"),
        ],
        b"hi",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.starts_with(b"dapr.io/enc/v1\n{\"kw\":5,"));
    let back = put(&s, "decrypt", &[], &r.body);
    assert_eq!(
        (back.status, back.error_code().as_str()),
        (500, "ERR_CRYPTO")
    );
    assert!(
        back.text().contains("no key name was provided"),
        "{}",
        back.text()
    );
    let back = put(&s, "decrypt", &[("dapr-key-name", "rsa.pem")], &r.body);
    assert_eq!((back.status, back.body.as_slice()), (200, &b"hi"[..]));
    // The public key alone cannot decrypt; nor can another key: both look
    // like a bad signature.
    // The same key in its PKCS#1 file works too.
    let back = put(
        &s,
        "decrypt",
        &[("dapr-key-name", "rsa-pkcs1.pem")],
        &r.body,
    );
    assert_eq!((back.status, back.body.as_slice()), (200, &b"hi"[..]));
    for key in ["rsa-public.pem", "ec.pem", "aes", "missing"] {
        let back = put(&s, "decrypt", &[("dapr-key-name", key)], &r.body);
        assert_eq!(back.status, 500, "{key}");
        assert!(
            back.text()
                .contains("failed to validate the document's signature"),
            "{key}: {}",
            back.text()
        );
    }
    // A name to write in place of the key's.
    let r = put(
        &s,
        "encrypt",
        &[
            ("dapr-key-name", "aes"),
            ("dapr-key-wrap-algorithm", "AES"),
            ("dapr-decryption-key-name", "team/v2"),
        ],
        b"x",
    );
    assert!(r.body.starts_with(b"dapr.io/enc/v1\n{\"k\":\"team/v2\""));
    assert_eq!(put(&s, "decrypt", &[], &r.body).body, b"x");
    // Empty in, header out, empty back.
    let r = put(
        &s,
        "encrypt",
        &[("dapr-key-name", "aes"), ("dapr-key-wrap-algorithm", "AES")],
        b"",
    );
    assert_eq!(r.body.iter().filter(|b| **b == b'\n').count(), 3);
    let back = put(&s, "decrypt", &[], &r.body);
    assert_eq!((back.status, back.body.len()), (200, 0));

    // Tampered and truncated documents: 500, no plaintext.
    let good = put(
        &s,
        "encrypt",
        &[("dapr-key-name", "aes"), ("dapr-key-wrap-algorithm", "AES")],
        &data,
    )
    .body;
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 100] ^= 0x80;
    let back = put(&s, "decrypt", &[], &bad);
    assert_eq!(
        (back.status, back.error_code().as_str()),
        (500, "ERROR"),
        "{}",
        back.text()
    );
    assert!(
        back.text()
            .contains("error processing segment 3: failed to decrypt segment"),
        "{}",
        back.text()
    );
    let back = put(&s, "decrypt", &[], &good[..good.len() - 70_000]);
    assert_eq!(back.status, 500);
    let back = put(&s, "decrypt", &[], b"dapr.io/enc/v1\n{\"kw\":1}\n");
    assert!(
        back.text()
            .contains("message authentication code not found"),
        "{}",
        back.text()
    );
    let back = put(&s, "decrypt", &[], b"hello");
    assert!(back.text().contains("invalid header"), "{}", back.text());

    // Bad requests, with daprd's codes.
    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str, &'a str);
    let cases: &[Case] = &[
        (
            &[("dapr-key-wrap-algorithm", "AES")],
            400,
            "ERR_BAD_REQUEST",
            "missing header 'dapr-key-name'",
        ),
        (
            &[("dapr-key-name", "aes")],
            400,
            "ERR_BAD_REQUEST",
            "missing header 'dapr-key-wrap-algorithm'",
        ),
        (
            &[
                ("dapr-key-name", "aes"),
                ("dapr-key-wrap-algorithm", "A128CBC"),
            ],
            500,
            "ERR_CRYPTO",
            "algorithm A128CBC is not supported",
        ),
        (
            &[
                ("dapr-key-name", "aes"),
                ("dapr-key-wrap-algorithm", "A128CBC-NOPAD"),
            ],
            500,
            "ERR_CRYPTO",
            "unsupported algorithm",
        ),
        (
            &[
                ("dapr-key-name", "aes"),
                ("dapr-key-wrap-algorithm", "AES"),
                ("dapr-data-encryption-cipher", "rot13"),
            ],
            500,
            "ERR_CRYPTO",
            "cipher ROT13 is not supported",
        ),
        (
            &[
                ("dapr-key-name", "short"),
                ("dapr-key-wrap-algorithm", "AES"),
            ],
            500,
            "ERR_CRYPTO",
            "key type mismatch",
        ),
        (
            &[
                ("dapr-key-name", "ec.pem"),
                ("dapr-key-wrap-algorithm", "RSA"),
            ],
            500,
            "ERR_CRYPTO",
            "key type mismatch",
        ),
        (
            &[("dapr-key-name", "aes"), ("dapr-key-wrap-algorithm", "RSA")],
            500,
            "ERR_CRYPTO",
            "key type mismatch",
        ),
        (
            &[
                ("dapr-key-name", "nope"),
                ("dapr-key-wrap-algorithm", "AES"),
            ],
            500,
            "ERR_CRYPTO",
            "failed to load key 'nope'",
        ),
        (
            &[
                ("dapr-key-name", "../res/keys.yaml"),
                ("dapr-key-wrap-algorithm", "AES"),
            ],
            500,
            "ERR_CRYPTO",
            "invalid key path",
        ),
        (
            &[
                ("dapr-key-name", "%2e%2e/x"),
                ("dapr-key-wrap-algorithm", "AES"),
            ],
            500,
            "ERR_CRYPTO",
            "failed to load key",
        ),
    ];
    for (headers, status, code, says) in cases {
        let r = put(&s, "encrypt", headers, b"data");
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (*status, *code),
            "{headers:?}: {}",
            r.text()
        );
        assert!(r.text().contains(says), "{headers:?}: {}", r.text());
    }
    let r = common::http(
        s.http,
        "PUT",
        "/v1.0-alpha1/crypto/other/encrypt",
        &[("dapr-key-name", "aes"), ("dapr-key-wrap-algorithm", "AES")],
        b"x",
    )
    .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_CRYPTO_PROVIDER_NOT_FOUND")
    );
    // Past --max-body-size (4 MiB by default), as every API.
    let big = vec![0u8; 5 << 20];
    let r = put(
        &s,
        "encrypt",
        &[("dapr-key-name", "aes"), ("dapr-key-wrap-algorithm", "AES")],
        &big,
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(s.get("/v1.0/healthz").status, 204);
}

fn subtle(s: &common::Sidecar, op: &str, body: serde_json::Value) -> common::Resp {
    common::http(
        s.http,
        "POST",
        &format!("/v1.0-alpha1/subtlecrypto/keys/{op}"),
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .unwrap()
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(v: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

/// The subtle operations over HTTP (protobuf JSON bodies), every answer
/// checked by `openssl`: the public key it derives, the signatures it
/// verifies, the data it decrypts.
#[test]
fn http_subtle_operations_agree_with_openssl() {
    use serde_json::json;
    let (s, dir) = setup();
    let keys = dir.path().join("keys");
    let k = |name: &str| keys.join(name).display().to_string();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let w = |name: &str| work.join(name).display().to_string();

    // GetKey: byte for byte the PEM `openssl pkey -pubout` writes.
    for key in ["ec.pem", "rsa.pem", "rsa-pkcs1.pem", "rsa-public.pem"] {
        let r = subtle(&s, "getkey", json!({"name": key}));
        assert_eq!(r.status, 200, "{key}: {}", r.text());
        let out = Command::new("openssl")
            .args(["pkey", "-pubin", "-in", &k(key), "-pubout"])
            .output()
            .unwrap();
        let out = if out.status.success() {
            out
        } else {
            Command::new("openssl")
                .args(["pkey", "-in", &k(key), "-pubout"])
                .output()
                .unwrap()
        };
        assert_eq!(
            r.json()["publicKey"].as_str().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
            "{key}"
        );
        assert_eq!(r.json()["name"], key);
    }
    let r = subtle(&s, "getkey", json!({"name": "ec.pem", "format": "JSON"}));
    let jwk: serde_json::Value =
        serde_json::from_str(r.json()["publicKey"].as_str().unwrap()).unwrap();
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert!(jwk.get("d").is_none());

    // Sign here, verify with openssl (and the other way round).
    let message = b"signed through the sidecar";
    std::fs::write(w("msg"), message).unwrap();
    let digest = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", &w("msg")])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(digest.len(), 32);
    openssl(&[
        "pkey",
        "-in",
        &k("ec.pem"),
        "-pubout",
        "-out",
        &w("ec-pub.pem"),
    ]);
    for (key, alg, public) in [
        ("ec.pem", "ES256", w("ec-pub.pem")),
        ("rsa.pem", "RS256", k("rsa-public.pem")),
        ("rsa-pkcs1.pem", "PS256", k("rsa-public.pem")),
    ] {
        let r = subtle(
            &s,
            "sign",
            json!({"keyName": key, "algorithm": alg, "digest": b64(&digest)}),
        );
        assert_eq!(r.status, 200, "{alg}: {}", r.text());
        std::fs::write(w("sig"), unb64(&r.json()["signature"])).unwrap();
        let mut args = vec!["dgst", "-sha256", "-verify", &public, "-signature"];
        let sig = w("sig");
        args.push(&sig);
        if alg == "PS256" {
            args.extend([
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:digest",
            ]);
        }
        let m = w("msg");
        args.push(&m);
        openssl(&args);
        // openssl's own signature verifies through the sidecar.
        let mut args = vec!["dgst", "-sha256", "-sign"];
        let private = k(key);
        args.push(&private);
        if alg == "PS256" {
            args.extend([
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:digest",
            ]);
        }
        let theirs = w("theirs");
        args.extend(["-out", &theirs, &m]);
        openssl(&args);
        let r = subtle(
            &s,
            "verify",
            json!({"keyName": key, "algorithm": alg, "digest": b64(&digest),
                   "signature": b64(&std::fs::read(&theirs).unwrap())}),
        );
        assert_eq!(r.json(), json!({"valid": true}), "{alg}");
        let r = subtle(
            &s,
            "verify",
            json!({"keyName": key, "algorithm": alg, "digest": b64(&[0u8; 32]),
                   "signature": b64(&std::fs::read(&theirs).unwrap())}),
        );
        assert_eq!(r.json(), json!({"valid": false}), "{alg}");
    }

    // AES-256-CBC: openssl decrypts what the sidecar encrypted.
    let iv = [0x42u8; 16];
    let r = subtle(
        &s,
        "encrypt",
        json!({"keyName": "aes", "algorithm": "A256CBC", "plaintext": b64(message), "nonce": b64(&iv)}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    std::fs::write(w("ct"), unb64(&r.json()["ciphertext"])).unwrap();
    let out = Command::new("openssl")
        .args([
            "enc",
            "-d",
            "-aes-256-cbc",
            "-K",
            &"11".repeat(32),
            "-iv",
            &"42".repeat(16),
            "-in",
            &w("ct"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.stdout,
        message,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // AES-GCM round trip with associated data; the proto names work too.
    let r = subtle(
        &s,
        "encrypt",
        json!({"key_name": "aes", "algorithm": "A256GCM", "plaintext": b64(message),
               "nonce": b64(&[1; 12]), "associated_data": b64(b"ad")}),
    );
    let (ct, tag) = (r.json()["ciphertext"].clone(), r.json()["tag"].clone());
    let r = subtle(
        &s,
        "decrypt",
        json!({"keyName": "aes", "algorithm": "A256GCM", "ciphertext": ct, "tag": tag,
               "nonce": b64(&[1; 12]), "associatedData": b64(b"ad")}),
    );
    assert_eq!(unb64(&r.json()["plaintext"]), message);
    let r = subtle(
        &s,
        "decrypt",
        json!({"keyName": "aes", "algorithm": "A256GCM", "ciphertext": ct, "tag": tag,
               "nonce": b64(&[1; 12]), "associatedData": b64(b"other")}),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_CRYPTO"),
        "{}",
        r.text()
    );
    // Wrap and unwrap.
    let r = subtle(
        &s,
        "wrapkey",
        json!({"keyName": "rsa-public.pem", "algorithm": "RSA-OAEP-256", "plaintextKey": b64(&[9; 32])}),
    );
    let wrapped = r.json()["wrappedKey"].clone();
    let r = subtle(
        &s,
        "unwrapkey",
        json!({"keyName": "rsa.pem", "algorithm": "RSA-OAEP-256", "wrappedKey": wrapped}),
    );
    assert_eq!(unb64(&r.json()["plaintextKey"]), [9; 32]);

    // Bad input: the right status, a message that says what to fix.
    for (op, body, status, code, words) in [
        (
            "sign",
            json!({"keyName": "ec.pem", "algorithm": "ES256", "digest": "%%%"}),
            400,
            "ERR_MALFORMED_REQUEST",
            "not base64",
        ),
        (
            "sign",
            json!({"keyName": 7, "algorithm": "ES256"}),
            400,
            "ERR_MALFORMED_REQUEST",
            "expected a string",
        ),
        (
            "sign",
            json!([1, 2]),
            400,
            "ERR_MALFORMED_REQUEST",
            "JSON object",
        ),
        (
            "sign",
            json!({"keyName": "ec.pem", "algorithm": "ES256", "digest": b64(&[1; 31])}),
            500,
            "ERR_CRYPTO",
            "invalid digest",
        ),
        (
            "sign",
            json!({"keyName": "rsa-public.pem", "algorithm": "RS256", "digest": b64(&[1; 32])}),
            500,
            "ERR_CRYPTO",
            "private key",
        ),
        (
            "sign",
            json!({"keyName": "../keys/ec.pem", "algorithm": "ES256", "digest": b64(&[1; 32])}),
            500,
            "ERR_CRYPTO",
            "invalid key path",
        ),
        (
            "encrypt",
            json!({"keyName": "aes", "algorithm": "A256GCM", "plaintext": "AA=="}),
            500,
            "ERR_CRYPTO",
            "invalid nonce",
        ),
        (
            "encrypt",
            json!({"keyName": "aes", "plaintext": "AA=="}),
            400,
            "ERR_BAD_REQUEST",
            "missing algorithm",
        ),
        (
            "getkey",
            json!({"name": "aes"}),
            500,
            "ERR_CRYPTO_KEY",
            "symmetric",
        ),
        (
            "getkey",
            json!({"name": "nothere"}),
            500,
            "ERR_CRYPTO_KEY",
            "nothere",
        ),
        (
            "getkey",
            json!({"name": "ec.pem", "format": "DER"}),
            400,
            "ERR_MALFORMED_REQUEST",
            "format",
        ),
        (
            "getkey",
            json!({"name": "ec.pem", "format": 7}),
            400,
            "ERR_BAD_REQUEST",
            "format",
        ),
        ("getkey", json!({}), 400, "ERR_BAD_REQUEST", "key name"),
    ] {
        let r = subtle(&s, op, body.clone());
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (status, code),
            "{body}: {}",
            r.text()
        );
        assert!(r.text().contains(words), "{body}: {}", r.text());
    }
    // A tagged daprd's made-up feature, listed once a crypto component is
    // loaded (the metadata shape test covers its absence without one).
    let features = s.get("/v1.0/metadata").json()["enabledFeatures"].clone();
    assert_eq!(features, serde_json::json!(["_SubtleCrypto"]));
    let r = common::http(
        s.http,
        "POST",
        "/v1.0-alpha1/subtlecrypto/nope/getkey",
        &[],
        b"{\"name\":\"ec.pem\"}",
    )
    .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_CRYPTO_PROVIDER_NOT_FOUND")
    );
    assert_eq!(s.get("/v1.0/healthz").status, 204);
}

#[test]
fn without_a_crypto_component_the_api_says_so() {
    let s = sidecar().start();
    let r = common::http(
        s.http,
        "PUT",
        "/v1.0-alpha1/crypto/keys/encrypt",
        &[("dapr-key-name", "a"), ("dapr-key-wrap-algorithm", "AES")],
        b"x",
    )
    .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_CRYPTO_PROVIDERS_NOT_CONFIGURED")
    );
}

fn chunk(data: &[u8], seq: u64) -> Option<StreamPayload> {
    Some(StreamPayload {
        data: data.to_vec(),
        seq,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_number_their_chunks_and_check_the_callers() {
    let (s, _dir) = tokio::task::spawn_blocking(setup).await.unwrap();
    let mut c = DaprClient::connect(s.grpc_endpoint()).await.unwrap();
    let options = || rt::EncryptRequestOptions {
        component_name: "keys".into(),
        key_name: "aes".into(),
        key_wrap_algorithm: "AES".into(),
        ..Default::default()
    };
    // 3 chunks in, the options on the first; numbered answers back.
    let data: Vec<u8> = (0..150_000u32).map(|i| i as u8).collect();
    let reqs: Vec<rt::EncryptRequest> = data
        .chunks(50_000)
        .enumerate()
        .map(|(i, d)| rt::EncryptRequest {
            options: (i == 0).then(options),
            payload: chunk(d, i as u64),
        })
        .collect();
    let mut out = c
        .encrypt_alpha1(futures_util::stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut doc = Vec::new();
    let mut seq = 0;
    while let Some(m) = out.message().await.unwrap() {
        let p = m.payload.unwrap();
        assert_eq!(p.seq, seq);
        seq += 1;
        doc.extend_from_slice(&p.data);
    }
    assert!(seq >= 2);
    let reqs = vec![
        rt::DecryptRequest {
            options: Some(rt::DecryptRequestOptions {
                component_name: "keys".into(),
                key_name: String::new(),
            }),
            payload: None,
        },
        rt::DecryptRequest {
            options: None,
            payload: chunk(&doc[..1000], 0),
        },
        rt::DecryptRequest {
            options: None,
            payload: chunk(&doc[1000..], 1),
        },
    ];
    let mut out = c
        .decrypt_alpha1(futures_util::stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut plain = Vec::new();
    while let Some(m) = out.message().await.unwrap() {
        plain.extend_from_slice(&m.payload.unwrap().data);
    }
    assert!(plain == data);

    // A chunk out of order, options twice, none at all, no component.
    let collect = |status: Result<
        tonic::Response<tonic::Streaming<rt::EncryptResponse>>,
        tonic::Status,
    >| async move {
        match status {
            Err(e) => Err(e),
            Ok(r) => {
                let mut s = r.into_inner();
                loop {
                    match s.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    };
    let e = collect(
        c.encrypt_alpha1(futures_util::stream::iter(vec![
            rt::EncryptRequest {
                options: Some(options()),
                payload: chunk(b"a", 0),
            },
            rt::EncryptRequest {
                options: None,
                payload: chunk(b"b", 2),
            },
        ]))
        .await,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal);
    assert!(
        e.message()
            .contains("invalid sequence number received: 2 (expected: 1)"),
        "{e:?}"
    );
    let e = collect(
        c.encrypt_alpha1(futures_util::stream::iter(vec![
            rt::EncryptRequest {
                options: Some(options()),
                payload: chunk(b"a", 0),
            },
            rt::EncryptRequest {
                options: Some(options()),
                payload: chunk(b"b", 1),
            },
        ]))
        .await,
    )
    .await
    .unwrap_err();
    assert!(
        e.message().contains("options found in non-leading message"),
        "{e:?}"
    );
    let e = collect(
        c.encrypt_alpha1(futures_util::stream::iter(vec![rt::EncryptRequest {
            options: None,
            payload: chunk(b"a", 0),
        }]))
        .await,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .contains("first message does not contain the required options"),
        "{e:?}"
    );
    let mut o = options();
    o.key_name.clear();
    let e = collect(
        c.encrypt_alpha1(futures_util::stream::iter(vec![rt::EncryptRequest {
            options: Some(o),
            payload: None,
        }]))
        .await,
    )
    .await
    .unwrap_err();
    assert!(e.message().contains("missing property 'keyName'"), "{e:?}");
    let mut o = options();
    o.component_name = "nope".into();
    let e = collect(
        c.encrypt_alpha1(futures_util::stream::iter(vec![rt::EncryptRequest {
            options: Some(o),
            payload: None,
        }]))
        .await,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("crypto provider nope not found"),
        "{e:?}"
    );
}

/// `crypto.dapr.jwks` with the set inline, from a file and from a URL; the
/// RSA key as a private JWK and as its public half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_component_serves_its_keys_by_kid() {
    let set = include_str!("fixtures/jwks.json");
    let served = set.to_string();
    let port = common::serve_http(move |_req: hyper::Request<hyper::body::Incoming>| {
        let body = served.clone();
        async move { hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body))) }
    })
    .await;
    let dir = TempDir::new("crypto-jwks");
    let file = dir.write("set.json", set);
    let inline = set.replace('\n', "");
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    dir.write(
        "res/keys.yaml",
        &[
            // The set itself in a single-quoted YAML scalar.
            component("inline", "crypto.dapr.jwks", &[("jwks", "SET")])
                .replace("\"SET\"", &format!("'{inline}'")),
            component(
                "file",
                "crypto.dapr.jwks",
                &[("jwks", file.to_str().unwrap())],
            ),
            component("remote", "crypto.dapr.jwks", &[("jwks", &url)]),
        ]
        .join("---\n"),
    );
    let res = dir.path().join("res");
    let s = tokio::task::spawn_blocking(move || {
        sidecar()
            .args(["--resources-path", res.to_str().unwrap()])
            .start()
    })
    .await
    .unwrap();
    let port = s.http;
    tokio::task::spawn_blocking(move || {
        let call = |store: &str, op: &str, headers: &[(&str, &str)], body: &[u8]| {
            common::http(
                port,
                "PUT",
                &format!("/v1.0-alpha1/crypto/{store}/{op}"),
                headers,
                body,
            )
            .unwrap()
        };
        for store in ["inline", "file", "remote"] {
            for (key, alg, decrypt_with) in [
                ("sym", "AES", "sym"),
                ("rsa-private", "RSA", "rsa-private"),
                ("rsa-public", "RSA", "rsa-private"),
            ] {
                let enc = call(
                    store,
                    "encrypt",
                    &[("dapr-key-name", key), ("dapr-key-wrap-algorithm", alg)],
                    b"jwks data",
                );
                assert_eq!(enc.status, 200, "{store} {key}: {}", enc.text());
                let dec = call(
                    store,
                    "decrypt",
                    &[("dapr-key-name", decrypt_with)],
                    &enc.body,
                );
                assert_eq!(
                    (dec.status, dec.body.as_slice()),
                    (200, &b"jwks data"[..]),
                    "{store} {key}"
                );
            }
            let e = call(
                store,
                "encrypt",
                &[("dapr-key-name", "ec"), ("dapr-key-wrap-algorithm", "RSA")],
                b"x",
            );
            assert!(e.text().contains("key type mismatch"), "{}", e.text());
            let e = call(
                store,
                "encrypt",
                &[
                    ("dapr-key-name", "nope"),
                    ("dapr-key-wrap-algorithm", "AES"),
                ],
                b"x",
            );
            assert!(
                e.text().contains("key 'nope' not found in the key set"),
                "{}",
                e.text()
            );
        }
        drop(s);
    })
    .await
    .unwrap();
    // A set without kids, or not JSON, stops the sidecar with the reason.
    for (jwks, says) in [
        (r#"{"keys":[{"kty":"oct","k":"AAAA"}]}"#, "has no `kid`"),
        ("/nowhere/set.json", "as a file: No such file"),
        ("bm90IGEga2V5IHNldA==", "not a key set"),
        ("http://127.0.0.1:1/set.json", "127.0.0.1:1"),
    ] {
        let d = TempDir::new("crypto-jwks-bad");
        d.write(
            "c.yaml",
            &component("bad", "crypto.dapr.jwks", &[("jwks", "SET")])
                .replace("\"SET\"", &format!("'{jwks}'")),
        );
        let path = d.path().to_str().unwrap().to_string();
        let (status, out) = tokio::task::spawn_blocking(move || {
            sidecar().args(["--resources-path", &path]).start_failing()
        })
        .await
        .unwrap();
        assert!(!status.success());
        assert!(out.contains(says), "{jwks}: {out}");
    }
}

/// The key set follows its source: a URL's is fetched again every
/// `minRefreshInterval`, a file's when it changes; a broken update keeps
/// the keys there were. The set may also be given in base64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_set_is_loaded_again_when_its_source_changes() {
    use base64::Engine;
    let oct = |kid: &str, byte: u8| {
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([byte; 32]);
        format!(r#"{{"keys":[{{"kty":"oct","kid":"{kid}","k":"{k}"}}]}}"#)
    };
    let served = std::sync::Arc::new(std::sync::Mutex::new(oct("first", 1)));
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (set, count) = (served.clone(), fetches.clone());
    let port = common::serve_http(move |_req: hyper::Request<hyper::body::Incoming>| {
        let body = set.lock().unwrap().clone();
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body))) }
    })
    .await;
    let dir = TempDir::new("crypto-jwks-refresh");
    let file = dir.write("set.json", &oct("first", 1));
    let inline = base64::engine::general_purpose::STANDARD.encode(oct("inline", 3));
    dir.write(
        "res/keys.yaml",
        &[
            component(
                "remote",
                "crypto.dapr.jwks",
                &[
                    ("jwks", &format!("http://127.0.0.1:{port}/jwks.json")),
                    ("minRefreshInterval", "1s"),
                ],
            ),
            component(
                "file",
                "crypto.dapr.jwks",
                &[("jwks", file.to_str().unwrap())],
            ),
            component("b64", "crypto.dapr.jwks", &[("jwks", &inline)]),
        ]
        .join("---\n"),
    );
    let res = dir.path().join("res");
    let s = tokio::task::spawn_blocking(move || {
        sidecar()
            .args(["--resources-path", res.to_str().unwrap()])
            .start()
    })
    .await
    .unwrap();
    let http = s.http;
    let has = move |store: &'static str, kid: &'static str| async move {
        tokio::task::spawn_blocking(move || {
            let body = serde_json::json!({"keyName": kid, "algorithm": "A256KW", "plaintextKey": b64(&[5; 16])});
            let r = common::http(
                http,
                "POST",
                &format!("/v1.0-alpha1/subtlecrypto/{store}/wrapkey"),
                &[],
                body.to_string().as_bytes(),
            )
            .unwrap();
            assert!(r.status == 200 || r.text().contains("not found"), "{}", r.text());
            r.status == 200
        })
        .await
        .unwrap()
    };
    assert!(has("b64", "inline").await);
    for store in ["remote", "file"] {
        assert!(has(store, "first").await);
        assert!(!has(store, "second").await);
    }
    *served.lock().unwrap() = oct("second", 2);
    // Another length, so the change shows even within the file time's grain.
    std::fs::write(&file, format!("{}\n", oct("second", 2))).unwrap();
    for store in ["remote", "file"] {
        let mut found = false;
        for _ in 0..40 {
            if has(store, "second").await {
                found = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        assert!(found, "{store}: the new set was not loaded");
        assert!(!has(store, "first").await, "{store}: the old set stayed");
    }
    // A broken update: the keys stay as they were.
    *served.lock().unwrap() = "not json".into();
    std::fs::write(&file, "{ broken").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    for store in ["remote", "file"] {
        assert!(
            has(store, "second").await,
            "{store}: a broken update dropped the keys"
        );
    }
    let before = fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!(before >= 3, "the URL was fetched {before} times");
    drop(s);
}
