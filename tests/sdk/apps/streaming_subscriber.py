"""A streaming subscriber (SubscribeTopicEventsAlpha1) with the Dapr Python
SDK: `streaming_subscriber.py <pubsub> <topic> <n>`. Publishes n events
itself, retries the first one once, then acknowledges everything."""
import json
import os
import sys
import urllib.request

from dapr.clients import DaprClient

pubsub, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with DaprClient() as d:
    sub = d.subscribe(pubsub_name=pubsub, topic=topic)
    print("subscribed", flush=True)
    for i in range(n):
        d.publish_event(pubsub, topic, json.dumps({"i": i}), data_content_type="application/json")
    seen, retried = set(), False
    while len(seen) < n:
        msg = sub.next_message()
        if msg is None:
            continue
        data = msg.data()
        if not retried:
            retried = True
            sub.respond_retry(msg)
            print("retried", data, flush=True)
            continue
        seen.add(data["i"])
        sub.respond_success(msg)
        print("got", data, flush=True)
    # The SDK's metadata wrapper leaves subscriptions out; read the HTTP API.
    url = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}/v1.0/metadata"
    with urllib.request.urlopen(url, timeout=5) as r:
        subs = json.loads(r.read()).get("subscriptions", [])
    print("metadata", [(s["topic"], s["type"]) for s in subs], flush=True)
    sub.close()
print("STREAM OK", sorted(seen), flush=True)
