"""The official Dapr Python SDK against tandem, started with `tandem run`."""
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import HERE, free_port, python_app, tandem_cmd

SECRETS = {"db": {"password": "s3cret", "user": "admin"}, "api-key": "abc", "hidden": "no"}


@pytest.fixture
def resources(tmp_path):
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps(SECRETS))
    res = tmp_path / "resources"
    res.mkdir()
    (res / "files.yaml").write_text(
        f"""apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: files
spec:
  type: secretstores.local.file
  version: v1
  metadata:
  - name: secretsFile
    value: {secrets}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: multi
spec:
  type: secretstores.local.file
  metadata:
  - name: secretsFile
    value: {secrets}
  - name: multiValued
    value: "true"
"""
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        """apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: cfg
spec:
  secrets:
    scopes:
    - storeName: files
      deniedSecrets: [hidden]
"""
    )
    return res, config


def port_in_use(port):
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("mode", ["random-ports", "fixed-ports", "api-token"])
def test_client_reads_metadata_and_secrets(mode, resources, tandem_env):
    res, config = resources
    args = ["run", "--app-id", "sdkapp", "--resources-path", str(res), "--config", str(config)]
    if mode == "fixed-ports":
        if port_in_use(3500) or port_in_use(50001):
            pytest.skip("3500/50001 are taken on this machine")
        args += ["--dapr-http-port", "3500", "--dapr-grpc-port", "50001"]
    if mode == "api-token":
        tandem_env["DAPR_API_TOKEN"] = "sdk-token"
    out = subprocess.run(
        tandem_cmd(*args, "--", *python_app("client_metadata_secrets.py", "sdkapp")),
        env=tandem_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "== APP == ALL OK" in out.stdout, out.stdout + out.stderr
    if mode == "fixed-ports":
        assert "== APP == ALL OK 3500 50001" in out.stdout
    else:
        assert "ALL OK 3500 " not in out.stdout, "random ports by default"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_js_sdk_client_reads_metadata_and_secrets(protocol, resources, tandem_env):
    res, config = resources
    script = os.path.join(HERE, "js", "client.cjs")
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", "jsapp", "--resources-path", str(res), "--config", str(config),
            "--", "node", script, protocol, "jsapp",
        ),
        env=tandem_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"== APP == JS OK {protocol}" in out.stdout, out.stdout + out.stderr


