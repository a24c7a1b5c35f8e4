//! The state API on the wire (dapr-wire.md §1.5, §6.1) through a real
//! sidecar: HTTP and gRPC, status codes, ETags, transactions, bulk, TTL,
//! key prefixes shared through one SQLite file.

mod common;

use common::{TempDir, component, sidecar};
use std::time::Duration;
use tandem_proto::common::v1 as cv1;
use tandem_proto::runtime::v1 as rt;
use tandem_proto::runtime::v1::dapr_client::DaprClient;

/// A resources dir with `mem` (in-memory), `lite` (SQLite at `db`) and
/// `shared` (same file, keyPrefix name).
fn stores(dir: &TempDir) -> String {
    let db = dir.path().join("state.db");
    dir.write(
        "res/stores.yaml",
        &format!(
            "{}---\n{}---\n{}",
            component("mem", "state.in-memory", &[]),
            component(
                "lite",
                "state.sqlite",
                &[("connectionString", db.to_str().unwrap())]
            ),
            component(
                "shared",
                "state.sqlite",
                &[
                    ("connectionString", db.to_str().unwrap()),
                    ("keyPrefix", "name"),
                    ("tableName", "shared")
                ]
            ),
        ),
    );
    dir.path().join("res").display().to_string()
}

#[test]
fn http_crud_etags_and_errors_on_every_store() {
    let dir = TempDir::new("state-http");
    let s = sidecar().args(["--resources-path", &stores(&dir)]).start();
    let m = s.get("/v1.0/metadata").json();
    let lite = m["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lite")
        .unwrap()
        .clone();
    assert_eq!(lite["type"], "state.sqlite");
    for cap in ["ETAG", "TRANSACTIONAL", "TTL", "ACTOR"] {
        assert!(
            lite["capabilities"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == cap),
            "{lite}"
        );
    }

    for store in ["mem", "lite"] {
        let base = format!("/v1.0/state/{store}");
        let body = br#"[{"key":"order","value":{"id":1,"big":12345678901234567890}},{"key":"s","value":"foo"},{"key":"n","value":42}]"#;
        assert_eq!(s.request("POST", &base, body).status, 204, "{store}");
        let r = s.get(&format!("{base}/order"));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.text(),
            r#"{"id":1,"big":12345678901234567890}"#,
            "stored exactly as sent"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        let etag = r.header("etag").expect("ETag header").to_string();
        assert_eq!(
            s.get(&format!("{base}/s")).text(),
            "\"foo\"",
            "a JSON string keeps its quotes"
        );
        assert_eq!(s.get(&format!("{base}/n")).text(), "42");
        assert_eq!(s.get(&format!("{base}/missing")).status, 204);

        // ETags: stale write 409, right one 204
        let stale = format!(r#"[{{"key":"order","value":2,"etag":"{}"}}]"#, "nope");
        let r = s.request("POST", &base, stale.as_bytes());
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (409, "ERR_STATE_SAVE"),
            "{store}: {}",
            r.text()
        );
        let good = format!(r#"[{{"key":"order","value":2,"etag":"{etag}"}}]"#);
        assert_eq!(s.request("PUT", &base, good.as_bytes()).status, 204);
        let first = br#"[{"key":"order","value":3,"options":{"concurrency":"first-write"}}]"#;
        assert_eq!(
            s.request("POST", &base, first).status,
            409,
            "first-write on an existing key"
        );
        let odd = br#"[{"key":"order","value":3,"options":{"concurrency":"sometimes"}}]"#;
        let r = s.request("POST", &base, odd);
        assert_eq!((r.status, r.error_code().as_str()), (500, "ERR_STATE_SAVE"));
        assert!(r.text().contains("sometimes"), "{}", r.text());

        // delete with If-Match
        let r = s
            .try_request(
                "DELETE",
                &format!("{base}/order"),
                &[("If-Match", "wrong")],
                b"",
            )
            .unwrap();
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (409, "ERR_STATE_DELETE")
        );
        let etag = s
            .get(&format!("{base}/order"))
            .header("etag")
            .unwrap()
            .to_string();
        let r = s
            .try_request(
                "DELETE",
                &format!("{base}/order"),
                &[("If-Match", &etag)],
                b"",
            )
            .unwrap();
        assert_eq!(r.status, 204);
        assert_eq!(s.get(&format!("{base}/order")).status, 204);
        assert_eq!(
            s.request("DELETE", &format!("{base}/never-was"), b"")
                .status,
            204
        );

        // bad input
        for (body, why) in [
            (&b"not json"[..], "bad JSON"),
            (br#"{"key":"a"}"#, "not an array"),
            (br#"[{"value":1}]"#, "no key"),
            (br#"[{"key":"a||b","value":1}]"#, "|| in a key"),
        ] {
            let r = s.request("POST", &base, body);
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (400, "ERR_MALFORMED_REQUEST"),
                "{why}: {}",
                r.text()
            );
        }
        assert_eq!(s.get(&format!("{base}/a%7C%7Cb")).status, 400);
        assert_eq!(
            s.request("POST", &base, b"[]").status,
            204,
            "an empty array is fine"
        );
    }

    let r = s.get("/v1.0/state/nowhere/k");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_STATE_STORE_NOT_FOUND")
    );
    assert_eq!(r.json()["details"][0]["reason"], "DAPR_STATE_NOT_FOUND");
    assert!(
        r.text().contains("lite"),
        "names the stores that exist: {}",
        r.text()
    );
    let r = s.request("POST", "/v1.0-alpha1/state/mem/query", b"{}");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_STATE_STORE_NOT_SUPPORTED")
    );
}

