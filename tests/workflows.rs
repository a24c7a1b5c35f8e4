//! Workflows through a real sidecar, driven by a worker that speaks the
//! durabletask protocol (`common::workflow`): a sidecar SIGKILLed under
//! 200 running workflows, a worker that vanishes mid-activity, a thousand
//! durable timers, and bad input — on the embedded engine and on etcd.

mod common;

use common::workflow::{self as w, Worker};
use common::{Sidecar, TempDir, sidecar};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tandem_proto::durabletask as dt;
use tandem_stateful::etcd_cluster::Cluster;

/// The actor state store (a file the restarted sidecar finds again) and,
/// on etcd, the coordination component (placement and reminders).
fn resources(home: &TempDir, etcd: Option<&Cluster>) -> String {
    let res = common::actor_state_resources(home);
    if let Some(cluster) = etcd {
        home.write(
            "res/etcd.yaml",
            &common::component(
                "coordination",
                "coordination.etcd",
                &[
                    ("endpoints", &cluster.endpoints().join(",")),
                    ("keyPrefix", &format!("wf-{}", common::run_id())),
                    ("leaseDuration", "3s"),
                    ("timeout", "1s"),
                ],
            ),
        );
    }
    res
}

fn start_sidecar(home: &TempDir, res: &str) -> Sidecar {
    sidecar()
        .app_id("wfapp")
        .env("TANDEM_HOME", home.path().to_str().unwrap())
        .args(["--resources-path", res])
        .start()
}

fn endpoint(s: &Sidecar) -> String {
    format!("http://127.0.0.1:{}", s.grpc)
}

async fn etcd() -> Cluster {
    tokio::task::spawn_blocking(|| Cluster::start(3))
        .await
        .unwrap()
}