def http_json(port, path, token=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("dapr-api-token", token)
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, json.loads(r.read() or b"null")



def run_file_output(run_file, env, done):
    """Runs `tandem run -f <run_file>` until a line contains one of `done`
    (or 60 s pass), stops it, and returns what it printed."""
    env = dict(env, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(tandem_cmd("run", "-f", str(run_file)), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = ""
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
            if any(d in line for d in done):
                break
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return out

def pubsub_resources(tmp_path):
    res = tmp_path / "pubsub-res"
    res.mkdir()
    (res / "pubsub.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\n"
        "spec:\n  type: pubsub.in-memory\n  version: v1\n  metadata: []\n"
    )
    return str(res)


def publish_with_sdk(env, http_port, grpc_port, topic, payload):
    env = dict(env, DAPR_HTTP_PORT=str(http_port), DAPR_GRPC_PORT=str(grpc_port))
    out = subprocess.run(
        python_app("publish.py", "pubsub", topic, payload), env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_grpc_app_is_called_back(tandem_env, background, tmp_path):
    http_port, grpc_port, app_port = free_port(), free_port(), free_port()
    run = background(
        tandem_cmd(
            "run", "--app-id", "grpcapp", "--app-port", str(app_port), "--app-protocol", "grpc",
            "--resources-path", pubsub_resources(tmp_path), "--dapr-grpc-port", str(grpc_port),
            "--dapr-http-port", str(http_port), "--enable-app-health-check",
            "--app-health-probe-interval", "1", "--", *python_app("grpc_app.py"),
        ),
        tandem_env,
    )
    assert run.wait_for("You're up and running!"), run.output()
    assert run.wait_for("== APP == health check called"), run.output()
    status, meta = http_json(http_port, "/v1.0/metadata")
    subs = meta["subscriptions"]
    assert [(s["topic"], s["type"], s.get("deadLetterTopic")) for s in subs] == [
        ("orders", "PROGRAMMATIC", "orders-dead")
    ], meta
    assert meta["appConnectionProperties"]["protocol"] == "grpc"
    publish_with_sdk(tandem_env, http_port, grpc_port, "orders", '{"order": 7}')
    # JSON data arrives parsed; CloudEvent extensions (pubsubname) travel in `extensions`.
    assert run.wait_for("== APP == event com.dapr.event.sent orders {'order': 7} pubsub"), run.output()
    stop = subprocess.run(tandem_cmd("stop", "--app-id", "grpcapp"), env=tandem_env, capture_output=True, text=True)
    assert stop.returncode == 0, stop.stderr
    run.proc.wait(timeout=20)


def test_http_app_health_is_probed_with_app_token(tandem_env, background, tmp_path):
    http_port, grpc_port, app_port = free_port(), free_port(), free_port()
    tandem_env["APP_API_TOKEN"] = "to-the-app"
    run = background(
        tandem_cmd(
            "run", "--app-id", "httpapp", "--app-port", str(app_port),
            "--resources-path", pubsub_resources(tmp_path), "--dapr-grpc-port", str(grpc_port),
            "--dapr-http-port", str(http_port), "--enable-app-health-check",
            "--app-health-probe-interval", "1", "--", *python_app("http_app.py"),
        ),
        tandem_env,
    )
    assert run.wait_for("You're up and running!", timeout=60), run.output()
    assert run.wait_for("health probe from"), run.output()
    assert "token to-the-app" in run.output(), run.output()
    status, meta = http_json(http_port, "/v1.0/metadata")
    assert [(s["topic"], s["type"]) for s in meta["subscriptions"]] == [("payments", "PROGRAMMATIC")], meta
    # /healthz of the sidecar is ready once the app is healthy
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1.0/healthz", timeout=5) as r:
        assert r.status == 204
    # an event published with the SDK reaches the FastAPI subscriber
    publish_with_sdk(tandem_env, http_port, grpc_port, "payments", '{"amount": 12}')
    assert run.wait_for("== APP == payment event com.dapr.event.sent {'amount': 12}"), run.output()
    # and so do the events of a bulk publish (publish_events)
    env = dict(tandem_env, DAPR_HTTP_PORT=str(http_port), DAPR_GRPC_PORT=str(grpc_port))
    out = subprocess.run(python_app("publish_many.py", "pubsub", "payments", "3"), env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    for i in range(3):
        assert run.wait_for(f"== APP == payment event com.dapr.event.sent {{'amount': {i}}}"), run.output()


STORES = {
    "memory": ("state.in-memory", []),
    "cache": ("state.redis", [("redisHost", "127.0.0.1:6379")]),
    "pg": (
        "state.postgresql",
        [("connectionString", "host=127.0.0.1 user=postgres dbname=test"), ("tableName", "tandem_sdk_state")],
    ),
}


@pytest.mark.parametrize("store", ["statestore", "memory", "cache", "pg"])
def test_state_through_the_python_sdk(store, tmp_path, tandem_env):
    """`statestore` is the embedded default (SQLite under TANDEM_HOME); the
    others are components from a resources dir on the machine's real Redis
    and PostgreSQL."""
    # A fresh app id per run: keys are prefixed with it, so runs never meet.
    app_id = f"stateapp-{os.getpid()}-{store}"
    args = ["run", "--app-id", app_id]
    if store in STORES:
        type_, md = STORES[store]
        res = tmp_path / "res"
        res.mkdir()
        items = "".join(f"  - name: {k}\n    value: \"{v}\"\n" for k, v in md)
        (res / f"{store}.yaml").write_text(
            f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {store}\n"
            f"spec:\n  type: {type_}\n  version: v1\n  metadata:{chr(10) + items if items else ' []'}\n"
        )
        args += ["--resources-path", str(res)]
    out = subprocess.run(
        tandem_cmd(*args, "--", *python_app("client_state.py", store)),
        env=tandem_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"== APP == STATE OK {store}" in out.stdout, out.stdout + out.stderr
    if store == "statestore":
        assert os.path.exists(os.path.join(tandem_env["TANDEM_HOME"], "state.db"))


def test_default_pubsub_connects_two_apps_of_a_run_file(tmp_path, tandem_env):
    """The embedded defaults: a FastAPI subscriber and an SDK publisher in one
    `tandem run -f`, with no resources dir and no broker running."""
    sub_port = free_port()
    run_file = tmp_path / "dapr.yaml"
    run_file.write_text(
        f"""version: 1
apps:
- appID: payments
  appDirPath: {HERE}/apps
  appPort: {sub_port}
  command: ["{sys.executable}", "http_app.py"]
- appID: shop
  appDirPath: {HERE}/apps
  command: ["sh", "-c", "sleep 2; {sys.executable} publish.py pubsub payments '{{\\"amount\\": 99}}'; sleep 2"]
"""
    )
    out = run_file_output(run_file, tandem_env, ["payment event com.dapr.event.sent {'amount': 99}"])
    assert "== APP - payments == payment event com.dapr.event.sent {'amount': 99}" in out, out
    assert os.path.exists(os.path.join(tandem_env["TANDEM_HOME"], "pubsub.db"))


def test_streaming_subscription(tmp_path, tandem_env):
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", "streamer", "--resources-path", pubsub_resources(tmp_path),
            "--", *python_app("streaming_subscriber.py", "pubsub", "ticks", "3"),
        ),
        env=tandem_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "== APP == STREAM OK [0, 1, 2]" in out.stdout, out.stdout + out.stderr
    assert "== APP == retried" in out.stdout, "a RETRY answer brings the event back"
    assert "('ticks', 'STREAMING')" in out.stdout, "listed while open: " + out.stdout


BROKERS = {
    "embedded": ("pubsub.embedded", [("path", "{tmp}/bus.db")]),
    "jetstream": ("pubsub.jetstream", [("natsURL", "nats://127.0.0.1:4222"), ("memoryStorage", "true")]),
    "mqtt3": ("pubsub.mqtt3", [("url", "tcp://127.0.0.1:1883")]),
}


def component_yaml(name, type_, md):
    items = "".join(f"  - name: {k}\n    value: \"{v}\"\n" for k, v in md)
    return (
        f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n"
        f"spec:\n  type: {type_}\n  version: v1\n  metadata:\n{items}"
    )


@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_outbox_through_the_python_sdk(broker, tmp_path, tandem_env):
    """execute_state_transaction on a SQLite store with an outbox: the SDK's
    own streaming subscriber gets one event per upsert, over each broker."""
    topic = f"outbox-{os.getpid()}-{int(time.time() * 1000)}"
    res = tmp_path / "res"
    res.mkdir()
    type_, md = BROKERS[broker]
    md = [(k, v.format(tmp=tmp_path)) for k, v in md]
    (res / "bus.yaml").write_text(component_yaml("bus", type_, md))
    (res / "store.yaml").write_text(
        component_yaml(
            "orders",
            "state.sqlite",
            [("connectionString", str(tmp_path / "state.db")), ("outboxPublishPubsub", "bus"), ("outboxPublishTopic", topic)],
        )
    )
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", f"outbox-{broker}-{os.getpid()}", "--resources-path", str(res),
            "--", *python_app("outbox_app.py", "orders", "bus", topic),
        ),
        env=tandem_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert '== APP == OUTBOX OK [1, 2] {"n": 1}' in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_invoke_method_between_apps_of_a_run_file(protocol, tmp_path, tandem_env):
    """invoke_method from one app to a FastAPI app and to a dapr.ext.grpc
    app, all three started by one `tandem run -f`."""
    run_file = tmp_path / "dapr.yaml"
    http_port, grpc_port = free_port(), free_port()
    run_file.write_text(
        f"""version: 1
apps:
- appID: calc-http
  appDirPath: {HERE}/apps
  appPort: {http_port}
  command: ["{sys.executable}", "http_app.py"]
- appID: calc-grpc
  appDirPath: {HERE}/apps
  appPort: {grpc_port}
  appProtocol: grpc
  command: ["{sys.executable}", "grpc_app.py"]
- appID: client
  appDirPath: {HERE}/apps
  command: ["sh", "-c", "sleep 3; {sys.executable} invoke.py"]
"""
    )
    needles = ["PROTO" if protocol == "grpc" else "INVOKE", "Traceback"]
    out = run_file_output(run_file, dict(tandem_env, DAPR_API_METHOD_INVOCATION_PROTOCOL=protocol), needles)
    expected = f"INVOKE {protocol} {{'sum': 5, 'caller': 'client'}} {{'product': 20}}"
    assert expected in out, out
    if protocol == "grpc":
        assert "PROTO 5 {'ctype': 'application/x-protobuf', 'len': 7}" in out, out


def test_grpc_proxying_between_plain_grpcio_apps(tmp_path, tandem_env):
    """No Dapr SDK: a grpcio client calls a grpcio server of another app
    through the sidecars, unary and bidirectional streaming."""
    run_file = tmp_path / "dapr.yaml"
    run_file.write_text(
        f"""version: 1
apps:
- appID: echo-grpc
  appDirPath: {HERE}/apps
  appPort: {free_port()}
  appProtocol: grpc
  command: ["{sys.executable}", "grpc_echo_server.py"]
- appID: client
  appDirPath: {HERE}/apps
  command: ["sh", "-c", "sleep 3; {sys.executable} grpc_echo_client.py"]
"""
    )
    out = run_file_output(run_file, tandem_env, ["PROXY DONE", "Traceback"])
    assert "SAY hello world from client" in out, out
    assert "CHAT ['echo a', 'echo b', 'echo c']" in out, out
    assert "NOBODY NOT_FOUND" in out, out


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_js_sdk_invokes_an_app_of_a_run_file(protocol, tmp_path, tandem_env):
    run_file = tmp_path / "dapr.yaml"
    run_file.write_text(
        f"""version: 1
apps:
- appID: calc-http
  appDirPath: {HERE}/apps
  appPort: {free_port()}
  command: ["{sys.executable}", "http_app.py"]
- appID: jsclient
  appDirPath: {HERE}/js
  command: ["sh", "-c", "sleep 3; node invoke.cjs {protocol}"]
"""
    )
    out = run_file_output(run_file, tandem_env, ["JS INVOKE", "JS FAILED"])
    assert f"JS INVOKE {protocol} 42 jsclient" in out, out


def test_bindings_locks_and_configuration_through_the_python_sdk(tmp_path, tandem_env):
    files = tmp_path / "files"
    res = tmp_path / "res"
    res.mkdir()
    (res / "components.yaml").write_text(
        "\n---\n".join(
            [
                component_yaml("files", "bindings.localstorage", {"rootPath": str(files)}.items()),
                component_yaml("locks", "lock.redis", {"redisHost": "127.0.0.1:6379"}.items()),
                component_yaml("config", "configuration.redis", {"redisHost": "127.0.0.1:6379"}.items()),
            ]
        )
    )
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", f"bindapp-{os.getpid()}", "--resources-path", str(res), "--",
            *python_app("client_bindings_lock_config.py", f"sdk-{os.getpid()}-{time.time_ns()}"),
        ),
        env=tandem_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ["BINDING OK", "LOCK OK", "CONFIGURATION OK"]:
        assert f"== APP == {line}" in out.stdout, out.stdout + out.stderr


def test_grpc_app_takes_an_input_binding(tmp_path, tandem_env, background):
    res = tmp_path / "res"
    res.mkdir()
    (res / "ticks.yaml").write_text(component_yaml("ticks", "bindings.cron", {"schedule": "@every 1s"}.items()))
    # Not listed by the app's ListInputBindings: never delivered.
    (res / "other.yaml").write_text(component_yaml("other", "bindings.cron", {"schedule": "@every 1s"}.items()))
    app_port = free_port()
    run = background(
        tandem_cmd(
            "run", "--app-id", "bindgrpc", "--app-port", str(app_port), "--app-protocol", "grpc",
            "--resources-path", str(res), "--", *python_app("grpc_binding_app.py"),
        ),
        tandem_env,
    )
    end = time.time() + 15
    while run.output().count("== APP == tick UTC") < 2 and time.time() < end:
        time.sleep(0.1)
    assert run.output().count("== APP == tick UTC") >= 2, run.output()
    # The sidecar asked the app (ListInputBindings) and left `other` unread.
    assert run.wait_for("does not take this binding's events"), run.output()
    assert "binding=other" in next(l for l in run.lines if "does not take" in l), run.output()


DEAD_LETTER_BROKERS = dict(
    BROKERS,
    redis=("pubsub.redis", [("redisHost", "127.0.0.1:6379")]),
    rabbitmq=("pubsub.rabbitmq", [("connectionString", "amqp://guest:guest@127.0.0.1:5672")]),
    memory=("pubsub.in-memory", []),
)


@pytest.mark.parametrize("app", ["grpc", "http"])
@pytest.mark.parametrize("broker", sorted(DEAD_LETTER_BROKERS))
def test_dead_letter_reaches_the_apps_own_dead_letter_handler(broker, app, tmp_path, tandem_env, background):
    """The SDKs' dead-letter example: the handler of a topic answers RETRY,
    the subscription names a dead-letter topic, and the same app handles that
    topic. The event reaches the dead-letter handler with the dead-letter
    topic as its topic and the original topic in its `topic` extension."""
    topic = f"dl-{broker}-{app}-{os.getpid()}-{int(time.time() * 1000)}"
    res = tmp_path / "res"
    res.mkdir()
    type_, md = DEAD_LETTER_BROKERS[broker]
    md = [(k, v.format(tmp=tmp_path)) for k, v in md]
    (res / "bus.yaml").write_text(component_yaml("pubsub", type_, md))
    http_port, grpc_port, app_port = free_port(), free_port(), free_port()
    script = "grpc_deadletter_app.py" if app == "grpc" else "http_deadletter_app.py"
    run = background(
        tandem_cmd(
            "run", "--app-id", f"dl-{app}-{broker}", "--app-port", str(app_port), "--app-protocol", app,
            "--resources-path", str(res), "--dapr-grpc-port", str(grpc_port), "--dapr-http-port", str(http_port),
            "--", *python_app(script, "pubsub", topic),
        ),
        tandem_env,
    )
    assert run.wait_for("You're up and running!", timeout=60), run.output()
    time.sleep(1)  # consumer groups and queues are bound asynchronously
    publish_with_sdk(tandem_env, http_port, grpc_port, topic, '{"order": 9}')
    assert run.wait_for("== APP == first try on", timeout=30), run.output()
    assert run.wait_for("== APP == dead letter via", timeout=30), run.output()
    line = next(l for l in run.output().splitlines() if "dead letter via" in l)
    assert line.endswith(f"dead letter via {topic}-dead originally {topic} {{'order': 9}}"), run.output()


def test_quickstart_jobs_javascript_http_with_run_f_dot(tmp_path, tandem_env):
    """Dapr's jobs quickstart (JavaScript, HTTP) in its shape, run as its
    README runs it: `tandem run -f .` on its dapr.yaml (fixed ports,
    `schedulerHostAddress: localhost`, `npm run start`); the scheduler app
    schedules jobs for job-service through job-service's sidecar, and
    job-service's `POST /job/<name>` handler prints the lines the README
    matches."""
    import shutil
    import signal

    root = tmp_path / "quickstarts"
    shutil.copytree(os.path.join(HERE, "quickstart"), root)
    app_dir = root / "jobs" / "javascript" / "http"
    proc = subprocess.Popen(
        tandem_cmd("run", "-f", "."), cwd=app_dir, env=tandem_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = ""
    try:
        deadline = time.time() + 90
        while time.time() < deadline and "Executing maintenance job: Limb Calibration" not in out:
            line = proc.stdout.readline()
            if not line:
                break
            out += line
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        out += rest
    lines = out.splitlines()
    for want in [
        "== APP - job-scheduler == Job Scheduled: R2-D2",
        "== APP - job-scheduler == Job Scheduled: C-3PO",
        "== APP - job-service == Received job request...",
        "== APP - job-service == Starting droid: R2-D2",
        "== APP - job-service == Executing maintenance job: Oil Change",
        "== APP - job-service == Starting droid: C-3PO",
        "== APP - job-service == Executing maintenance job: Limb Calibration",
    ]:
        assert want in lines, out
    details = [l for l in lines if l.startswith("== APP - job-scheduler == Job details: ")]
    assert len(details) == 2 and '"name":"R2-D2"' in details[0] and '"dueTime":"2s"' in details[0], out
    # Each job fired once: dueTime jobs without a schedule run one time.
    assert out.count("Executing maintenance job: Oil Change") == 1, out


def test_quickstart_pub_sub_with_run_f_dot(tmp_path, tandem_env):
    """Dapr's pub/sub quickstart as its README runs it: `dapr run -f .` (here
    `tandem run -f .`) in the folder holding dapr.yaml; a plain Flask
    subscriber and an official-SDK publisher; a Redis pub/sub component and
    a resiliency file in a shared `components` folder three levels up.
    Nothing in the folder is changed for tandem."""
    import shutil
    import signal

    root = tmp_path / "quickstarts"
    shutil.copytree(os.path.join(HERE, "quickstart"), root)
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "DEL", "orders"], check=False, capture_output=True)
    # The quickstart's `python3` is the one with the SDK and Flask installed.
    env = dict(tandem_env, PATH=os.path.dirname(sys.executable) + os.pathsep + tandem_env["PATH"])
    app_dir = root / "pub_sub" / "python" / "sdk"
    proc = subprocess.Popen(
        tandem_cmd("run", "-f", "."), cwd=app_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = ""
    try:
        deadline = time.time() + 90
        # Every order received, and the publisher's own last line printed
        # (it prints after its publish returns, so it may come second).
        while time.time() < deadline and (
            out.count("Subscriber received") < 10 or 'Published data: {"orderId": 10}' not in out
        ):
            line = proc.stdout.readline()
            if not line:
                break
            out += line
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl+C
        rest, _ = proc.communicate(timeout=30)
        out += rest
    assert proc.returncode == 0, out
    lines = out.splitlines()
    for app in ["order-processor-sdk", "checkout-sdk"]:
        logs = app_dir / ("order-processor" if app.startswith("order") else "checkout") / ".dapr" / "logs"
        assert f'ℹ️  Validating config and starting app "{app}"' in lines, out
        assert any(l.startswith(f'ℹ️  Started Dapr with app id "{app}". HTTP Port: ') and ". gRPC Port: " in l for l in lines), out
        assert f"ℹ️  Writing log files to directory : {logs}" in lines, out
        assert any(f.name.startswith(f"{app}_daprd_") for f in logs.iterdir()), list(logs.iterdir())
    for i in range(1, 11):
        assert f'== APP - checkout-sdk == Published data: {{"orderId": {i}}}' in lines, out
        assert f'== APP - order-processor-sdk == Subscriber received : {{"orderId": {i}}}' in lines, out
    assert "ℹ️  Received signal to stop Dapr and app processes. Shutting down Dapr and app processes." in lines, out


SDK_INTEGRATION_RESOURCES = {
    # The Python SDK's tests/integration/resources, as its files spell them
    # (paths relative to the sidecar's working directory).
    "conversation_echo.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: echo\nspec:\n  type: conversation.echo\n  version: v1\n",
    "conversation_ollama.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: ollama\nspec:\n  type: conversation.ollama\n  version: v1\n  metadata:\n    - name: model\n      value: llama3.2:latest",
    "cryptostore.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: cryptostore\nspec:\n  type: crypto.dapr.localstorage\n  version: v1\n  metadata:\n    - name: path\n      value: ./keys\n",
    "localbinding.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: localbinding\nspec:\n  type: bindings.localstorage\n  version: v1\n  metadata:\n    - name: rootPath\n      value: ./.binding-data\n",
    "localsecretstore.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: localsecretstore\nspec:\n  type: secretstores.local.file\n  metadata:\n  - name: secretsFile\n    value: secrets.json\n  - name: nestedSeparator\n    value: \":\"\n",
    "lockstore.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: lockstore\nspec:\n  type: lock.redis\n  metadata:\n  - name: redisHost\n    value: localhost:6379\n  - name: redisPassword\n    value: \"\"\n",
}


def test_conversation_through_the_python_sdk(tmp_path, tandem_env):
    """The SDK's own integration resources folder, every component of it
    loaded; its echo component answers the SDK's conversation calls."""
    res = tmp_path / "resources"
    res.mkdir()
    for name, text in SDK_INTEGRATION_RESOURCES.items():
        (res / name).write_text(text)
    (tmp_path / "keys").mkdir()
    (tmp_path / "secrets.json").write_text('{"secretKey": "secretValue"}')
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", f"convapp-{os.getpid()}", "--resources-path", "./resources", "--",
            *python_app("client_conversation.py"),
        ),
        env=tandem_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "== APP == COMPONENTS cryptostore echo localbinding localsecretstore lockstore ollama" in out.stdout, out.stdout
    for line in ["ALPHA1 OK", "ALPHA2 OK", "ERRORS OK"]:
        assert f"== APP == {line}" in out.stdout, out.stdout + out.stderr


@pytest.fixture
def crypto_folder(tmp_path):
    """The SDK example's layout: `components/` with the localstorage
    component at `./keys`, keys made with openssl as its README says."""
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096",
                    "-out", str(keys / "rsa-private-key.pem")], check=True, capture_output=True)
    subprocess.run(["openssl", "rand", "-out", str(keys / "symmetric-key-256"), "32"], check=True)
    # For the subtle API: EC and Ed25519 keys in the forms openssl writes
    # (PKCS#8, SEC1, a public key alone) and a P-521 key as a JWK.
    for cmd in (
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec-p256.pem"],
        ["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "ec-p384-sec1.pem"],
        ["genpkey", "-algorithm", "ed25519", "-out", "ed25519.pem"],
        ["pkey", "-in", "rsa-private-key.pem", "-pubout", "-out", "rsa-public-key.pem"],
    ):
        subprocess.run(["openssl", *cmd], check=True, capture_output=True, cwd=keys)
    from cryptography.hazmat.primitives.asymmetric import ec

    n = ec.generate_private_key(ec.SECP521R1()).private_numbers()
    b64 = lambda v: base64.urlsafe_b64encode(v.to_bytes(66, "big")).rstrip(b"=").decode()
    (keys / "ec-p521.json").write_text(json.dumps({
        "kty": "EC", "crv": "P-521", "x": b64(n.public_numbers.x), "y": b64(n.public_numbers.y), "d": b64(n.private_value),
    }))
    components = tmp_path / "components"
    components.mkdir()
    (components / "crypto-localstorage.yaml").write_text(
        """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: crypto-localstorage
spec:
  type: crypto.dapr.localstorage
  version: v1
  metadata:
    - name: path
      value: ./keys
"""
    )
    return tmp_path


def test_crypto_through_the_python_sdk(crypto_folder, tandem_env):
    env = dict(tandem_env, PYTHONPATH=os.path.join(HERE, "apps"))
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", f"cryptoapp-{os.getpid()}", "--resources-path", "./components", "--",
            *python_app("client_crypto.py"),
        ),
        env=env,
        cwd=crypto_folder,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ["RSA OK", "AES OK", "INTEROP OK", "TAMPER OK"]:
        assert f"== APP == {line}" in out.stdout, out.stdout + out.stderr


