"""The Python SDK's jobs, as its own example uses them: a dapr.ext.grpc app
with @app.job_event, and DaprClient.schedule_job / get_job / delete_job
(data a GrpcAny of JSON bytes without a type URL, as the example sends)."""
import json
import os
import threading

from dapr.clients import DaprClient, DropFailurePolicy, Job
from dapr.ext.grpc import App, JobEvent
from google.protobuf.any_pb2 import Any as GrpcAny

app = App()
got = []
fired = threading.Event()


@app.job_event("sdk-job")
def on_job(event: JobEvent) -> None:
    got.append((event.name, event.get_data_as_string()))
    fired.set()


def client():
    try:
        with DaprClient() as d:
            d.wait(30)
            data = GrpcAny(value=json.dumps({"hello": "jobs"}).encode())
            d.schedule_job(Job(name="sdk-job", due_time="1s", data=data, failure_policy=DropFailurePolicy()))
            j = d.get_job("sdk-job")
            assert (j.name, j.due_time) == ("sdk-job", "1s"), j
            try:
                d.schedule_job(Job(name="sdk-job", due_time="1s", data=data))
                raise AssertionError("a second schedule without overwrite was taken")
            except AssertionError:
                raise
            except Exception as e:
                assert "already exists" in str(e), e
            d.schedule_job(Job(name="gone", schedule="@every 1h", repeats=5), overwrite=True)
            assert d.get_job("gone").repeats == 5
            d.delete_job("gone")
            try:
                d.get_job("gone")
                raise AssertionError("a deleted job was found")
            except AssertionError:
                raise
            except Exception as e:
                assert "not found" in str(e), e
            assert fired.wait(20), "the job never fired"
            assert got == [("sdk-job", '{"hello": "jobs"}')], got
            print("JOBS OK", flush=True)
    except BaseException as e:  # noqa: BLE001 - the test reads the output
        print(f"JOBS FAILED {e!r}", flush=True)
    os._exit(0)


threading.Thread(target=client, daemon=True).start()
app.run(int(os.environ["APP_PORT"]))
