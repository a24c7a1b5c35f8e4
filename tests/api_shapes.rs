//! The HTTP API's JSON answers byte for byte as daprd writes them (its Go
//! structs' `omitempty` tags, key order, `json.Encoder`'s final newline and
//! HTML escaping), and the rich error details daprd attaches (ErrorInfo,
//! ResourceInfo, BadRequest, Help) over HTTP and gRPC. Apps print and
//! compare these answers; a golden test per answer keeps them daprd's.

mod common;

use common::{TempDir, component, run_id, sidecar};

use common::redis_cli;

fn resources() -> TempDir {
    let res = TempDir::new("shapes");
    res.write("mem.yaml", &component("mem", "state.in-memory", &[]));
    res.write(
        "cfg.yaml",
        &component(
            "cfg",
            "configuration.redis",
            &[("redisHost", "127.0.0.1:6379")],
        ),
    );
    res.write("bus.yaml", &component("bus", "pubsub.in-memory", &[]));
    res.write("env.yaml", &component("env", "secretstores.local.env", &[]));
    res.write("locks.yaml", &component("locks", "lock.in-memory", &[]));
    res.write(
        "sub.yaml",
        "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: orders\nspec:\n  pubsubname: bus\n  topic: orders\n  routes:\n    default: /orders\n",
    );
    res
}