def test_subtle_crypto_through_the_python_sdks_grpc_stubs(crypto_folder, tandem_env):
    """The subtle RPCs through the SDK's own generated stubs (its field
    numbers), every answer checked with the `cryptography` package."""
    env = dict(tandem_env, PYTHONPATH=os.path.join(HERE, "apps"))
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", f"subtle-{os.getpid()}", "--resources-path", "./components", "--",
            *python_app("client_subtle.py"),
        ),
        env=env,
        cwd=crypto_folder,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ["GETKEY OK", "SIGN OK", "ENCRYPT OK", "WRAP OK", "ERRORS OK"]:
        assert f"== APP == {line}" in out.stdout, out.stdout + out.stderr


def test_jobs_through_the_python_sdk(tmp_path, tandem_env):
    """schedule_job / get_job / delete_job from DaprClient and a
    dapr.ext.grpc app's @app.job_event, under `tandem run`."""
    port = free_port()
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", f"jobs-{os.getpid()}", "--app-port", str(port), "--app-protocol", "grpc", "--",
            *python_app("jobs_app.py"),
        ),
        env=tandem_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert "== APP == JOBS OK" in out.stdout, out.stdout + out.stderr


def test_crypto_through_the_js_sdk(crypto_folder, tandem_env):
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", f"jscrypto-{os.getpid()}", "--resources-path", "./components", "--",
            "node", os.path.join(HERE, "js", "crypto.cjs"),
        ),
        env=tandem_env,
        cwd=crypto_folder,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "== APP == JS CRYPTO OK" in out.stdout, out.stdout + out.stderr


