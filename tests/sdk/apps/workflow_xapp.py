"""Two apps, one workflow across them: run as `callee`, the app registers
an activity and a child workflow and serves them; run as `caller`, its
workflow calls that activity and that child on the other app by app id
(the SDK's `app_id=`), and prints XAPP OK when both answered."""
import json
import os
import sys
import time

import dapr.ext.workflow as wf

role, other = sys.argv[1], sys.argv[2]
wfr = wf.WorkflowRuntime()

if role == "callee":

    @wfr.activity(name="remote_hello")
    def remote_hello(ctx, name):
        return f"hello {name} from {os.environ.get('APP_ID', 'callee')}"

    @wfr.workflow(name="remote_child")
    def remote_child(ctx, n):
        doubled = yield ctx.call_activity(remote_hello, input=str(n * 2))
        return doubled

else:

    @wfr.workflow(name="spanning")
    def spanning(ctx, name):
        a = yield ctx.call_activity("remote_hello", input=name, app_id=other)
        b = yield ctx.call_child_workflow("remote_child", input=21, app_id=other)
        return [a, b]


def main():
    wfr.start()
    if role == "callee":
        print("CALLEE READY", flush=True)
        while True:
            time.sleep(1)
    client = wf.DaprWorkflowClient()
    iid = f"span-{os.getpid()}"
    client.schedule_new_workflow("spanning", input="ann", instance_id=iid)
    s = client.wait_for_workflow_completion(iid, timeout_in_seconds=90)
    out = json.loads(s.serialized_output) if s and s.serialized_output else None
    if s and s.runtime_status == wf.WorkflowStatus.COMPLETED and out[0].startswith("hello ann") and out[1].startswith("hello 42"):
        print(f"XAPP OK {out}", flush=True)
    else:
        print(f"XAPP FAILED {s and s.runtime_status} {out} {s and s.failure_details}", flush=True)
    wfr.shutdown()


if __name__ == "__main__":
    main()