#[test]
fn http_answers_have_daprds_shapes() {
    let res = resources();
    // An app for configuration subscriptions to be pushed to.
    let app_port = common::free_port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _app = Kill(
        std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &app_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let s = sidecar()
        .app_id("shapes")
        .args(["--resources-path", res.path().to_str().unwrap()])
        .args(["--app-port", &app_port.to_string()])
        .env("SHAPES_SECRET", "a<b&c")
        .start();
    let run = run_id();

    // Configuration: empty fields left out, the items map itself, a newline.
    let (k1, k2) = (format!("{run}-orderId2"), format!("{run}-orderId3"));
    redis_cli(&["SET", &k1, "102"]);
    redis_cli(&["SET", &k2, "103||v7"]);
    let r = s.get(&format!("/v1.0/configuration/cfg?key={k1}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), format!("{{\"{k1}\":{{\"value\":\"102\"}}}}\n"));
    let r = s.get(&format!("/v1.0/configuration/cfg?key={k2}"));
    assert_eq!(
        r.text(),
        format!("{{\"{k2}\":{{\"value\":\"103\",\"version\":\"v7\"}}}}\n")
    );
    let r = s.get(&format!("/v1.0/configuration/cfg/subscribe?key={k1}"));
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.text(), format!("{{\"id\":\"{id}\"}}\n"));
    let r = s.get(&format!("/v1.0/configuration/cfg/{id}/unsubscribe"));
    assert_eq!(r.text(), "{\"ok\":true}\n");
    let r = s.get("/v1.0/configuration/cfg/no-such-id/unsubscribe");
    assert_ne!(r.status, 200);
    let body = r.json();
    assert!(
        body.get("ok").is_none() && body["message"].is_string(),
        "a failed unsubscribe is {{\"message\"}} only: {}",
        r.text()
    );

    // Bulk state: key always; data, etag, metadata only when there is one.
    let r = s.request(
        "POST",
        "/v1.0/state/mem",
        br#"[{"key":"a","value":{"x":1}}]"#,
    );
    assert_eq!(r.status, 204);
    let etag = s
        .get("/v1.0/state/mem/a")
        .header("etag")
        .unwrap()
        .to_string();
    let r = s.request(
        "POST",
        "/v1.0/state/mem/bulk",
        br#"{"keys":["a","missing"]}"#,
    );
    assert_eq!(
        r.text(),
        format!(
            "[{{\"key\":\"a\",\"data\":{{\"x\":1}},\"etag\":\"{etag}\"}},{{\"key\":\"missing\"}}]\n"
        )
    );

    // Secrets: Go's encoder escapes <, > and & inside strings.
    let r = s.get("/v1.0/secrets/env/SHAPES_SECRET");
    assert_eq!(r.text(), "{\"SHAPES_SECRET\":\"a\\u003cb\\u0026c\"}\n");

    // Lock: protojson, compact, no newline.
    let r = s.request(
        "POST",
        "/v1.0-alpha1/lock/locks",
        br#"{"resourceId":"r","lockOwner":"o","expiryInSeconds":10}"#,
    );
    assert_eq!(r.text(), "{\"success\":true}");
    let r = s.request(
        "POST",
        "/v1.0-alpha1/unlock/locks",
        br#"{"resourceId":"r","lockOwner":"o"}"#,
    );
    assert_eq!(r.text(), "{\"status\":0}");

    // Metadata: daprd's key order, what it omits and what it always writes.
    let r = s.get("/v1.0/metadata");
    let text = r.text();
    assert!(text.ends_with("}\n"), "{text}");
    let m = r.json();
    let keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "runtimeVersion",
            "components",
            "extended",
            "subscriptions",
            "appConnectionProperties",
            "actorRuntime",
            "scheduler",
            "workflows"
        ],
        "{text}"
    );
    let version = m["runtimeVersion"].as_str().unwrap();
    assert_eq!(
        serde_json::to_string(&m["extended"]).unwrap(),
        format!("{{\"daprRuntimeVersion\":\"{version}\"}}")
    );
    assert_eq!(
        serde_json::to_string(&m["subscriptions"]).unwrap(),
        r#"[{"pubsubname":"bus","topic":"orders","rules":[{"path":"/orders"}],"deadLetterTopic":"","type":"DECLARATIVE"}]"#
    );
    assert_eq!(
        serde_json::to_string(&m["appConnectionProperties"]).unwrap(),
        format!(r#"{{"port":{app_port},"protocol":"http","channelAddress":"127.0.0.1"}}"#)
    );
    // The app (nobody listens on its port) has not answered
    // GET /dapr/config yet: the actor runtime waits for it, as daprd's.
    assert_eq!(
        serde_json::to_string(&m["actorRuntime"]).unwrap(),
        r#"{"runtimeStatus":"INITIALIZING","hostReady":false,"placement":"placement: disconnected"}"#
    );
    assert_eq!(serde_json::to_string(&m["workflows"]).unwrap(), "{}");
    let mem = m["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "mem")
        .unwrap();
    let ckeys: Vec<&str> = mem
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(ckeys, ["name", "type", "version", "capabilities"]);
}

#[test]
fn errors_carry_daprds_details() {
    let res = resources();
    let s = sidecar()
        .app_id("errs")
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();

    // An illegal key: BadRequest, then ResourceInfo, then ErrorInfo, each
    // with all its keys in alphabetical order (daprd writes maps).
    let r = s.request(
        "POST",
        "/v1.0/state/mem",
        br#"[{"key":"ke||y1","value":1}]"#,
    );
    assert_eq!(r.status, 400);
    let msg = "input key/keyPrefix 'ke||y1' can't contain '||'";
    assert_eq!(
        r.text(),
        format!(
            concat!(
                r#"{{"errorCode":"ERR_MALFORMED_REQUEST","message":"{m}","details":["#,
                r#"{{"@type":"type.googleapis.com/google.rpc.BadRequest","field_violations":[{{"field":"ke||y1","description":"{m}"}}]}},"#,
                r#"{{"@type":"type.googleapis.com/google.rpc.ResourceInfo","description":"","owner":"","resource_name":"mem","resource_type":"state"}},"#,
                r#"{{"@type":"type.googleapis.com/google.rpc.ErrorInfo","domain":"dapr.io","metadata":null,"reason":"DAPR_STATE_ILLEGAL_KEY"}}]}}"#
            ),
            m = msg
        )
    );

    // A missing store: ErrorInfo with the app id, no ResourceInfo.
    let r = s.get("/v1.0/state/nowhere/k");
    let d = &r.json()["details"];
    assert_eq!(d.as_array().unwrap().len(), 1, "{}", r.text());
    assert_eq!(d[0]["reason"], "DAPR_STATE_NOT_FOUND");
    assert_eq!(d[0]["metadata"], serde_json::json!({"appID": "errs"}));

    // Transactions the store cannot do: a Help link and the resource.
    // (pub/sub: the resource's description is the message.)
    let r = s.request("POST", "/v1.0/publish/bus", b"{}");
    assert!(r.status == 404 || r.status == 400, "{}", r.text());
    let r = s.request("POST", "/v1.0/publish/nobus/orders", b"{}");
    assert_eq!(r.status, 404);
    let d = &r.json()["details"];
    assert_eq!(d[0]["reason"], "DAPR_PUBSUB_NOT_FOUND", "{}", r.text());

    // Legacy errors (secrets, locks, invocation): no details at all.
    let r = s.get("/v1.0/secrets/nostore/k");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json().as_object().unwrap().keys().collect::<Vec<_>>(),
        ["errorCode", "message"]
    );
    let r = s.request(
        "POST",
        "/v1.0-alpha1/lock/nolocks",
        br#"{"resourceId":"r","lockOwner":"o","expiryInSeconds":10}"#,
    );
    assert!(r.json().get("details").is_none(), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_carry_daprds_details() {
    use tandem_proto::runtime::v1 as rt;
    use tonic_types::StatusExt;
    let res = resources();
    let s = sidecar()
        .app_id("gerrs")
        .args(["--resources-path", res.path().to_str().unwrap()])
        .start();
    let mut c = rt::dapr_client::DaprClient::connect(s.grpc_endpoint())
        .await
        .unwrap();
    let e = c
        .save_state(rt::SaveStateRequest {
            store_name: "mem".into(),
            states: vec![tandem_proto::common::v1::StateItem {
                key: "ke||y1".into(),
                value: b"1".to_vec(),
                ..Default::default()
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let d = e.get_error_details();
    assert_eq!(d.error_info().unwrap().reason, "DAPR_STATE_ILLEGAL_KEY");
    assert_eq!(d.error_info().unwrap().domain, "dapr.io");
    let ri = d.resource_info().unwrap();
    assert_eq!(
        (ri.resource_type.as_str(), ri.resource_name.as_str()),
        ("state", "mem")
    );
    assert_eq!(d.bad_request().unwrap().field_violations[0].field, "ke||y1");

    // Other errors are daprd's "basic" ones: one ErrorInfo whose reason is
    // the error code (for legacy codes such as secrets', daprd sends none;
    // tandem keeps this one so SDKs can tell failures apart).
    let e = c
        .get_secret(rt::GetSecretRequest {
            store_name: "nostore".into(),
            key: "k".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap_err();
    let d = e.get_error_details();
    assert_eq!(d.error_info().unwrap().reason, "ERR_SECRET_STORE_NOT_FOUND");
    assert!(d.resource_info().is_none());
    let e = c
        .publish_event(rt::PublishEventRequest {
            pubsub_name: "nobus".into(),
            topic: "t".into(),
            data: b"{}".to_vec(),
            data_content_type: "application/json".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.get_error_details().error_info().unwrap().reason,
        "DAPR_PUBSUB_NOT_FOUND"
    );
}
