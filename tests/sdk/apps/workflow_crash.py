"""A workflow app that dies in the middle of an activity and is started
again: the first run schedules the workflow and its activity kills the
process (no answer is ever sent); the second run finds the activity
handed to it again and waits for the workflow to finish. Prints
CRASH RECOVERED when the workflow completed with the activity's result."""
import json
import os
import sys

import dapr.ext.workflow as wf

MARK = sys.argv[1]
wfr = wf.WorkflowRuntime()


@wfr.activity(name="fragile")
def fragile(ctx, x):
    if not os.path.exists(MARK + ".died"):
        open(MARK + ".died", "w").close()
        print("dying mid-activity", flush=True)
        os._exit(3)
    with open(MARK + ".runs", "a") as f:
        f.write("run\n")
    return x * 2


@wfr.workflow(name="fragile_wf")
def fragile_wf(ctx, x):
    y = yield ctx.call_activity(fragile, input=x)
    return y


def main():
    wfr.start()
    client = wf.DaprWorkflowClient()
    iid = "crash-" + os.path.basename(MARK)
    if not os.path.exists(MARK + ".started"):
        open(MARK + ".started", "w").close()
        client.schedule_new_workflow(fragile_wf, input=21, instance_id=iid)
        # The activity ends this process.
        client.wait_for_workflow_completion(iid, timeout_in_seconds=60)
        print("not reached", flush=True)
        sys.exit(1)
    s = client.wait_for_workflow_completion(iid, timeout_in_seconds=60)
    ok = s is not None and s.runtime_status == wf.WorkflowStatus.COMPLETED and json.loads(s.serialized_output) == 42
    runs = open(MARK + ".runs").read().count("run")
    print(f"CRASH RECOVERED {ok} runs={runs}" if ok else f"CRASH FAILED {s}", flush=True)
    wfr.shutdown()


if __name__ == "__main__":
    main()
