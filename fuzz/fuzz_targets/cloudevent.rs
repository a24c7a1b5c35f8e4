//! CloudEvents: any publish (content type, data, metadata) is wrapped or
//! refused, never a panic; what is wrapped reads back as a CloudEvent with
//! the publish's topic and pub/sub and Dapr's required fields, and a text
//! payload reaches a gRPC app byte for byte. Any bulk-publish body gives
//! entries or an error naming what is wrong.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use tandem_fuzz::cloudevent::{Published, bulk_entries, envelope, grpc_data, parse_delivered};

#[derive(Arbitrary, Debug)]
struct Input {
    content_type: u8,
    custom_type: String,
    data: Vec<u8>,
    metadata: BTreeMap<String, String>,
    traceparent: Option<String>,
    now_ms: i64,
    has_ttl: bool,
    bulk: Vec<u8>,
}

const TYPES: &[&str] = &[
    "",
    "text/plain",
    "application/json",
    "application/cloudevents+json",
    "application/octet-stream",
    "application/xml",
];

fuzz_target!(|input: Input| {
    let ct = TYPES
        .get(usize::from(input.content_type))
        .copied()
        .unwrap_or(input.custom_type.as_str());
    let now = input.now_ms.rem_euclid(4_102_444_800_000); // before 2100
    let p = Published {
        app_id: "app",
        pubsub: "ps",
        topic: "orders",
        content_type: ct,
        data: &input.data,
        metadata: &input.metadata,
        traceparent: input.traceparent.as_deref(),
    };
    if let Ok(bytes) = envelope(&p, input.has_ttl, now) {
        let ce = parse_delivered(&bytes).expect("an envelope reads back");
        assert_eq!(ce["topic"], "orders");
        assert_eq!(ce["pubsubname"], "ps");
        for k in ["id", "specversion", "source", "type", "traceparent"] {
            assert!(ce.contains_key(k), "{k} missing: {ce:?}");
        }
        let data = grpc_data(&ce);
        if ct == "text/plain"
            && let Ok(text) = std::str::from_utf8(&input.data)
        {
            assert_eq!(data, text.as_bytes());
        }
        if ct == "application/octet-stream" {
            assert_eq!(data, input.data);
        }
    }
    let _ = parse_delivered(&input.data).map(|ce| grpc_data(&ce));
    match bulk_entries(&input.bulk) {
        Ok(entries) => {
            for e in entries {
                assert!(!e.content_type.is_empty());
            }
        }
        Err(why) => assert!(why.starts_with("bulk publish")),
    }
});
