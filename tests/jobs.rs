//! The Jobs API through a real sidecar: jobs scheduled over HTTP, fired at
//! a plain HTTP app as daprd fires them (`POST /job/<name>`, the data as
//! the body), retried by their failure policy, kept across a SIGKILL, and
//! bad input answered with 400s — on the embedded engine, and on a real
//! 3-member etcd cluster shared by sidecars with separate homes (hosts).

mod common;

use common::{TempDir, sidecar};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Hits = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// An HTTP app: records each request; `/job/fails` answers 500,
/// `/job/nohandler` 404, `/job/slow-first` hangs the first time and
/// `/job/slow` takes 1.5 s every time.
async fn app(hits: Hits) -> u16 {
    common::serve_http(move |req: hyper::Request<hyper::body::Incoming>| {
        let hits = hits.clone();
        async move {
            use http_body_util::BodyExt;
            let path = req.uri().path().to_string();
            let ct = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
            let status = match path.as_str() {
                "/job/fails" => 500,
                "/job/nohandler" => 404,
                _ => 200,
            };
            let first_slow = path == "/job/slow-first"
                && !hits.lock().unwrap().iter().any(|(p, _, _)| *p == path);
            let slow = path == "/job/slow";
            if path.starts_with("/job/") {
                hits.lock().unwrap().push((path, ct, body));
            }
            if first_slow {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            if slow {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            hyper::Response::builder()
                .status(status)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap()
        }
    })
    .await
}

fn post(s: &common::Sidecar, path: &str, body: &str) -> common::Resp {
    common::http(
        s.http,
        "POST",
        path,
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .unwrap()
}

fn fired(hits: &Hits, name: &str) -> Vec<(String, Vec<u8>)> {
    hits.lock()
        .unwrap()
        .iter()
        .filter(|(p, _, _)| p == &format!("/job/{name}"))
        .map(|(_, ct, b)| (ct.clone(), b.clone()))
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_jobs_fire_at_the_app_as_daprd_fires_them() {
    let hits: Hits = Arc::default();
    let port = app(hits.clone()).await;
    let home = TempDir::new("jobs-http");
    let home_path = home.path().display().to_string();
    tokio::task::spawn_blocking(move || {
        let s = sidecar()
            .app_id("jobs-app")
            .args(["--app-port", &port.to_string()])
            .env("TANDEM_HOME", &home_path)
            .start();
        let r = post(
            &s,
            "/v1.0-alpha1/jobs/once",
            r#"{"dueTime":"1s","data":{"k":"v"}}"#,
        );
        assert_eq!(r.status, 204, "{}", r.text());
        let got = s.get("/v1.0-alpha1/jobs/once");
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(
            got.json(),
            serde_json::json!({
                "name": "once",
                "dueTime": "1s",
                "data": {"@type": "type.googleapis.com/google.protobuf.Value", "value": {"k": "v"}},
                "failurePolicy": {"constant": {"interval": "1s", "maxRetries": 3}},
            })
        );
        // Again: refused without overwrite, replaced with it.
        let r = post(
            &s,
            "/v1.0-alpha1/jobs/once",
            r#"{"dueTime":"1s","data":{"k":"v"}}"#,
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (409, "DAPR_SCHEDULER_SCHEDULE_JOB")
        );
        assert!(r.text().contains("already exists"), "{}", r.text());
        let r = post(
            &s,
            "/v1.0-alpha1/jobs/once",
            r#"{"dueTime":"1s","data":{"k":"v"},"overwrite":true}"#,
        );
        assert_eq!(r.status, 204, "{}", r.text());
        // The 1.18 route; a schedule with repeats; a string as data.
        let r = post(
            &s,
            "/v1.0/jobs/twice",
            r#"{"schedule":"@every 1s","repeats":2,"data":"text"}"#,
        );
        assert_eq!(r.status, 204, "{}", r.text());
        let r = post(
            &s,
            "/v1.0-alpha1/jobs/fails",
            r#"{"dueTime":"0s","failurePolicy":{"constant":{"interval":"0.2s","maxRetries":1}}}"#,
        );
        assert_eq!(r.status, 204, "{}", r.text());
        let r = post(&s, "/v1.0-alpha1/jobs/nohandler", r#"{"dueTime":"0s"}"#);
        assert_eq!(r.status, 204, "{}", r.text());

        wait_for("every trigger", || {
            fired(&hits, "once").len() == 1
                && fired(&hits, "twice").len() == 2
                && fired(&hits, "fails").len() == 2
                && fired(&hits, "nohandler").len() == 1
        });
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            fired(&hits, "once"),
            [("application/json".to_string(), br#"{"k":"v"}"#.to_vec())]
        );
        assert_eq!(fired(&hits, "twice")[0].1, br#""text""#);
        assert_eq!(fired(&hits, "twice").len(), 2, "repeats: 2");
        assert_eq!(fired(&hits, "fails").len(), 2, "1 try + 1 retry");
        assert_eq!(fired(&hits, "nohandler").len(), 1, "a 404 is not retried");
        // Dapr's scheduler metrics, from the sidecar.
        let m = common::http(s.metrics, "GET", "/metrics", &[], b"")
            .unwrap()
            .text();
        let value = |name: &str| -> f64 {
            m.lines()
                .find(|l| l.starts_with(name) && l.contains("app_id=\"jobs-app\""))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
        };
        assert_eq!(value("dapr_scheduler_jobs_created_total"), 5.0, "{m}");
        assert_eq!(value("dapr_scheduler_jobs_triggered_total"), 4.0, "{m}");
        assert_eq!(value("dapr_scheduler_jobs_failed_total"), 2.0, "{m}");
        assert_eq!(value("dapr_scheduler_trigger_latency_count"), 6.0, "{m}");
        // Done jobs are gone: daprd's answer for a missing job.
        let r = s.get("/v1.0-alpha1/jobs/once");
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (500, "DAPR_SCHEDULER_GET_JOB")
        );
        assert!(r.text().contains("job not found: once"), "{}", r.text());
        let r = common::http(s.http, "DELETE", "/v1.0-alpha1/jobs/never-was", &[], b"").unwrap();
        assert_eq!(r.status, 204);

        // Bad input: a 400 that says what to fix; the sidecar goes on.
        let big = format!(r#"{{"dueTime":"1s","data":"{}"}}"#, "x".repeat(300 << 10));
        for (name, body, code, says) in [
            (
                "cron5",
                r#"{"schedule":"* * * * *"}"#,
                "DAPR_SCHEDULER_SCHEDULE_JOB",
                "exactly 6 fields",
            ),
            (
                "neg",
                r#"{"schedule":"@daily","repeats":-1}"#,
                "ERR_MALFORMED_REQUEST",
                "repeats",
            ),
            (
                "zero",
                r#"{"schedule":"@daily","repeats":0}"#,
                "DAPR_SCHEDULER_SCHEDULE_JOB",
                "greater than 0",
            ),
            (
                "big",
                r#"{"schedule":"@daily","repeats":4294967296}"#,
                "ERR_MALFORMED_REQUEST",
                "repeats",
            ),
            (
                "a||b",
                r#"{"schedule":"@daily"}"#,
                "DAPR_SCHEDULER_JOB_NAME",
                "||",
            ),
            (
                "a%2Fb",
                r#"{"schedule":"@daily"}"#,
                "DAPR_SCHEDULER_JOB_NAME",
                "may not contain",
            ),
            (
                "inbody",
                r#"{"name":"x","schedule":"@daily"}"#,
                "DAPR_SCHEDULER_JOB_NAME",
                "url only",
            ),
            (
                "soon",
                r#"{"dueTime":"soon"}"#,
                "DAPR_SCHEDULER_SCHEDULE_JOB",
                "dueTime format not recognized",
            ),
            (
                "ttl",
                r#"{"dueTime":"1s","ttl":"1m"}"#,
                "DAPR_SCHEDULER_SCHEDULE_JOB",
                "schedule to have a ttl",
            ),
            (
                "empty",
                "{}",
                "DAPR_SCHEDULER_SCHEDULE_EMPTY",
                "Schedule is empty",
            ),
            ("json", "{", "ERR_MALFORMED_REQUEST", "deserializing"),
            ("huge", &big, "DAPR_SCHEDULER_SCHEDULE_JOB", "at most"),
        ] {
            let r = post(&s, &format!("/v1.0-alpha1/jobs/{name}"), body);
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (400, code),
                "{name}: {}",
                r.text()
            );
            assert!(r.text().contains(says), "{name}: {}", r.text());
        }
        assert_eq!(s.get("/v1.0/healthz").status, 204);
    })
    .await
    .unwrap();
}

/// A job scheduled, then the sidecar SIGKILLed before it fires: a new
/// sidecar on the same home fires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlives_a_killed_sidecar() {
    let hits: Hits = Arc::default();
    let port = app(hits.clone()).await;
    let home = TempDir::new("jobs-kill");
    let home_path = home.path().display().to_string();
    tokio::task::spawn_blocking(move || {
        let start = || {
            sidecar()
                .app_id("jobs-kill")
                .args(["--app-port", &port.to_string()])
                .env("TANDEM_HOME", &home_path)
                .start()
        };
        let mut s = start();
        let r = post(
            &s,
            "/v1.0-alpha1/jobs/later",
            r#"{"dueTime":"2s","data":[1,2]}"#,
        );
        assert_eq!(r.status, 204, "{}", r.text());
        s.child.kill().unwrap();
        let _ = s.child.wait();
        assert!(fired(&hits, "later").is_empty());
        let _s = start();
        wait_for("the job after the restart", || {
            fired(&hits, "later").len() == 1
        });
        assert_eq!(fired(&hits, "later")[0].1, b"[1,2]");
    })
    .await
    .unwrap();
}

/// The gRPC doors: ScheduleJob (a `google.protobuf.Value` as data), GetJob
/// (the data back as that Value), ListJobs, DeleteJobsByPrefix, and the
/// Alpha1 names; errors with their gRPC codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_jobs_schedule_list_and_delete_by_prefix() {
    use tandem_proto::runtime::v1 as rt;
    use tandem_proto::runtime::v1::dapr_client::DaprClient;
    let home = TempDir::new("jobs-grpc");
    let home_path = home.path().display().to_string();
    let s = tokio::task::spawn_blocking(move || {
        sidecar()
            .app_id("jobs-grpc")
            .env("TANDEM_HOME", &home_path)
            .start()
    })
    .await
    .unwrap();
    let mut c = DaprClient::connect(s.grpc_endpoint()).await.unwrap();
    let value = prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue("payload".into())),
    };
    let job = |name: &str| rt::Job {
        name: name.into(),
        schedule: Some("@every 1h".into()),
        data: Some(prost_types::Any {
            type_url: "type.googleapis.com/google.protobuf.Value".into(),
            value: prost::Message::encode_to_vec(&value),
        }),
        ..Default::default()
    };
    for name in ["batch-1", "batch-2", "other"] {
        c.schedule_job(rt::ScheduleJobRequest {
            job: Some(job(name)),
            overwrite: false,
        })
        .await
        .unwrap();
    }
    let got = c
        .get_job_alpha1(rt::GetJobRequest {
            name: "batch-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let data = got.data.unwrap();
    assert_eq!(data.type_url, "type.googleapis.com/google.protobuf.Value");
    assert_eq!(
        <prost_types::Value as prost::Message>::decode(data.value.as_slice()).unwrap(),
        value
    );
    assert!(
        got.failure_policy.is_some(),
        "the default policy is answered"
    );
    let e = c
        .schedule_job_alpha1(rt::ScheduleJobRequest {
            job: Some(job("other")),
            overwrite: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    let e = c
        .schedule_job(rt::ScheduleJobRequest {
            job: None,
            overwrite: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = c
        .schedule_job(rt::ScheduleJobRequest {
            job: Some(rt::Job {
                schedule: Some("every now and then".into()),
                ..job("bad")
            }),
            overwrite: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let names = |jobs: Vec<rt::Job>| jobs.into_iter().map(|j| j.name).collect::<Vec<_>>();
    let list = c
        .list_jobs(rt::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(names(list), ["batch-1", "batch-2", "other"]);
    c.delete_jobs_by_prefix_alpha1(rt::DeleteJobsByPrefixRequestAlpha1 {
        name_prefix: Some("batch-".into()),
    })
    .await
    .unwrap();
    let list = c
        .list_jobs_alpha1(rt::ListJobsRequestAlpha1 {})
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(names(list), ["other"]);
    c.delete_job(rt::DeleteJobRequest {
        name: "other".into(),
    })
    .await
    .unwrap();
    let e = c
        .get_job(rt::GetJobRequest {
            name: "other".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::Internal,
        "daprd's code for a missing job"
    );
    assert!(e.message().contains("job not found"), "{e:?}");
}

/// Two sidecars of one app on one host share the triggers: every tick of
/// 1,000 repeating jobs (3,000 ticks) fires exactly once while both are up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_of_one_app_fire_each_tick_once() {
    let hits: Hits = Arc::default();
    let port = app(hits.clone()).await;
    let home = TempDir::new("jobs-two");
    let home_path = home.path().display().to_string();
    tokio::task::spawn_blocking(move || {
        let start = || {
            sidecar()
                .app_id("jobs-two")
                .args(["--app-port", &port.to_string()])
                .env("TANDEM_HOME", &home_path)
                .start()
        };
        let (a, b) = (start(), start());
        for i in 0..1000 {
            let r = post(
                &a,
                &format!("/v1.0-alpha1/jobs/tick-{i}"),
                r#"{"schedule":"@every 1s","repeats":3,"dueTime":"2s"}"#,
            );
            assert_eq!(r.status, 204, "{}", r.text());
        }
        wait_for("3,000 triggers", || hits.lock().unwrap().len() >= 3000);
        std::thread::sleep(Duration::from_millis(1500));
        let mut per_job = std::collections::HashMap::<String, usize>::new();
        for (path, _, _) in hits.lock().unwrap().iter() {
            *per_job.entry(path.clone()).or_default() += 1;
        }
        assert_eq!(per_job.len(), 1000);
        assert!(per_job.values().all(|n| *n == 3), "{per_job:?}");
        for s in [&a, &b] {
            assert!(
                s.stderr.text().contains("firing this app's jobs"),
                "{}",
                s.stderr.text()
            );
        }
    })
    .await
    .unwrap();
}

/// A resources folder with a `coordination.etcd` component for `cluster`.
fn etcd_resources(cluster: &tandem_stateful::etcd_cluster::Cluster, tag: &str) -> TempDir {
    let res = TempDir::new(tag);
    res.write(
        "etcd.yaml",
        &common::component(
            "coordination",
            "coordination.etcd",
            &[
                ("endpoints", &cluster.endpoints().join(",")),
                ("keyPrefix", &format!("{tag}-{}", common::run_id())),
                ("leaseDuration", "3s"),
                ("timeout", "1s"),
            ],
        ),
    );
    res
}

fn count(hits: &Hits, name: &str) -> usize {
    fired(hits, name).len()
}

/// Two sidecars of one app on separate homes (two hosts: no shared file)
/// with a `coordination.etcd` component: a job put through one is read
/// through the other, every tick fires once, the metadata API names the
/// members; with every member down the API answers a 500 naming etcd while
/// the sidecar serves the rest, and it recovers without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_on_two_hosts_share_jobs_through_an_etcd_cluster() {
    let hits: Hits = Arc::default();
    let port = app(hits.clone()).await;
    tokio::task::spawn_blocking(move || {
        let mut cluster = tandem_stateful::etcd_cluster::Cluster::start(3);
        let res = etcd_resources(&cluster, "jobs-etcd");
        let homes = [TempDir::new("jobs-etcd-a"), TempDir::new("jobs-etcd-b")];
        let start = |home: &TempDir| {
            sidecar()
                .app_id("jobs-etcd")
                .args(["--app-port", &port.to_string()])
                .args(["--resources-path", res.path().to_str().unwrap()])
                .env("TANDEM_HOME", home.path().to_str().unwrap())
                .start()
        };
        let (a, b) = (start(&homes[0]), start(&homes[1]));
        for i in 0..40 {
            let r = post(
                &a,
                &format!("/v1.0-alpha1/jobs/tick-{i}"),
                r#"{"schedule":"@every 1s","repeats":3,"dueTime":"1s","data":{"i":1}}"#,
            );
            assert_eq!(r.status, 204, "{}", r.text());
        }
        let got = b.get("/v1.0-alpha1/jobs/tick-7");
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.json()["schedule"], "@every 1s");
        let m = a.get("/v1.0/metadata").json();
        assert_eq!(
            m["scheduler"]["connected_addresses"],
            serde_json::json!(cluster.endpoints()),
            "{m}"
        );
        wait_for("120 triggers", || hits.lock().unwrap().len() >= 120);
        std::thread::sleep(Duration::from_millis(1500));
        for i in 0..40 {
            assert_eq!(count(&hits, &format!("tick-{i}")), 3, "tick-{i}");
        }
        for s in [&a, &b] {
            assert!(
                s.stderr.text().contains("firing this app's jobs"),
                "{}",
                s.stderr.text()
            );
        }

        // Every member down: a clear 500 naming the engine; the rest of
        // the sidecar serves on.
        (0..3).for_each(|i| cluster.kill(i));
        let r = post(&a, "/v1.0-alpha1/jobs/down", r#"{"dueTime":"1s"}"#);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (500, "DAPR_SCHEDULER_SCHEDULE_JOB"),
            "{}",
            r.text()
        );
        assert!(
            r.text().contains("etcd 127.0.0.1:") && r.text().contains("component coordination"),
            "{}",
            r.text()
        );
        assert_eq!(a.get("/v1.0/healthz").status, 204);
        assert_eq!(a.get("/v1.0/metadata").status, 200);
        // Back: the same sidecars work again.
        (0..3).for_each(|i| cluster.restart(i));
        cluster.wait_healthy(Duration::from_secs(30));
        let mut r = post(&a, "/v1.0-alpha1/jobs/back", r#"{"dueTime":"1s"}"#);
        for _ in 0..50 {
            if r.status == 204 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            r = post(&a, "/v1.0-alpha1/jobs/back", r#"{"dueTime":"1s"}"#);
        }
        assert_eq!(r.status, 204, "{}", r.text());
        wait_for("the job scheduled after recovery", || {
            count(&hits, "back") == 1
        });
    })
    .await
    .unwrap();
}

/// A sidecar SIGKILLed while the app holds one of its triggers: the other
/// sidecar fires that trigger again once its lease (3 s here) ends, and
/// fires every other job from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_in_flight_on_a_killed_sidecar_fires_again_on_the_other() {
    let hits: Hits = Arc::default();
    let port = app(hits.clone()).await;
    tokio::task::spawn_blocking(move || {
        let cluster = tandem_stateful::etcd_cluster::Cluster::start(3);
        let res = etcd_resources(&cluster, "jobs-etcd-kill");
        let homes = [TempDir::new("jobs-kill-a"), TempDir::new("jobs-kill-b")];
        let start = |home: &TempDir| {
            sidecar()
                .app_id("jobs-etcd-kill")
                .args(["--app-port", &port.to_string()])
                .args(["--resources-path", res.path().to_str().unwrap()])
                .env("TANDEM_HOME", home.path().to_str().unwrap())
                .start()
        };
        let mut a = start(&homes[0]);
        let r = post(&a, "/v1.0-alpha1/jobs/slow-first", r#"{"dueTime":"0s"}"#);
        assert_eq!(r.status, 204, "{}", r.text());
        for i in 0..20 {
            let r = post(
                &a,
                &format!("/v1.0-alpha1/jobs/keep-{i}"),
                r#"{"schedule":"@every 1s"}"#,
            );
            assert_eq!(r.status, 204, "{}", r.text());
        }
        wait_for("the slow trigger at the app", || {
            count(&hits, "slow-first") == 1
        });
        let _b = start(&homes[1]);
        a.child.kill().unwrap();
        let _ = a.child.wait();
        let killed = Instant::now();
        let before: Vec<usize> = (0..20)
            .map(|i| count(&hits, &format!("keep-{i}")))
            .collect();
        wait_for("the trigger in flight, again", || {
            count(&hits, "slow-first") == 2
        });
        let took = killed.elapsed();
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
            "fired again {took:?} after the kill (lease 3 s)"
        );
        wait_for("every job firing from the other sidecar", || {
            (0..20).all(|i| count(&hits, &format!("keep-{i}")) >= before[i] + 2)
        });
        // At least once, not a burst: the slow job fired twice in all.
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(count(&hits, "slow-first"), 2);
    })
    .await
    .unwrap();
}

/// A `coordination.etcd` component added to a running sidecar's resources
/// folder moves its jobs API (and scheduler) to etcd without a restart;
/// removing it moves them back to the embedded file, whose jobs are still
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_the_etcd_component_moves_the_jobs_api_without_a_restart() {
    let hits: Hits = Arc::default();
    let port = app(hits.clone()).await;
    tokio::task::spawn_blocking(move || {
        let cluster = tandem_stateful::etcd_cluster::Cluster::start(3);
        let with_etcd = etcd_resources(&cluster, "jobs-etcd-reload");
        let res = TempDir::new("jobs-reload-res");
        let homes = [TempDir::new("jobs-reload-a"), TempDir::new("jobs-reload-b")];
        let start = |home: &TempDir, res: &TempDir| {
            sidecar()
                .app_id("jobs-reload")
                .args(["--app-port", &port.to_string()])
                .args(["--resources-path", res.path().to_str().unwrap()])
                .env("TANDEM_HOME", home.path().to_str().unwrap())
                .start()
        };
        let a = start(&homes[0], &res);
        let r = post(&a, "/v1.0-alpha1/jobs/local", r#"{"dueTime":"1h"}"#);
        assert_eq!(r.status, 204, "{}", r.text());
        let scheduler = |s: &common::Sidecar| s.get("/v1.0/metadata").json()["scheduler"].clone();
        assert!(
            scheduler(&a)["connected_addresses"][0]
                .as_str()
                .unwrap()
                .starts_with("sqlite://"),
            "{}",
            scheduler(&a)
        );
        let yaml = std::fs::read_to_string(with_etcd.path().join("etcd.yaml")).unwrap();
        res.write("etcd.yaml", &yaml);
        wait_for("the reload onto etcd", || {
            scheduler(&a)["connected_addresses"] == serde_json::json!(cluster.endpoints())
        });
        let r = post(&a, "/v1.0-alpha1/jobs/shared", r#"{"dueTime":"2s"}"#);
        assert_eq!(r.status, 204, "{}", r.text());
        // Another host on the same cluster sees it; not the local one.
        let b = start(&homes[1], &with_etcd);
        assert_eq!(b.get("/v1.0-alpha1/jobs/shared").status, 200);
        assert_eq!(a.get("/v1.0-alpha1/jobs/local").status, 500);
        wait_for("the etcd job firing", || count(&hits, "shared") == 1);
        std::fs::remove_file(res.path().join("etcd.yaml")).unwrap();
        wait_for("the reload back to the embedded file", || {
            a.get("/v1.0-alpha1/jobs/local").status == 200
        });
        assert!(
            a.stderr.text().contains("the coordination engine changed"),
            "{}",
            a.stderr.text()
        );
        assert_eq!(count(&hits, "shared"), 1);
    })
    .await
    .unwrap();
}

/// A job deleted while its trigger is at the app: the trigger ends, the
/// job is gone and fires no more; a due time in the past fires at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_while_it_fires_is_gone_and_nothing_is_stuck() {
    let hits: Hits = Arc::default();
    let port = app(hits.clone()).await;
    let home = TempDir::new("jobs-delete-firing");
    let home_path = home.path().display().to_string();
    tokio::task::spawn_blocking(move || {
        let s = sidecar()
            .app_id("jobs-delete-firing")
            .args(["--app-port", &port.to_string()])
            .env("TANDEM_HOME", &home_path)
            .start();
        let r = post(&s, "/v1.0-alpha1/jobs/slow", r#"{"schedule":"@every 1s"}"#);
        assert_eq!(r.status, 204, "{}", r.text());
        wait_for("the first trigger at the app", || count(&hits, "slow") == 1);
        let r = common::http(s.http, "DELETE", "/v1.0-alpha1/jobs/slow", &[], b"").unwrap();
        assert_eq!(r.status, 204, "{}", r.text());
        std::thread::sleep(Duration::from_millis(3500));
        assert_eq!(count(&hits, "slow"), 1, "fired after it was deleted");
        assert_eq!(s.get("/v1.0-alpha1/jobs/slow").status, 500);
        // The name is free again, and a due time in the past fires now.
        let r = post(
            &s,
            "/v1.0-alpha1/jobs/slow",
            r#"{"dueTime":"2020-01-01T00:00:00Z"}"#,
        );
        assert_eq!(r.status, 204, "{}", r.text());
        wait_for("the past-due job", || count(&hits, "slow") == 2);
        assert_eq!(s.get("/v1.0/healthz").status, 204);
    })
    .await
    .unwrap();
}
