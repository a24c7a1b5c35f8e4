//! The Dapr HTTP and gRPC API of a real `tandem sidecar` process: health,
//! metadata, secrets, the API token, limits, errors and metrics.

mod common;

use common::{TempDir, component, sidecar};
use std::time::Duration;
use tandem_proto::runtime::v1 as rt;
use tandem_proto::runtime::v1::dapr_client::DaprClient;

const SECRETS_JSON: &str = r#"{
  "db": {"password": "s3cret", "user": "admin"},
  "api-key": "abc",
  "denied-one": "nope"
}"#;

/// A resources dir with three secret stores and a config with scopes.
fn secrets_setup() -> (TempDir, Vec<String>) {
    let dir = TempDir::new("secrets");
    let file = dir.write("secrets.json", SECRETS_JSON);
    let res = dir.path().join("resources");
    dir.write(
        "resources/stores.yaml",
        &format!(
            "{}---\n{}---\n{}",
            component(
                "files",
                "secretstores.local.file",
                &[("secretsFile", file.to_str().unwrap())]
            ),
            component(
                "multi",
                "secretstores.local.file",
                &[
                    ("secretsFile", file.to_str().unwrap()),
                    ("multiValued", "true")
                ]
            ),
            component(
                "env",
                "secretstores.local.env",
                &[("prefix", "TANDEM_TEST_")]
            ),
        ),
    );
    let config = dir.write(
        "config.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: cfg\nspec:\n  secrets:\n    scopes:\n    - storeName: files\n      defaultAccess: allow\n      deniedSecrets: [denied-one]\n",
    );
    let args = vec![
        "--resources-path".into(),
        res.display().to_string(),
        "--config".into(),
        config.display().to_string(),
    ];
    (dir, args)
}

#[test]
fn health_metadata_and_secrets_over_http() {
    let (_dir, args) = secrets_setup();
    let s = sidecar()
        .args(&args)
        .env("TANDEM_TEST_TOKEN", "t0k")
        .start();

    assert_eq!(s.get("/v1.0/healthz/outbound").status, 204);
    assert!(
        s.wait_healthz(204, Duration::from_secs(5)),
        "no app port: ready at once"
    );
    assert_eq!(
        s.get("/v1.0/healthz?appid=other").error_code(),
        "ERR_HEALTH_APPID_NOT_MATCH"
    );

    let m = s.get("/v1.0/metadata");
    assert_eq!(m.status, 200);
    assert_eq!(m.header("content-type"), Some("application/json"));
    let m = m.json();
    assert_eq!(m["id"], "test-app");
    let comps = m["components"].as_array().unwrap();
    let names: Vec<_> = comps.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["files", "multi", "env"]);
    assert_eq!(
        comps[1]["capabilities"][0],
        "MULTIPLE_KEY_VALUES_PER_SECRET"
    );
    assert_eq!(m["actorRuntime"]["runtimeStatus"], "RUNNING");
    assert!(m["extended"]["daprRuntimeVersion"].is_string());

    assert_eq!(
        s.request("PUT", "/v1.0/metadata/owner", b"team-a").status,
        204
    );
    assert_eq!(
        s.get("/v1.0/metadata").json()["extended"]["owner"],
        "team-a"
    );

    // nested keys flattened with ':'
    let r = s.get("/v1.0/secrets/files/db%3Apassword");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"db:password": "s3cret"}));
    // multiValued keeps the pairs together
    let r = s.get("/v1.0/secrets/multi/db");
    assert_eq!(
        r.json(),
        serde_json::json!({"password": "s3cret", "user": "admin"})
    );
    // env store with prefix
    assert_eq!(
        s.get("/v1.0/secrets/env/TOKEN").json(),
        serde_json::json!({"TOKEN": "t0k"})
    );
    assert_eq!(s.get("/v1.0/secrets/env/NOT_SET_ANYWHERE").status, 204);

    // scoping: single get denied, bulk filtered
    let r = s.get("/v1.0/secrets/files/denied-one");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "ERR_PERMISSION_DENIED")
    );
    let bulk = s.get("/v1.0/secrets/files/bulk").json();
    assert_eq!(bulk["api-key"], serde_json::json!({"api-key": "abc"}));
    assert!(bulk.get("denied-one").is_none(), "{bulk}");
    assert_eq!(
        s.get("/v1.0/secrets/multi/bulk").json()["db"]["user"],
        "admin"
    );

    // errors
    let r = s.get("/v1.0/secrets/nope/x");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "ERR_SECRET_STORE_NOT_FOUND")
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("files, multi"),
        "{}",
        r.text()
    );
    assert!(
        r.json().get("details").is_none(),
        "secret errors carry no details, as daprd's: {}",
        r.text()
    );
    let r = s.get("/v1.0/secrets/files/missing");
    assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_SECRET_GET"));
}