def test_actors_through_the_python_sdk(tmp_path, tandem_env, background):
    """A FastAPI actor host (dapr.ext.fastapi.DaprActor) under `tandem run`,
    called by an ActorProxy client under a second `tandem run`: the call
    crosses from the client's sidecar to the host's; concurrent calls take
    turns, state persists, a timer and a reminder fire and stop."""
    port = free_port()
    host = background(
        tandem_cmd(
            "run", "--app-id", f"actorhost-{os.getpid()}", "--app-port", str(port), "--",
            *python_app("actor_host.py", str(port)),
        ),
        tandem_env,
    )
    assert host.wait_for("hosting actor types", timeout=60), host.output()
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", f"actorclient-{os.getpid()}", "--",
            *python_app("actor_client.py"),
        ),
        env=tandem_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "== APP == ACTORS OK" in out.stdout, out.stdout + out.stderr + host.output()


def test_actors_hosted_over_the_grpc_stream(tmp_path, tandem_env, background):
    """The Python SDK's ActorGrpcHost (a gRPC app that opens
    SubscribeActorEventsAlpha1 and serves no port for actors) under `tandem
    run --app-protocol grpc`, called by the same ActorProxy client as the
    HTTP host: turns, state, a timer and a reminder, all over the stream."""
    port = free_port()
    host = background(
        tandem_cmd(
            "run", "--app-id", f"grpcactors-{os.getpid()}", "--app-port", str(port),
            "--app-protocol", "grpc", "--",
            *python_app("actor_grpc_host.py"),
        ),
        tandem_env,
    )
    assert host.wait_for("GRPC ACTOR HOST REGISTERED", timeout=60), host.output()
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", f"grpcactorclient-{os.getpid()}", "--",
            *python_app("actor_client.py"),
        ),
        env=tandem_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "== APP == ACTORS OK" in out.stdout, out.stdout + out.stderr + host.output()
    assert "hosts actor types over a stream" in host.output(), host.output()


