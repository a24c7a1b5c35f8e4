//! Actors: what a call costs beside a plain invocation of the same app in
//! the same run, and what the runtime holds per actor.
//! - a warm actor call through two sidecars (caller → host → app) against
//!   a plain service invocation of the same app through the same two;
//! - a cold activation (a new id each call: its activation record taken
//!   in the host's SQLite file) on the host's sidecar;
//! - a reminder registration (a job in the same file) on the host;
//! - throughput: 64 callers over `ACTORS_IDS` ids (10,000 with `--bench`)
//!   on the host for a few seconds;
//! - the host sidecar's RSS before and after that many actors are active.
//!
//! `cargo bench --bench actors`; `ACTORS_ITERS` sets the latency samples.

mod common;

use bytes::Bytes;
use common::{measure, row};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The actor host: type `B`, every method answers `ok`; `/plain` is the
/// same app's plain invocation route.
async fn app() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        req.into_body().collect().await.unwrap();
                        let body = if path == "/dapr/config" {
                            Bytes::from_static(br#"{"entities":["B"],"actorIdleTimeout":"1h"}"#)
                        } else {
                            Bytes::from_static(b"ok")
                        };
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    port
}

fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

async fn send(http: &Client, method: &str, url: String, body: &'static [u8]) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let resp = http.request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status.is_success(),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::main]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("ACTORS_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 2000 } else { 20 });
    let ids: usize = std::env::var("ACTORS_IDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 10_000 } else { 100 });
    let dir = std::env::temp_dir().join(format!("tandem-actors-bench-{}", std::process::id()));
    let res = dir.join("res");
    std::fs::create_dir_all(&res).unwrap();
    std::fs::write(
        res.join("state.yaml"),
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.sqlite\n  version: v1\n  metadata:\n  - name: connectionString\n    value: {}\n  - name: actorStateStore\n    value: \"true\"\n",
            dir.join("state.db").display()
        ),
    )
    .unwrap();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let env = [("TANDEM_HOME", home.to_str().unwrap())];
    let port = app().await;
    let host = common::start_with("actor-host", &res, Some(port), &env, &[]);
    let caller = common::start_with("actor-caller", &res, None, &env, &[]);
    let http: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    // The host registered its type once a call gets through.
    let t = Instant::now();
    loop {
        let req = hyper::Request::put(format!(
            "http://127.0.0.1:{}/v1.0/actors/B/warm/method/m",
            caller.http
        ))
        .body(Full::new(Bytes::new()))
        .unwrap();
        if let Ok(r) = http.request(req).await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the actor host never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let plain = measure(iters, || {
        send(
            &http,
            "POST",
            format!(
                "http://127.0.0.1:{}/v1.0/invoke/actor-host/method/plain",
                caller.http
            ),
            b"{}",
        )
    })
    .await;
    let warm = measure(iters, || {
        send(
            &http,
            "PUT",
            format!(
                "http://127.0.0.1:{}/v1.0/actors/B/warm/method/m",
                caller.http
            ),
            b"{}",
        )
    })
    .await;
    let n = AtomicUsize::new(0);
    let cold = measure(iters, || {
        let i = n.fetch_add(1, Ordering::Relaxed);
        send(
            &http,
            "PUT",
            format!(
                "http://127.0.0.1:{}/v1.0/actors/B/cold-{i}/method/m",
                host.http
            ),
            b"{}",
        )
    })
    .await;
    let reminder = measure(iters, || {
        let i = n.fetch_add(1, Ordering::Relaxed);
        send(
            &http,
            "PUT",
            format!(
                "http://127.0.0.1:{}/v1.0/actors/B/r/reminders/r-{i}",
                host.http
            ),
            br#"{"dueTime":"1h","period":"1h"}"#,
        )
    })
    .await;
    println!("actor latency, {iters} sequential calls each (same run)");
    row("plain invocation, two sidecars", &plain, None);
    row("warm actor call, two sidecars", &warm, Some(&plain));
    row("cold activation (host sidecar)", &cold, None);
    row("reminder registration", &reminder, None);
    println!(
        "(Dapr 1.17 as the issue gives it: activation p50 2.30 ms / p99 6.89 ms at 500 qps, reminder registration p50 36 ms)"
    );

    // Throughput: `ids` actors on the host.
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let secs = if benching { 5.0 } else { 1.0 };
    let t = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let (http, done, stop, hp) = (http.clone(), done.clone(), stop.clone(), host.http);
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    i = (i * 7919 + 17) % ids;
                    send(
                        &http,
                        "PUT",
                        format!("http://127.0.0.1:{hp}/v1.0/actors/B/t-{i}/method/m"),
                        b"{}",
                    )
                    .await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t.elapsed().as_secs_f64();
    println!(
        "\n{:.0} actor calls/s over {ids} ids (64 callers, host sidecar, {elapsed:.1} s; includes first activations)",
        done.load(Ordering::Relaxed) as f64 / elapsed
    );
    // Memory: `ids` new actors activated (16 callers) on the warmed host;
    // the metadata API counts them.
    let active = |http: Client, port: u16| async move {
        let req = hyper::Request::get(format!("http://127.0.0.1:{port}/v1.0/metadata"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let meta = http
            .request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        let meta: serde_json::Value = serde_json::from_slice(&meta.to_bytes()).unwrap();
        meta["actorRuntime"]["activeActors"][0]["count"]
            .as_u64()
            .unwrap_or(0)
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, count_before) = (rss_kib(host.pid()), active(http.clone(), host.http).await);
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (http, next, hp) = (http.clone(), next.clone(), host.http);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= ids {
                        break;
                    }
                    send(
                        &http,
                        "PUT",
                        format!("http://127.0.0.1:{hp}/v1.0/actors/B/mem-{i}/method/m"),
                        b"{}",
                    )
                    .await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, count_after) = (rss_kib(host.pid()), active(http.clone(), host.http).await);
    let added = count_after.saturating_sub(count_before).max(1);
    println!(
        "host sidecar RSS {:.1} → {:.1} MiB as {added} more actors were activated ({count_after} active): {:+.0} bytes per active actor",
        before / 1024.0,
        after / 1024.0,
        (after - before) * 1024.0 / added as f64
    );
    drop((host, caller));
    let _ = std::fs::remove_dir_all(&dir);
}
