"""Bulk publish through the Dapr Python SDK: `publish_many.py <pubsub> <topic> <n>`."""
import json
import sys

from dapr.clients import DaprClient

pubsub, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with DaprClient() as d:
    resp = d.publish_events(
        pubsub_name=pubsub,
        topic_name=topic,
        data=[json.dumps({"amount": i}) for i in range(n)],
        data_content_type="application/json",
    )
    assert not resp.failed_entries, resp.failed_entries
print("bulk published", n, flush=True)
