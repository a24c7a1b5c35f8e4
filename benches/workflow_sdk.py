"""The workflow bench's Python leg: the SDK's WorkflowRuntime runs a
three-activity workflow and its DaprWorkflowClient starts N of them at once
and waits for all; prints WORKFLOWS/S <rate>."""
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import dapr.ext.workflow as wf

wfr = wf.WorkflowRuntime()


@wfr.activity(name="inc")
def inc(ctx, n):
    return n + 1


@wfr.workflow(name="chain")
def chain(ctx, n):
    for _ in range(3):
        n = yield ctx.call_activity(inc, input=n)
    return n


def main():
    count = int(sys.argv[1])
    wfr.start()
    client = wf.DaprWorkflowClient()
    client.schedule_new_workflow(chain, input=0, instance_id="py-warm")
    client.wait_for_workflow_completion("py-warm", timeout_in_seconds=60)

    def one(i):
        iid = f"py-{i}"
        client.schedule_new_workflow(chain, input=i, instance_id=iid)
        s = client.wait_for_workflow_completion(iid, timeout_in_seconds=300)
        assert s.serialized_output == str(i + 3), s

    start = time.time()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(one, range(count)))
    print(f"WORKFLOWS/S {count / (time.time() - start):.1f}", flush=True)
    wfr.shutdown()


if __name__ == "__main__":
    main()
