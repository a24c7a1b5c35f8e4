"""A Dapr workflow app as users write one (the Python SDK's WorkflowRuntime
and DaprWorkflowClient, nothing of tandem's), run under `tandem run` with no
app port, as Dapr's workflow quickstarts are. It exercises activities,
fan-out, timers, external events, child workflows, retry policies,
continue-as-new, pause/resume, terminate/purge, a failing activity and
Dapr's HTTP workflow API, and prints WORKFLOWS OK when all held."""
import json
import os
import sys
import time
from datetime import timedelta

import requests

import dapr.ext.workflow as wf

wfr = wf.WorkflowRuntime()
attempts = {}


@wfr.activity(name="hello")
def hello(ctx, name):
    return f"hello {name}"


@wfr.activity(name="square")
def square(ctx, n):
    return n * n


@wfr.activity(name="flaky")
def flaky(ctx, key):
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] < 3:
        raise RuntimeError(f"attempt {attempts[key]} fails")
    return attempts[key]


@wfr.activity(name="broken")
def broken(ctx, _):
    raise ValueError("this activity always fails")


@wfr.workflow(name="chain")
def chain(ctx: wf.DaprWorkflowContext, name):
    a = yield ctx.call_activity(hello, input=name)
    b = yield ctx.call_activity(hello, input=a)
    c = yield ctx.call_activity(hello, input=b)
    return c


@wfr.workflow(name="fan")
def fan(ctx: wf.DaprWorkflowContext, n):
    tasks = [ctx.call_activity(square, input=i) for i in range(n)]
    results = yield wf.when_all(tasks)
    return sum(results)


@wfr.workflow(name="sleepy")
def sleepy(ctx: wf.DaprWorkflowContext, secs):
    start = ctx.current_utc_datetime
    yield ctx.create_timer(timedelta(seconds=secs))
    return (ctx.current_utc_datetime - start).total_seconds()


@wfr.workflow(name="approval")
def approval(ctx: wf.DaprWorkflowContext, delay):
    if delay:
        yield ctx.create_timer(timedelta(seconds=delay))
    decision = yield ctx.wait_for_external_event("approve")
    return {"approved": decision}


@wfr.workflow(name="child")
def child(ctx: wf.DaprWorkflowContext, x):
    y = yield ctx.call_activity(square, input=x)
    return y + 1


@wfr.workflow(name="parent")
def parent(ctx: wf.DaprWorkflowContext, x):
    a = yield ctx.call_child_workflow(child, input=x)
    b = yield ctx.call_child_workflow(child, input=a, instance_id=f"{ctx.instance_id}-kid")
    return [a, b]


@wfr.workflow(name="retrying")
def retrying(ctx: wf.DaprWorkflowContext, key):
    policy = wf.RetryPolicy(
        first_retry_interval=timedelta(milliseconds=300), max_number_of_attempts=4
    )
    n = yield ctx.call_activity(flaky, input=key, retry_policy=policy)
    return n


@wfr.workflow(name="counter")
def counter(ctx: wf.DaprWorkflowContext, n):
    if n < 3:
        yield ctx.call_activity(hello, input=str(n))
        ctx.continue_as_new(n + 1)
        return
    return n