def test_actors_through_the_js_sdk(tmp_path, tandem_env):
    """`tandem run -f` with the Python actor host and a JS app whose
    ActorProxyBuilder calls it: concurrent calls take turns."""
    run_file = tmp_path / "dapr.yaml"
    run_file.write_text(
        f"""version: 1
apps:
- appID: counter-host
  appDirPath: {HERE}/apps
  appPort: {free_port()}
  command: ["{sys.executable}", "actor_host.py"]
- appID: jsactors
  appDirPath: {HERE}/js
  command: ["sh", "-c", "sleep 3; node actors.cjs"]
"""
    )
    out = run_file_output(run_file, tandem_env, ["JS ACTORS", "JS FAILED"])
    assert "JS ACTORS 10" in out, out


def test_workflows_through_the_python_sdk(tmp_path, tandem_env):
    """A WorkflowRuntime app and DaprWorkflowClient (the Python SDK's own
    classes) under `tandem run` with no app port, as Dapr's workflow
    quickstarts run: activities, fan-out, timers, external events, child
    workflows, retry policies, continue-as-new, pause/resume,
    terminate/purge, a failing activity and the HTTP workflow API."""
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", f"workflows-{os.getpid()}", "--",
            *python_app("workflow_app.py"),
        ),
        env=tandem_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "== APP == WORKFLOWS OK" in out.stdout, out.stdout + out.stderr


