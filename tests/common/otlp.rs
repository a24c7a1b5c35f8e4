//! What the tests' trace collectors got: OTLP export requests decoded from
//! protobuf (gRPC, and OTLP/HTTP as daprd and tandem send it) or from
//! OTLP's JSON encoding (`http/json`), as one flat list of spans.

use prost::Message;
use tandem_proto::otlp as o;

/// A span as a collector got it; ids in lowercase hex.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Span {
    pub service: String,
    /// OTLP's numbers: 2 SERVER, 3 CLIENT, 4 PRODUCER, 5 CONSUMER.
    pub kind: i32,
    pub trace: String,
    pub id: String,
    pub parent: String,
    pub name: String,
    /// Status OK (1); ERROR is 2.
    pub ok: bool,
    pub attributes: Vec<(String, String)>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
}

impl Span {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            2 => "SERVER",
            3 => "CLIENT",
            4 => "PRODUCER",
            5 => "CONSUMER",
            _ => "OTHER",
        }
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).expect("hex"))
        .collect()
}

fn text(v: &Option<o::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(o::any_value::Value::StringValue(s)) => s.clone(),
        Some(o::any_value::Value::IntValue(i)) => i.to_string(),
        Some(o::any_value::Value::BoolValue(b)) => b.to_string(),
        Some(o::any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// The spans of one decoded export request.
pub fn from_request(req: o::ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value))
            .expect("a resource without service.name");
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Span {
                    service: service.clone(),
                    kind: s.kind,
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    name: s.name,
                    ok: s.status.is_some_and(|st| st.code == 1),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(&kv.value)))
                        .collect(),
                    links: s
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                });
            }
        }
    }
    out
}

/// The spans of an OTLP/HTTP body, by its content type.
pub fn decode(content_type: &str, body: &[u8]) -> Vec<Span> {
    if content_type.starts_with("application/x-protobuf") {
        return from_request(o::ExportTraceServiceRequest::decode(body).expect("OTLP protobuf"));
    }
    assert!(
        content_type.starts_with("application/json"),
        "an OTLP/HTTP body of type {content_type:?}"
    );
    let v: serde_json::Value = serde_json::from_slice(body).expect("OTLP JSON");
    let value = |v: &serde_json::Value| match &v["stringValue"] {
        serde_json::Value::String(s) => s.clone(),
        _ => v.to_string(),
    };
    let mut out = Vec::new();
    for rs in v["resourceSpans"].as_array().expect("resourceSpans") {
        let service = rs["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|kv| kv["key"] == "service.name")
            .map(|kv| value(&kv["value"]))
            .expect("a resource without service.name");
        for ss in rs["scopeSpans"].as_array().expect("scopeSpans") {
            for s in ss["spans"].as_array().expect("spans") {
                let t = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                out.push(Span {
                    service: service.clone(),
                    kind: s["kind"].as_i64().unwrap_or_default() as i32,
                    trace: t("traceId").to_lowercase(),
                    id: t("spanId").to_lowercase(),
                    parent: t("parentSpanId").to_lowercase(),
                    name: t("name"),
                    ok: s["status"]["code"] == 1,
                    attributes: s["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|kv| {
                            (
                                kv["key"].as_str().unwrap_or_default().to_string(),
                                value(&kv["value"]),
                            )
                        })
                        .collect(),
                    links: s["links"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|l| {
                            let t = |k: &str| l[k].as_str().unwrap_or_default().to_lowercase();
                            (t("traceId"), t("spanId"))
                        })
                        .collect(),
                });
            }
        }
    }
    out
}

/// A Python OTLP/HTTP collector for places a Rust one cannot go (another
/// network namespace, TLS with the test's own CA): each export appended
/// to the file given as one line, `<content type> <body in hex>`.
/// argv: file, address, port, then (for TLS) certificate and key.
pub const PYTHON_COLLECTOR: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        line = (self.headers.get("content-type", "") + " " + body.hex() + "\n").encode()
        with open(sys.argv[1], "ab") as f: f.write(line)
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), H)
if len(sys.argv) > 5:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

/// Every span in a file `PYTHON_COLLECTOR` wrote (none if it is absent).
pub fn read_collected(path: &std::path::Path) -> Vec<Span> {
    // Only whole lines: the collector may be writing the last one.
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .filter_map(|l| l.split_once(' '))
        .flat_map(|(ct, body)| decode(ct, &unhex(body)))
        .collect()
}
