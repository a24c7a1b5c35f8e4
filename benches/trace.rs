//! The cost of a span on the request path, as the doors pay it: start
//! under an incoming context, two attributes, end — with no collector
//! (context only, the baseline), with a collector and every span sampled
//! (the OpenTelemetry SDK's span and batch processor, exporting OTLP/HTTP
//! to a local collector that answers 200), and with a collector and a
//! sampling rate of 0. Nanoseconds and heap allocations per span, measured
//! in the same run.
//!
//! `cargo bench --bench trace`. `TRACE_SPANS` sets the spans per
//! measurement (default 200 000).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tandem_proxy::trace::{Context, Export, Kind, Sink, Tracer};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A collector that takes every export and answers 200.
async fn collector() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        use http_body_util::BodyExt;
                        let _ = req.into_body().collect().await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::new()),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    port
}

fn run(t: &Tracer, spans: usize, parent: Option<Context>) -> (f64, f64) {
    let allocs = ALLOCS.load(Ordering::Relaxed);
    let start = Instant::now();
    for i in 0..spans {
        let mut span = t.start(
            || format!("/v1.0/invoke/{}/method/neworder", "orders"),
            Kind::Client,
            parent,
        );
        span.attribute("rpc.service", "ServiceInvocation");
        span.attribute("http.method", if i % 2 == 0 { "GET" } else { "POST" });
        std::hint::black_box(&span.context);
        t.end(span, true);
    }
    let ns = start.elapsed().as_nanos() as f64 / spans as f64;
    let per = (ALLOCS.load(Ordering::Relaxed) - allocs) as f64 / spans as f64;
    (ns, per)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let spans: usize = std::env::var("TRACE_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 200_000 } else { 2_000 });
    let port = collector().await;
    let sink = Sink::otlp(&format!("127.0.0.1:{port}"), false, "http").unwrap();
    let off = Tracer::off("bench");
    let all = Tracer::new("bench", "1", sink.clone(), Export::default()).unwrap();
    let none = Tracer::new("bench", "0", sink, Export::default()).unwrap();
    let sampled = Context::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let unsampled = Context::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
    println!("{spans} spans each; start (name formatted) + 2 attributes + end");
    println!(
        "{:<52} {:>10} {:>14}",
        "tracer / incoming context", "ns/span", "allocs/span"
    );
    for (name, t, parent) in [
        (
            "no collector (context only, baseline) / sampled",
            &off,
            sampled,
        ),
        ("collector, rate 1 / sampled: exported", &all, sampled),
        ("collector, rate 1 / not sampled", &all, unsampled),
        ("collector, rate 0 / none: a root, not sampled", &none, None),
    ] {
        let _ = run(t, spans / 10, parent); // warm up
        let (ns, allocs) = run(t, spans, parent);
        println!("{name:<52} {ns:>10.0} {allocs:>14.2}");
    }
}
