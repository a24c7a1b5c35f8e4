"""Output bindings, distributed locks and configuration through the Dapr
Python SDK (gRPC). argv: the Redis keys prefix for configuration items."""
import subprocess
import sys
import threading

import grpc
from dapr.clients import DaprClient
from dapr.clients.grpc._response import UnlockResponseStatus

prefix = sys.argv[1]


def redis(*args):
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", *args], check=True, capture_output=True)


with DaprClient() as d:
    # Output binding: create, get, an operation the binding does not have.
    r = d.invoke_binding("files", "create", data="hello!", binding_metadata={"fileName": "sdk.txt"})
    assert r.data == b'{"fileName":"sdk.txt"}', r.data
    r = d.invoke_binding("files", "get", binding_metadata={"fileName": "sdk.txt"})
    assert r.data == b"hello!", r.data
    try:
        d.invoke_binding("files", "explode")
        raise SystemExit("an unknown operation was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
        assert "create, get, list, delete" in e.details(), e.details()
    print("BINDING OK", flush=True)

    # Locks in a context manager: held inside, released after.
    resource = f"{prefix}-res"
    with d.try_lock("locks", resource, "alice", expiry_in_seconds=10) as lock:
        assert lock.success
        assert not d.try_lock("locks", resource, "bob", expiry_in_seconds=10).success
        assert d.unlock("locks", resource, "bob").status == UnlockResponseStatus.lock_belongs_to_others
    assert d.unlock("locks", resource, "alice").status == UnlockResponseStatus.lock_does_not_exist
    assert d.try_lock("locks", resource, "bob", expiry_in_seconds=10).success
    assert d.unlock("locks", resource, "bob").status == UnlockResponseStatus.success
    print("LOCK OK", flush=True)

    # Configuration: get, then subscribe and see a change and a deletion.
    key = f"{prefix}-color"
    redis("SET", key, "blue||1")
    got = d.get_configuration("config", [key])
    assert got.items[key].value == "blue" and got.items[key].version == "1", got.items
    changes = []
    changed = threading.Event()

    def handler(sub_id, resp):
        for k, item in resp.items.items():
            changes.append((k, item.value))
        changed.set()

    sub_id = d.subscribe_configuration("config", [key], handler)
    assert sub_id, "a subscription id"
    import time

    time.sleep(0.5)
    redis("SET", key, "green||2")
    assert changed.wait(10), "no change arrived"
    changed.clear()
    redis("DEL", key)
    end = time.time() + 10
    while (key, "") not in changes and time.time() < end:
        time.sleep(0.05)
    assert changes[0] == (key, "green") and (key, "") in changes, changes
    assert d.unsubscribe_configuration("config", sub_id)
    print("CONFIGURATION OK", flush=True)