def test_a_workflow_app_killed_mid_activity_gets_it_again(tmp_path, tandem_env):
    """The app process dies inside an activity (os._exit, no answer) and
    is started again under the same sidecar: the activity is handed to the
    new worker and the workflow completes with its result."""
    mark = tmp_path / "mark"
    script = f"{sys.executable} {HERE}/apps/workflow_crash.py {mark}"
    out = subprocess.run(
        tandem_cmd(
            "run", "--app-id", f"wfcrash-{os.getpid()}", "--",
            "sh", "-c", f"{script}; {script}",
        ),
        env=tandem_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert "dying mid-activity" in out.stdout, out.stdout + out.stderr
    assert "CRASH RECOVERED True runs=1" in out.stdout, out.stdout + out.stderr


def test_workflows_through_the_js_sdk(tmp_path, tandem_env):
    """`tandem run -f` with a JS app using the JS SDK's WorkflowRuntime
    and DaprWorkflowClient (whose older protocol sends no completion
    tokens): activities, a timer, an event, a child, pause/resume,
    terminate and purge."""
    run_file = tmp_path / "dapr.yaml"
    run_file.write_text(
        f"""version: 1
apps:
- appID: jsworkflows
  appDirPath: {HERE}/js
  command: ["node", "workflows.cjs"]
"""
    )
    out = run_file_output(run_file, tandem_env, ["JS WORKFLOWS OK", "JS FAILED"])
    assert "JS WORKFLOWS OK" in out, out


def test_a_workflow_across_two_apps(tmp_path, tandem_env):
    """`tandem run -f` with two workflow apps: the caller's workflow calls
    an activity and a child workflow on the callee by app id (the SDK's
    `app_id=`), routed to the callee's sidecar and workers and answered
    back to the caller's instance."""
    run_file = tmp_path / "dapr.yaml"
    run_file.write_text(
        f"""version: 1
apps:
- appID: wfcallee
  appDirPath: {HERE}/apps
  command: ["{sys.executable}", "workflow_xapp.py", "callee", "wfcaller"]
- appID: wfcaller
  appDirPath: {HERE}/apps
  command: ["sh", "-c", "sleep 2; {sys.executable} workflow_xapp.py caller wfcallee"]
"""
    )
    out = run_file_output(run_file, tandem_env, ["XAPP OK", "XAPP FAILED"])
    assert "XAPP OK" in out, out
