# The quickstart's publisher, with the official Dapr Python SDK.
import json
import time

from dapr.clients import DaprClient

with DaprClient() as client:
    for i in range(1, 11):
        order = {"orderId": i}
        client.publish_event(
            pubsub_name="orderpubsub",
            topic_name="orders",
            data=json.dumps(order),
            data_content_type="application/json",
        )
        print("Published data: " + json.dumps(order), flush=True)
        time.sleep(0.2)
