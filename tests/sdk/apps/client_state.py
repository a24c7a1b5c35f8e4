"""State through the Dapr Python SDK, against the store named in argv[1]."""
import sys

import grpc
from dapr.clients import DaprClient
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions

store = sys.argv[1]


def stale(etag: str) -> str:
    """A wrong ETag of the store's own form (Redis and PostgreSQL use
    numbers; a non-number there is an invalid ETag, not a mismatch)."""
    return str(int(etag) + 1000) if etag.isdigit() else "stale-" + etag

with DaprClient() as d:
    d.save_state(store, "order-1", '{"qty": 2}', state_metadata={"contentType": "application/json"})
    got = d.get_state(store, "order-1")
    assert got.data == b'{"qty": 2}', got.data
    assert got.etag, "an etag comes back"
    print("save/get ok", flush=True)

    # ETag errors surface as ABORTED
    try:
        d.save_state(store, "order-1", "x", etag=stale(got.etag))
        raise SystemExit("a stale etag was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.ABORTED, e.code()
    d.save_state(store, "order-1", "v2", etag=got.etag)
    assert d.get_state(store, "order-1").data == b"v2"
    try:
        d.save_state(store, "order-1", "v3", options=StateOptions(concurrency=Concurrency.first_write))
        raise SystemExit("first-write overwrote an existing key")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.ABORTED, e.code()
    print("etag errors ok", flush=True)

    d.save_bulk_state(store, [StateItem(key="b1", value="one"), StateItem(key="b2", value="two")])
    items = d.get_bulk_state(store, ["b2", "missing", "b1"]).items
    assert [i.key for i in items] == ["b2", "missing", "b1"], items
    assert items[0].data == b"two" and items[2].data == b"one" and items[1].data == b""
    print("bulk ok", flush=True)

    d.execute_state_transaction(
        store,
        [
            TransactionalStateOperation(key="t1", data="alpha"),
            TransactionalStateOperation(key="b1", operation_type=TransactionOperationType.delete),
        ],
    )
    assert d.get_state(store, "t1").data == b"alpha"
    assert d.get_state(store, "b1").data == b""
    try:
        d.execute_state_transaction(
            store,
            [
                TransactionalStateOperation(key="t1", data="beta"),
                TransactionalStateOperation(key="b2", data="x", etag=stale(d.get_state(store, "b2").etag)),
            ],
        )
        raise SystemExit("a failing transaction was applied")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INTERNAL, e.code()
    assert d.get_state(store, "t1").data == b"alpha", "nothing of the failed transaction applied"
    print("transactions ok", flush=True)

    d.delete_state(store, "order-1")
    assert d.get_state(store, "order-1").data == b""
    etag = d.get_state(store, "b2").etag
    try:
        d.delete_state(store, "b2", etag=stale(etag))
        raise SystemExit("a stale delete went through")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.ABORTED, e.code()
    d.delete_state(store, "b2", etag=etag)
    print("delete ok", flush=True)

print("STATE OK", store, flush=True)