/// Waits for every instance, asking again while the sidecar is away.
async fn all_finished(
    worker: &Worker,
    ids: &[String],
    limit: Duration,
) -> Vec<(String, dt::WorkflowState)> {
    let end = Instant::now() + limit;
    let mut out = Vec::new();
    for id in ids {
        loop {
            assert!(
                Instant::now() < end,
                "instance {id} did not finish in {limit:?} ({} of {} did)",
                out.len(),
                ids.len()
            );
            let ep = worker.endpoint.lock().unwrap().clone();
            let Ok(mut c) = w::connect(&ep).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            match w::finished(&mut c, id, Duration::from_secs(5)).await {
                Ok(Some(s)) => {
                    out.push((id.clone(), s));
                    break;
                }
                Ok(None) => panic!("instance {id} was lost"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    out
}

/// 200 three-activity workflows; the sidecar is SIGKILLed while they run
/// and started again on the same store: every one completes with the
/// right output, and no activity whose result the sidecar acknowledged
/// ran again (only those in flight at the kill may run twice).
async fn sigkill(etcd: Option<Cluster>) {
    let home = TempDir::new("wf-kill");
    let res = resources(&home, etcd.as_ref());
    let mut s = start_sidecar(&home, &res);
    let worker = Worker::new(endpoint(&s));
    *worker.activity_ms.lock().unwrap() = (100, 400);
    let mut c = w::connect(&endpoint(&s)).await.unwrap();
    let run = common::run_id();
    let ids: Vec<String> = (0..200).map(|i| format!("k{run}-{i}")).collect();
    let t0 = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        w::start(&mut c, "chain", id, &(i * 10).to_string())
            .await
            .unwrap();
    }
    println!("sigkill: 200 started in {:?}", t0.elapsed());
    // The worker comes once all are started (their turns wait for it), so
    // the kill below lands mid-run however fast the starts were.
    tokio::spawn(worker.clone().run());
    let started = Instant::now();
    // Killed once a quarter of the activities are done.
    while worker.stats.acked.lock().unwrap().len() < 150 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done_before = worker.stats.acked.lock().unwrap().len();
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let killed_at = Instant::now();
    let s2 = start_sidecar(&home, &res);
    *worker.endpoint.lock().unwrap() = endpoint(&s2);
    let done = all_finished(&worker, &ids, Duration::from_secs(120)).await;
    let recovery = killed_at.elapsed();
    worker.stopped.store(true, Ordering::Release);
    for (i, (id, st)) in done.iter().enumerate() {
        assert_eq!(
            st.workflow_status,
            dt::OrchestrationStatus::Completed as i32,
            "{id}: {st:?}"
        );
        assert_eq!(
            st.output.as_deref(),
            Some((i as i64 * 10 + 3).to_string().as_str()),
            "{id}"
        );
    }
    let reran = worker.stats.reran_after_ack.lock().unwrap().clone();
    assert!(
        reran.is_empty(),
        "activities ran again after their result was acknowledged: {reran:?}"
    );
    let runs = worker.stats.runs.lock().unwrap();
    let twice = runs.values().filter(|n| **n > 1).count();
    println!(
        "sigkill: {} activity results acknowledged before the kill; all 200 done {:.1} s after it; {} activities ran twice (in flight at the kill); {} runs in all",
        done_before,
        recovery.as_secs_f64(),
        twice,
        runs.values().sum::<u32>()
    );
    assert!(
        done_before > 0 && done_before < 500,
        "the kill came mid-run: {done_before}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_survive_a_sidecar_sigkill() {
    sigkill(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_survive_a_sidecar_sigkill_on_etcd() {
    sigkill(Some(etcd().await)).await;
}

/// A worker takes an activity and vanishes without answering: the
/// activity goes to the next worker that connects, and the workflow ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_worker_s_activity_is_given_to_the_next() {
    let home = TempDir::new("wf-worker");
    let res = resources(&home, None);
    let s = start_sidecar(&home, &res);
    let first = Worker::new(endpoint(&s));
    first.swallow_activities.store(true, Ordering::Release);
    tokio::spawn(first.clone().run());
    let mut c = w::connect(&endpoint(&s)).await.unwrap();
    w::start(&mut c, "chain", "vanish", "1").await.unwrap();
    // The first worker ran the turn and holds the activity.
    let end = Instant::now() + Duration::from_secs(10);
    while *first.stats.turns.lock().unwrap() == 0 {
        assert!(Instant::now() < end, "no turn reached the worker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.stopped.store(true, Ordering::Release);
    // Its stream ends; the next worker gets the activity.
    let second = Worker::new(endpoint(&s));
    tokio::spawn(second.clone().run());
    let st = w::finished(&mut c, "vanish", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    second.stopped.store(true, Ordering::Release);
    assert_eq!(st.output.as_deref(), Some("4"));
    assert_eq!(
        second.stats.runs.lock().unwrap().get(&("vanish".into(), 1)),
        Some(&1),
        "the held activity went to the second worker"
    );
}

/// A thousand workflows each wait on one durable timer of 1–5 s: every
/// timer fires, none before its time; lateness percentiles printed.
async fn timers(etcd: Option<Cluster>) {
    let home = TempDir::new("wf-timers");
    let res = resources(&home, etcd.as_ref());
    let s = start_sidecar(&home, &res);
    let worker = Worker::new(endpoint(&s));
    tokio::spawn(worker.clone().run());
    let mut c = w::connect(&endpoint(&s)).await.unwrap();
    let run = common::run_id();
    let ids: Vec<String> = (0..1000).map(|i| format!("t{run}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let ms = 1000 + (i as u64 * 7919) % 4001;
        w::start(&mut c, "timer", id, &ms.to_string())
            .await
            .unwrap();
    }
    let done = all_finished(&worker, &ids, Duration::from_secs(90)).await;
    worker.stopped.store(true, Ordering::Release);
    assert_eq!(done.len(), 1000);
    let mut late = worker.stats.lateness.lock().unwrap().clone();
    assert_eq!(late.len(), 1000, "every timer fired once");
    let early: Vec<_> = late
        .iter()
        .filter(|(seen, stamped)| *seen < 0 || *stamped < 0)
        .collect();
    assert!(early.is_empty(), "timers fired early: {early:?}");
    late.sort();
    let pct = |p: f64| late[((late.len() - 1) as f64 * p) as usize].0;
    println!(
        "timers: 1000 fired; lateness p50 {} ms, p99 {} ms, max {} ms",
        pct(0.5),
        pct(0.99),
        late.last().unwrap().0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_timers_fire_and_none_early() {
    timers(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_timers_fire_and_none_early_on_etcd() {
    timers(Some(etcd().await)).await;
}

/// Bad input: each gets a clear error, and no instance is left stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_nothing_sticks() {
    let home = TempDir::new("wf-bad");
    let res = resources(&home, None);
    let s = start_sidecar(&home, &res);
    let worker = Worker::new(endpoint(&s));
    tokio::spawn(worker.clone().run());
    let mut c = w::connect(&endpoint(&s)).await.unwrap();
    let code = |r: Result<(), tonic::Status>| r.unwrap_err().code();

    // Instance ids.
    for bad in ["a||b", "bell\u{7}", &"x".repeat(300)] {
        let e = code(w::start(&mut c, "chain", bad, "1").await);
        assert_eq!(e, tonic::Code::InvalidArgument, "{bad:?}");
    }
    let e = c
        .start_instance(dt::CreateInstanceRequest {
            instance_id: "noname".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("workflow name"), "{}", e.message());

    // An unknown workflow name fails the instance (as the worker says).
    w::start(&mut c, "nosuch", "unknown-name", "1")
        .await
        .unwrap();
    let st = w::finished(&mut c, "unknown-name", Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.workflow_status, dt::OrchestrationStatus::Failed as i32);
    assert!(st.failure_details.unwrap().error_message.contains("nosuch"));

    // A duplicate id while running: ALREADY_EXISTS; once finished: replaced.
    w::start(&mut c, "waiter", "dup", "").await.unwrap();
    let e = w::start(&mut c, "chain", "dup", "1").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("already exists"), "{}", e.message());
    // Purging a running instance is refused.
    let e = c
        .purge_instances(dt::PurgeInstancesRequest {
            request: Some(dt::purge_instances_request::Request::InstanceId(
                "dup".into(),
            )),
            recursive: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    c.raise_event(dt::RaiseEventRequest {
        instance_id: "dup".into(),
        name: "go".into(),
        input: Some("\"went\"".into()),
        router: None,
    })
    .await
    .unwrap();
    let st = w::finished(&mut c, "dup", Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.output.as_deref(), Some("\"went\""));
    // An event to a finished instance, and to one that never was.
    let e = c
        .raise_event(dt::RaiseEventRequest {
            instance_id: "dup".into(),
            name: "go".into(),
            input: None,
            router: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("already finished"), "{}", e.message());
    let e = c
        .raise_event(dt::RaiseEventRequest {
            instance_id: "never-was".into(),
            name: "go".into(),
            input: None,
            router: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let got = c
        .get_instance(dt::GetInstanceRequest {
            instance_id: "never-was".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!got.exists);
    // The finished one is replaced by a new start.
    w::start(&mut c, "chain", "dup", "10").await.unwrap();
    let st = w::finished(&mut c, "dup", Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.output.as_deref(), Some("13"));

    // 1 MiB of input goes through every turn.
    let big = format!("\"{}\"", "x".repeat(1 << 20));
    w::start(&mut c, "waiter", "big", &big).await.unwrap();
    c.raise_event(dt::RaiseEventRequest {
        instance_id: "big".into(),
        name: "go".into(),
        input: Some(big.clone()),
        router: None,
    })
    .await
    .unwrap();
    let st = w::finished(&mut c, "big", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.output.as_deref().map(str::len), Some(big.len()));
    assert_eq!(st.input.as_deref().map(str::len), Some(big.len()));

    // A worker whose history does not match the sidecar's: the instance
    // fails with the reason instead of running on.
    w::start(&mut c, "liar", "liar", "1").await.unwrap();
    let st = w::finished(&mut c, "liar", Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.workflow_status, dt::OrchestrationStatus::Failed as i32);
    let f = st.failure_details.unwrap();
    assert!(
        f.error_message
            .contains("already in the instance's history"),
        "{f:?}"
    );

    // A completion for a token that is not in flight is dropped quietly.
    c.complete_orchestrator_task(dt::WorkflowResponse {
        instance_id: "liar".into(),
        completion_token: "not-a-token".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.complete_activity_task(dt::ActivityResponse {
        instance_id: "liar".into(),
        task_id: 1,
        completion_token: "not-a-token".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // Dapr's HTTP API: its validation and codes.
    let r = s.request(
        "POST",
        "/v1.0/workflows/dapr/chain/start?instanceID=has%20space",
        b"1",
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_INSTANCE_ID_INVALID")
    );
    let long = "a".repeat(65);
    let r = s.request(
        "POST",
        &format!("/v1.0/workflows/dapr/chain/start?instanceID={long}"),
        b"1",
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ERR_INSTANCE_ID_TOO_LONG")
    );
    let r = s.request(
        "POST",
        "/v1.0-beta1/workflows/dapr/chain/start?instanceID=nonutf",
        b"\xff\xfe",
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "ERR_BODY_READ"));
    let r = s.request("POST", "/v1.0/workflows/dapr/never-was/terminate", b"");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "ERR_INSTANCE_ID_NOT_FOUND")
    );
    let r = s.request("POST", "/v1.0/workflows/dapr/never-was/purge", b"");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "ERR_INSTANCE_ID_NOT_FOUND")
    );
    let r = s.request(
        "POST",
        "/v1.0-alpha1/workflows/dapr/chain/start?instanceID=http1",
        b"5",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["instanceID"], "http1");
    let r = s.request("POST", "/v1.0/workflows/dapr/http1/raiseEvent/", b"");
    assert_eq!(
        r.status,
        404,
        "an empty event name matches no route: {}",
        r.text()
    );
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.get("/v1.0/workflows/dapr/http1");
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        if j["runtimeStatus"] == "COMPLETED" {
            assert_eq!(j["workflowName"], "chain");
            assert_eq!(j["properties"]["dapr.workflow.input"], "5");
            assert_eq!(j["properties"]["dapr.workflow.output"], "8");
            assert_eq!(j["properties"]["dapr.workflow.custom_status"], "\"step 3\"");
            break;
        }
        assert!(Instant::now() < end, "{j}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = s.request("POST", "/v1.0/workflows/dapr/http1/pause", b"");
    assert_eq!(
        r.status,
        202,
        "pausing a finished instance is a no-op: {}",
        r.text()
    );
    let r = s.request("POST", "/v1.0/workflows/dapr/http1/raiseEvent/go", b"1");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (500, "ERR_RAISE_EVENT_WORKFLOW")
    );
    let r = s.request("POST", "/v1.0/workflows/dapr/http1/purge", b"");
    assert_eq!(r.status, 202, "{}", r.text());
    let r = s.get("/v1.0/workflows/dapr/http1");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "ERR_INSTANCE_ID_NOT_FOUND")
    );
    worker.stopped.store(true, Ordering::Release);
    // The sidecar kept running through all of it.
    assert_eq!(s.get("/v1.0/healthz").status, 204);
}