#[tokio::test]
async fn grpc_metadata_and_secrets() {
    let (_dir, args) = secrets_setup();
    let s = sidecar().args(&args).start();
    let mut c = DaprClient::connect(s.grpc_endpoint()).await.unwrap();

    let m = c
        .get_metadata(rt::GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.id, "test-app");
    assert_eq!(m.registered_components.len(), 3);
    assert_eq!(m.registered_components[0].r#type, "secretstores.local.file");

    c.set_metadata(rt::SetMetadataRequest {
        key: "k".into(),
        value: "v".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        s.get("/v1.0/metadata").json()["extended"]["k"],
        "v",
        "both APIs share state"
    );

    let secret = c
        .get_secret(rt::GetSecretRequest {
            store_name: "files".into(),
            key: "api-key".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(secret.data["api-key"], "abc");
    let bulk = c
        .get_bulk_secret(rt::GetBulkSecretRequest {
            store_name: "files".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bulk.data["db:user"].secrets["db:user"], "admin");
    assert!(!bulk.data.contains_key("denied-one"));

    let e = c
        .get_secret(rt::GetSecretRequest {
            store_name: "files".into(),
            key: "denied-one".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = c
        .get_secret(rt::GetSecretRequest {
            store_name: "nope".into(),
            key: "x".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        !e.details().is_empty(),
        "google.rpc.Status details carry ErrorInfo (daprd sends none for secrets; SDKs read the code from it)"
    );

    // an unknown binding: a clear error at once, not a hang
    let e = tokio::time::timeout(
        Duration::from_secs(5),
        c.invoke_binding(rt::InvokeBindingRequest {
            name: "b".into(),
            operation: "create".into(),
            ..Default::default()
        }),
    )
    .await
    .expect("answered at once")
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal);
    assert!(
        e.message().contains("output binding `b` is not defined"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn api_token_is_required_except_for_health() {
    let s = sidecar().env("DAPR_API_TOKEN", "letmein").start();
    let r = s.try_request("GET", "/v1.0/metadata", &[], b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (401, "invalid api token"));
    let r = s
        .try_request("GET", "/v1.0/metadata", &[("dapr-api-token", "wrong")], b"")
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(
        s.try_request("GET", "/v1.0/healthz", &[], b"")
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        s.try_request("GET", "/v1.0/healthz/outbound", &[], b"")
            .unwrap()
            .status,
        204
    );
    assert_eq!(s.get("/v1.0/metadata").status, 200, "the right token works");

    let mut c = DaprClient::connect(s.grpc_endpoint()).await.unwrap();
    let e = c.get_metadata(rt::GetMetadataRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(rt::GetMetadataRequest {});
    req.metadata_mut()
        .insert("dapr-api-token", "letmein".parse().unwrap());
    assert_eq!(
        c.get_metadata(req).await.unwrap().into_inner().id,
        "test-app"
    );
}

/// `--read-buffer-size` bounds a request's head (never under hyper's
/// 8 KiB), however large the buffer its body is read through.
#[test]
fn oversize_header_blocks_get_431_and_the_sidecar_keeps_serving() {
    for (args, fits, too_big) in [
        (vec![], 7000, 9000),
        (vec!["--read-buffer-size", "32Ki"], 30000, 34000),
    ] {
        let s = sidecar().args(args).start();
        for (size, status) in [(fits, 204), (too_big, 431)] {
            let value = "v".repeat(size);
            let r = common::http(
                s.http,
                "PUT",
                "/v1.0/metadata/h",
                &[("x-big", &value)],
                b"ok",
            )
            .unwrap();
            assert_eq!(r.status, status, "{size}-byte header: {}", r.text());
        }
        assert_eq!(s.get("/v1.0/healthz").status, 204);
        // A body far past the head's bound is fine.
        let body = vec![b'b'; 3 << 20];
        assert_eq!(s.request("PUT", "/v1.0/metadata/body", &body).status, 204);
    }
}

#[test]
fn oversize_bodies_get_413_and_the_sidecar_keeps_serving() {
    let s = sidecar().args(["--max-body-size", "1Ki"]).start();
    let big = vec![b'x'; 2048];
    let r = s.request("PUT", "/v1.0/metadata/big", &big);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "ERR_BODY_TOO_LARGE")
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("--max-body-size")
    );
    // no Content-Length: the limit is enforced while reading
    let r = s
        .try_request(
            "PUT",
            "/v1.0/metadata/big",
            &[("Transfer-Encoding", "chunked")],
            &big,
        )
        .unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        s.get("/v1.0/metadata").json()["extended"]
            .get("big")
            .is_none(),
        "nothing was stored"
    );
    assert_eq!(s.request("PUT", "/v1.0/metadata/small", b"ok").status, 204);
    assert_eq!(s.get("/v1.0/metadata").json()["extended"]["small"], "ok");
}

#[test]
fn unknown_routes_and_unbuilt_apis_answer_clearly() {
    let s = sidecar().start();
    let r = s.request("POST", "/v1.0/nothing-here", b"");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "ERR_DIRECT_INVOKE")
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("dapr-app-id")
    );
    let r = s.request("POST", "/v1.0/healthz", b""); // wrong method falls through, like Dapr
    assert_eq!(r.status, 404);
    // An actor type no host registered: daprd's error, naming the type.
    let r = s.request("POST", "/v1.0/actors/t/1/method/m", b"{}");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_ACTOR_INVOKE_METHOD"),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("did not find address for actor t/1"),
        "{}",
        r.text()
    );
    // Workflows without an actor state store: daprd's start error, saying
    // what is missing.
    let r = s.request("POST", "/v1.0-alpha1/workflows/dapr/w/start", b"{}");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_START_WORKFLOW")
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("actorStateStore"),
        "{}",
        r.text()
    );
    // path cleaning
    assert_eq!(s.get("//v1.0//metadata/").status, 200);
    assert_eq!(s.get("/v1.0/healthz").status, 204, "still serving");
}

#[tokio::test]
async fn http2_cleartext_is_served() {
    use http_body_util::{BodyExt, Empty};
    let s = sidecar().start();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<bytes::Bytes>>();
    let resp = client
        .get(
            format!("http://127.0.0.1:{}/v1.0/metadata", s.http)
                .parse()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["id"], "test-app");
}

#[tokio::test]
async fn metrics_use_dapr_names() {
    let s = sidecar().start();
    s.get("/v1.0/metadata");
    s.get("/v1.0/nope");
    let mut c = DaprClient::connect(s.grpc_endpoint()).await.unwrap();
    c.get_metadata(rt::GetMetadataRequest {}).await.unwrap();
    let text = s.metrics_text();
    assert!(
        text.contains(
            r#"dapr_http_server_request_count{app_id="test-app",method="GET",status="200"}"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"status="404""#), "{text}");
    assert!(
        text.contains(r#"dapr_grpc_io_server_completed_rpcs{app_id="test-app",grpc_server_method="GetMetadata",grpc_server_status="OK"} 1"#),
        "{text}"
    );
    assert!(text.contains("dapr_http_server_latency_bucket"), "{text}");
}

#[test]
fn shutdown_api_stops_the_sidecar() {
    let mut s = sidecar().start();
    assert_eq!(s.request("POST", "/v1.0/shutdown", b"").status, 204);
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "graceful shutdown exits 0: {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "sidecar did not stop:\n{}",
            s.stderr.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn json_logs_and_api_logging_from_configuration() {
    let dir = TempDir::new("logging");
    let config = dir.write(
        "config.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  logging:\n    apiLogging:\n      enabled: true\n      omitHealthChecks: true\n",
    );
    let s = sidecar()
        .args(["--log-as-json", "--config", config.to_str().unwrap()])
        .start();
    s.get("/v1.0/metadata");
    assert!(
        s.stderr.wait_for("HTTP API called", Duration::from_secs(5)),
        "{}",
        s.stderr.text()
    );
    let text = s.stderr.text();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    let call = text
        .lines()
        .find(|l| l.contains("HTTP API called"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(call).unwrap();
    assert_eq!(v["fields"]["path"], "/v1.0/metadata");
    assert_eq!(v["fields"]["status"], 200);
}

#[tokio::test]
async fn grpc_calls_outside_our_api_and_oversize_messages_fail_fast() {
    let s = sidecar().args(["--max-body-size", "1Ki"]).start();
    let channel = tonic::transport::Endpoint::from_shared(s.grpc_endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();

    // A method the Dapr service does not have (every RPC of Dapr's own
    // proto is served now).
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path =
        http::uri::PathAndQuery::from_static("/dapr.proto.runtime.v1.Dapr/NoSuchMethodAlpha9");
    let call = grpc.unary::<rt::GetMetadataRequest, rt::GetMetadataResponse, _>(
        tonic::Request::new(rt::GetMetadataRequest {}),
        path,
        tonic_prost::ProstCodec::default(),
    );
    let e = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("answered at once")
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);

    // A message over --max-body-size is refused; the server keeps serving.
    let mut c = DaprClient::new(channel);
    let e = c
        .set_metadata(rt::SetMetadataRequest {
            key: "big".into(),
            value: "x".repeat(4096),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{e:?}"
    );
    assert_eq!(
        c.get_metadata(rt::GetMetadataRequest {})
            .await
            .unwrap()
            .into_inner()
            .id,
        "test-app"
    );
    assert!(
        s.get("/v1.0/metadata").json()["extended"]
            .get("big")
            .is_none()
    );
}

#[test]
fn configuration_can_turn_metrics_off() {
    let dir = TempDir::new("nometrics");
    let config = dir.write(
        "config.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  metric:\n    enabled: false\n",
    );
    let s = sidecar()
        .args(["--config", config.to_str().unwrap()])
        .start();
    assert!(
        common::http(s.metrics, "GET", "/metrics", &[], b"").is_err(),
        "nothing serves metrics"
    );
    assert_eq!(s.get("/v1.0/metadata").status, 200);
}

#[tokio::test]
async fn configuration_api_allow_and_deny_lists() {
    let (dir, mut args) = secrets_setup();
    let config = dir.write(
        "api-config.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  api:\n    allowed:\n    - name: metadata\n      version: v1.0\n      protocol: http\n    - name: secrets\n      version: v1\n      protocol: grpc\n    - name: metadata\n      version: v1\n      protocol: grpc\n    denied:\n    - name: secrets\n      version: v1.0\n",
    );
    let i = args.iter().position(|a| a == "--config").unwrap();
    args[i + 1] = config.display().to_string();
    let s = sidecar().args(&args).start();

    assert_eq!(s.get("/v1.0/metadata").status, 200, "allowed");
    assert_eq!(
        s.get("/v1.0/healthz").status,
        204,
        "health is always allowed"
    );
    let r = s.get("/v1.0/secrets/files/api-key");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "ERR_PERMISSION_DENIED")
    );
    assert!(
        r.json()["message"].as_str().unwrap().contains("spec.api"),
        "{}",
        r.text()
    );
    assert_eq!(
        s.request("POST", "/v1.0/shutdown", b"").status,
        403,
        "not in the HTTP allow list"
    );

    let mut c = DaprClient::connect(s.grpc_endpoint()).await.unwrap();
    let secret = c
        .get_secret(rt::GetSecretRequest {
            store_name: "files".into(),
            key: "api-key".into(),
            metadata: Default::default(),
        })
        .await
        .expect("secrets v1 allowed over gRPC");
    assert_eq!(secret.into_inner().data["api-key"], "abc");
    let e = c.shutdown(rt::ShutdownRequest {}).await.unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::PermissionDenied,
        "shutdown not in the gRPC allow list"
    );
    assert_eq!(s.get("/v1.0/healthz").status, 204, "still running");
}
