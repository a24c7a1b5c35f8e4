"""Publishes through the Dapr Python SDK: `publish.py <pubsub> <topic> <json>`."""
import sys

from dapr.clients import DaprClient

pubsub, topic, payload = sys.argv[1:4]
with DaprClient() as d:
    d.publish_event(pubsub_name=pubsub, topic_name=topic, data=payload, data_content_type="application/json")
print("published", topic, flush=True)
