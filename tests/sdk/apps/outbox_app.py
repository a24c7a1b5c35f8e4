"""The transactional outbox with the Dapr Python SDK:
`outbox_app.py <store> <pubsub> <topic>`. Subscribes (streaming), saves two
keys in one transaction, and waits for the two events the outbox publishes."""
import json
import sys
import time

from dapr.clients import DaprClient
from dapr.clients.grpc._request import TransactionalStateOperation

store, pubsub, topic = sys.argv[1], sys.argv[2], sys.argv[3]
with DaprClient() as d:
    sub = d.subscribe(pubsub_name=pubsub, topic=topic)
    d.execute_state_transaction(
        store_name=store,
        operations=[
            TransactionalStateOperation(key="a", data=json.dumps({"n": 1})),
            TransactionalStateOperation(key="b", data=json.dumps({"n": 2})),
        ],
    )
    seen = set()
    deadline = time.time() + 30
    while len(seen) < 2 and time.time() < deadline:
        msg = sub.next_message()
        if msg is None:
            continue
        data = msg.data()
        print("event", msg.type(), data, flush=True)
        seen.add(data["n"])
        sub.respond_success(msg)
    sub.close()
    saved = d.get_state(store, "a").data.decode()
print("OUTBOX OK", sorted(seen), saved, flush=True)