#[test]
fn no_state_store_is_a_clear_500() {
    let s = sidecar().start();
    let r = s.get("/v1.0/state/statestore/k");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_STATE_STORE_NOT_CONFIGURED")
    );
}

#[test]
fn bulk_get_transactions_and_ttl_over_http() {
    let dir = TempDir::new("state-bulk");
    let s = sidecar().args(["--resources-path", &stores(&dir)]).start();
    let base = "/v1.0/state/lite";
    s.request(
        "POST",
        base,
        br#"[{"key":"a","value":{"x":1}},{"key":"b","value":"two"}]"#,
    );
    let r = s.request(
        "POST",
        &format!("{base}/bulk"),
        br#"{"keys":["b","missing","a"],"parallelism":2}"#,
    );
    assert_eq!(r.status, 200);
    let items = r.json();
    assert_eq!(items[0]["key"], "b");
    assert_eq!(items[0]["data"], "two");
    assert!(items[0]["etag"].is_string());
    assert_eq!(
        items[1],
        serde_json::json!({"key": "missing"}),
        "missing keys come back bare"
    );
    assert_eq!(
        items[2]["data"],
        serde_json::json!({"x": 1}),
        "raw JSON embedded"
    );
    let r = s.request("POST", &format!("{base}/bulk"), br#"{"keys":[]}"#);
    assert_eq!(r.json(), serde_json::json!([]));

    let tx = br#"{"operations":[
        {"operation":"upsert","request":{"key":"c","value":"three"}},
        {"operation":"delete","request":{"key":"a"}}
    ],"metadata":{"ttlInSeconds":"100"}}"#;
    assert_eq!(
        s.request("POST", &format!("{base}/transaction"), tx).status,
        204
    );
    assert_eq!(s.get(&format!("{base}/a")).status, 204);
    let r = s.get(&format!("{base}/c"));
    assert_eq!(r.text(), "\"three\"");
    assert!(
        r.header("metadata.ttlExpireTime").is_some(),
        "request metadata reached the op"
    );

    let etag_c = r.header("etag").unwrap().to_string();
    let failing = format!(
        r#"{{"operations":[{{"operation":"upsert","request":{{"key":"b","value":"changed"}}}},{{"operation":"upsert","request":{{"key":"c","value":"x","etag":"{etag_c}-stale"}}}}]}}"#
    );
    let r = s.request("POST", &format!("{base}/transaction"), failing.as_bytes());
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_STATE_TRANSACTION"),
        "{}",
        r.text()
    );
    assert_eq!(
        s.get(&format!("{base}/b")).text(),
        "\"two\"",
        "nothing applied"
    );
    let r = s.request(
        "POST",
        &format!("{base}/transaction"),
        br#"{"operations":[{"operation":"merge","request":{"key":"b"}}]}"#,
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_NOT_SUPPORTED_STATE_OPERATION")
    );

    // TTL from the query string; expiry
    assert_eq!(
        s.request(
            "POST",
            &format!("{base}?metadata.ttlInSeconds=1"),
            br#"[{"key":"brief","value":1}]"#
        )
        .status,
        204
    );
    let r = s.get(&format!("{base}/brief"));
    let expires = r
        .header("metadata.ttlExpireTime")
        .expect("ttlExpireTime header");
    assert!(expires.ends_with('Z'), "{expires}");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(s.get(&format!("{base}/brief")).status, 204, "expired");
    let r = s.request(
        "POST",
        base,
        br#"[{"key":"k","value":1,"metadata":{"ttlInSeconds":"later"}}]"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[tokio::test]
async fn grpc_state_api() {
    let dir = TempDir::new("state-grpc");
    let s = sidecar().args(["--resources-path", &stores(&dir)]).start();
    let mut c = DaprClient::connect(s.grpc_endpoint()).await.unwrap();
    let item = |key: &str, value: &[u8]| cv1::StateItem {
        key: key.into(),
        value: value.to_vec(),
        ..Default::default()
    };

    c.save_state(rt::SaveStateRequest {
        store_name: "lite".into(),
        states: vec![item("g", b"\x00\x01binary"), item("h", b"{\"j\":1}")],
    })
    .await
    .unwrap();
    let got = c
        .get_state(rt::GetStateRequest {
            store_name: "lite".into(),
            key: "g".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data, b"\x00\x01binary", "gRPC values are stored raw");
    assert!(!got.etag.is_empty());
    let missing = c
        .get_state(rt::GetStateRequest {
            store_name: "lite".into(),
            key: "none".into(),
            ..Default::default()
        })
        .await
        .expect("a miss is OK, not NOT_FOUND")
        .into_inner();
    assert!(missing.data.is_empty() && missing.etag.is_empty());
    assert_eq!(
        s.get("/v1.0/state/lite/h").text(),
        "{\"j\":1}",
        "HTTP reads what gRPC wrote"
    );

    let stale = cv1::StateItem {
        etag: Some(cv1::Etag {
            value: "stale".into(),
        }),
        ..item("g", b"x")
    };
    let e = c
        .save_state(rt::SaveStateRequest {
            store_name: "lite".into(),
            states: vec![stale],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Aborted);

    let bulk = c
        .get_bulk_state(rt::GetBulkStateRequest {
            store_name: "lite".into(),
            keys: vec!["h".into(), "none".into(), "g".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = bulk.items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["h", "none", "g"]);
    assert!(bulk.items[1].data.is_empty() && bulk.items[1].error.is_empty());

    let op = |t: &str, i: cv1::StateItem| rt::TransactionalStateOperation {
        operation_type: t.into(),
        request: Some(i),
    };
    let bad = cv1::StateItem {
        etag: Some(cv1::Etag {
            value: "stale".into(),
        }),
        ..item("h", b"2")
    };
    let e = c
        .execute_state_transaction(rt::ExecuteStateTransactionRequest {
            store_name: "lite".into(),
            operations: vec![op("delete", item("g", b"")), op("upsert", bad)],
            metadata: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::Internal,
        "a mismatch in a transaction is Internal"
    );
    assert_eq!(
        s.get("/v1.0/state/lite/g").status,
        200,
        "the delete was rolled back"
    );

    c.delete_state(rt::DeleteStateRequest {
        store_name: "lite".into(),
        key: "g".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.delete_bulk_state(rt::DeleteBulkStateRequest {
        store_name: "lite".into(),
        states: vec![item("h", b"")],
    })
    .await
    .unwrap();
    assert_eq!(s.get("/v1.0/state/lite/g").status, 204);
    assert_eq!(s.get("/v1.0/state/lite/h").status, 204);

    let e = c
        .get_state(rt::GetStateRequest {
            store_name: "nowhere".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

#[test]
fn key_prefixes_decide_what_apps_share() {
    let dir = TempDir::new("state-prefix");
    let res = stores(&dir);
    let a = sidecar().args(["--resources-path", &res]).start();
    let b = sidecar()
        .app_id("other-app")
        .args(["--resources-path", &res])
        .start();
    a.request(
        "POST",
        "/v1.0/state/lite",
        br#"[{"key":"k","value":"from a"}]"#,
    );
    a.request(
        "POST",
        "/v1.0/state/shared",
        br#"[{"key":"k","value":"shared by name"}]"#,
    );
    assert_eq!(
        b.get("/v1.0/state/lite/k").status,
        204,
        "appid prefix: other apps do not see it"
    );
    assert_eq!(
        b.get("/v1.0/state/shared/k").text(),
        "\"shared by name\"",
        "name prefix: shared"
    );
    assert_eq!(a.get("/v1.0/state/lite/k").text(), "\"from a\"");

    // What is on disk: `<app-id>||k` and `shared||k`.
    let db = dir.path().join("state.db");
    let out = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(list(c.execute('select key, value from state')), list(c.execute('select key from shared')))", db.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("'test-app||k'") && text.contains("'shared||k'"),
        "{text}"
    );
}

#[tokio::test]
async fn query_api_over_http_and_grpc() {
    let dir = TempDir::new("state-query");
    let s = sidecar().args(["--resources-path", &stores(&dir)]).start();
    let caps = s.get("/v1.0/metadata").json()["components"].clone();
    let lite = caps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "lite")
        .unwrap();
    assert!(
        lite["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "QUERY_API")
    );
    s.request(
        "POST",
        "/v1.0/state/lite",
        br#"[{"key":"o1","value":{"city":"Oslo","n":2}},{"key":"o2","value":{"city":"Bergen","n":1}},{"key":"o3","value":{"city":"Oslo","n":3}}]"#,
    );
    let q = br#"{"filter":{"EQ":{"city":"Oslo"}},"sort":[{"key":"n","order":"DESC"}],"page":{"limit":1}}"#;
    let r = s.request("POST", "/v1.0-alpha1/state/lite/query", q);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(
        body["results"][0]["key"], "o3",
        "keys come back without the app prefix"
    );
    assert_eq!(
        body["results"][0]["data"],
        serde_json::json!({"city": "Oslo", "n": 3})
    );
    let token = body["token"].as_str().expect("a next page").to_string();

    let mut c = DaprClient::connect(s.grpc_endpoint()).await.unwrap();
    let next = format!(
        r#"{{"filter":{{"EQ":{{"city":"Oslo"}}}},"sort":[{{"key":"n","order":"DESC"}}],"page":{{"limit":1,"token":"{token}"}}}}"#
    );
    let page = c
        .query_state_alpha1(rt::QueryStateRequest {
            store_name: "lite".into(),
            query: next,
            metadata: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.results[0].key, "o1");
    assert_eq!(page.results[0].data, br#"{"city":"Oslo","n":2}"#);

    let r = s.request(
        "POST",
        "/v1.0-alpha1/state/lite/query",
        br#"{"filter":{"EQ":{"city":"Rome"}}}"#,
    );
    assert_eq!(r.status, 204, "no results");
    let r = s.request(
        "POST",
        "/v1.0-alpha1/state/lite/query",
        br#"{"filter":{"LIKE":{"city":"O%"}}}"#,
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_MALFORMED_REQUEST")
    );
    assert!(r.text().contains("EQ, IN, AND or OR"), "{}", r.text());
}