@wfr.workflow(name="failing")
def failing(ctx: wf.DaprWorkflowContext, _):
    yield ctx.call_activity(broken, input=None)
    return "unreachable"


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def main():
    wfr.start()
    client = wf.DaprWorkflowClient()
    run = str(os.getpid())

    def done(iid, timeout=60):
        s = client.wait_for_workflow_completion(iid, timeout_in_seconds=timeout)
        check(s is not None, f"{iid} exists")
        return s

    iid = client.schedule_new_workflow(chain, input="bob", instance_id=f"chain-{run}")
    s = done(iid)
    check(s.runtime_status == wf.WorkflowStatus.COMPLETED, "chain completed")
    check(json.loads(s.serialized_output) == "hello hello hello bob", "chain output")

    # Rerun the chain from its second activity with another input: the
    # first is replayed, the second and third run again.
    new = client.rerun_workflow_from_event(f"chain-{run}", 2, new_instance_id=f"rerun-{run}", input="zed")
    check(new == f"rerun-{run}", "rerun names the new instance")
    s = done(new)
    check(json.loads(s.serialized_output) == "hello hello zed", f"rerun from an event: {s.serialized_output}")
    try:
        client.rerun_workflow_from_event(f"chain-{run}", 99)
        check(False, "a rerun from an event that is not there fails")
    except Exception as e:  # the SDK raises the gRPC error
        check("no event with ID 99" in str(e), f"a rerun from a missing event names it: {e}")

    iid = client.schedule_new_workflow(fan, input=10)
    s = done(iid)
    check(json.loads(s.serialized_output) == sum(i * i for i in range(10)), "fan-out/fan-in")

    t0 = time.time()
    iid = client.schedule_new_workflow(sleepy, input=1)
    s = done(iid)
    check(time.time() - t0 >= 1.0, "a durable timer waits its time")
    check(json.loads(s.serialized_output) >= 1.0, "the workflow's clock moved past the timer")

    iid = client.schedule_new_workflow(approval, input=0, instance_id=f"approve-{run}")
    client.wait_for_workflow_start(iid, timeout_in_seconds=30)
    client.raise_workflow_event(iid, "approve", data=True)
    s = done(iid)
    check(json.loads(s.serialized_output) == {"approved": True}, "an external event")

    # Raised before the workflow waits for it: buffered.
    iid = client.schedule_new_workflow(approval, input=1)
    client.raise_workflow_event(iid, "approve", data="early")
    s = done(iid)
    check(json.loads(s.serialized_output) == {"approved": "early"}, "an early event is kept")

    iid = client.schedule_new_workflow(parent, input=3, instance_id=f"parent-{run}")
    s = done(iid)
    check(json.loads(s.serialized_output) == [10, 101], "child workflows")
    kid = client.get_workflow_state(f"parent-{run}-kid")
    check(kid is not None and kid.runtime_status == wf.WorkflowStatus.COMPLETED, "a child is an instance")

    iid = client.schedule_new_workflow(retrying, input=f"k-{run}")
    s = done(iid)
    check(s.runtime_status == wf.WorkflowStatus.COMPLETED, "retry policy: completed")
    check(json.loads(s.serialized_output) == 3, "retry policy: third attempt")

    iid = client.schedule_new_workflow(counter, input=0)
    s = done(iid)
    check(json.loads(s.serialized_output) == 3, "continue-as-new")

    iid = client.schedule_new_workflow(failing, input=None)
    s = done(iid)
    check(s.runtime_status == wf.WorkflowStatus.FAILED, "a failing activity fails the workflow")
    check("this activity always fails" in (s.failure_details.message or ""), "failure details")

    iid = client.schedule_new_workflow(approval, input=0, instance_id=f"pause-{run}")
    client.wait_for_workflow_start(iid, timeout_in_seconds=30)
    client.pause_workflow(iid)
    check(client.get_workflow_state(iid).runtime_status == wf.WorkflowStatus.SUSPENDED, "paused")
    client.raise_workflow_event(iid, "approve", data="while paused")
    time.sleep(1)
    check(client.get_workflow_state(iid).runtime_status == wf.WorkflowStatus.SUSPENDED, "stays paused")
    client.resume_workflow(iid)
    s = done(iid)
    check(json.loads(s.serialized_output) == {"approved": "while paused"}, "resumed")

    iid = client.schedule_new_workflow(approval, input=0, instance_id=f"term-{run}")
    client.wait_for_workflow_start(iid, timeout_in_seconds=30)
    client.terminate_workflow(iid, output="stopped")
    s = done(iid)
    check(s.runtime_status == wf.WorkflowStatus.TERMINATED, "terminated")
    client.purge_workflow(iid)
    check(client.get_workflow_state(iid) is None, "purged")

    # Every instance of the app, a few ids a page.
    ids = list(client.iter_workflow_instance_ids(page_size=3))
    check(f"chain-{run}" in ids and f"parent-{run}-kid" in ids, f"ListInstanceIDs pages through them: {ids}")
    check(f"term-{run}" not in ids, "a purged instance is not listed")
    check(len(ids) == len(set(ids)), "no id twice across pages")

    # Dapr's HTTP workflow API, on the same engine.
    base = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}/v1.0/workflows/dapr"
    r = requests.post(f"{base}/chain/start?instanceID=http-{run}", data=json.dumps("ann"))
    check(r.status_code == 202 and r.json() == {"instanceID": f"http-{run}"}, f"HTTP start {r.status_code} {r.text}")
    deadline = time.time() + 30
    while time.time() < deadline:
        got = requests.get(f"{base}/http-{run}").json()
        if got["runtimeStatus"] == "COMPLETED":
            break
        time.sleep(0.1)
    check(got["runtimeStatus"] == "COMPLETED", f"HTTP get {got}")
    check(json.loads(got["properties"]["dapr.workflow.output"]) == "hello hello hello ann", "HTTP output")
    r = requests.get(f"{base}/no-such-{run}")
    check(r.status_code == 404 and r.json()["errorCode"] == "ERR_INSTANCE_ID_NOT_FOUND", f"HTTP unknown {r.text}")
    r = requests.post(f"{base}/http-{run}/purge")
    check(r.status_code == 202, "HTTP purge")

    def http_status(iid):
        return requests.get(f"{base}/{iid}").json()["runtimeStatus"]

    def http_wait(iid, want):
        end = time.time() + 30
        while time.time() < end and http_status(iid) != want:
            time.sleep(0.1)
        return http_status(iid)

    # An approval over HTTP: pause, an event while paused, resume.
    iid = f"httpapprove-{run}"
    r = requests.post(f"{base}/approval/start?instanceID={iid}", data="0")
    check(r.status_code == 202, "HTTP start approval")
    check(http_wait(iid, "RUNNING") == "RUNNING", "HTTP running")
    check(requests.post(f"{base}/{iid}/pause").status_code == 202, "HTTP pause")
    check(http_status(iid) == "SUSPENDED", "HTTP suspended")
    r = requests.post(f"{base}/{iid}/raiseEvent/approve", data=json.dumps("by http"))
    check(r.status_code == 202, "HTTP raiseEvent")
    check(requests.post(f"{base}/{iid}/resume").status_code == 202, "HTTP resume")
    check(http_wait(iid, "COMPLETED") == "COMPLETED", "HTTP approval completed")
    out = requests.get(f"{base}/{iid}").json()["properties"]["dapr.workflow.output"]
    check(json.loads(out) == {"approved": "by http"}, "HTTP approval output")
    # Terminated over HTTP, then purged; a running one cannot be purged.
    iid = f"httpterm-{run}"
    requests.post(f"{base}/approval/start?instanceID={iid}", data="0")
    check(http_wait(iid, "RUNNING") == "RUNNING", "HTTP running again")
    r = requests.post(f"{base}/{iid}/purge")
    check(r.status_code == 500 and r.json()["errorCode"] == "ERR_PURGE_WORKFLOW", f"HTTP purge running {r.text}")
    check(requests.post(f"{base}/{iid}/terminate").status_code == 202, "HTTP terminate")
    check(http_wait(iid, "TERMINATED") == "TERMINATED", "HTTP terminated")
    check(requests.post(f"{base}/{iid}/purge").status_code == 202, "HTTP purge terminated")

    # An unknown workflow name: the SDK's worker fails it with a reason.
    iid = client.schedule_new_workflow("no_such_workflow", input=1)
    s = done(iid)
    check(s.runtime_status == wf.WorkflowStatus.FAILED, "unknown workflow name fails")
    check("no_such_workflow" in (s.failure_details.message or ""), f"names it: {s.failure_details.message}")

    print("WORKFLOWS OK", flush=True)
    wfr.shutdown()


if __name__ == "__main__":
    main()
