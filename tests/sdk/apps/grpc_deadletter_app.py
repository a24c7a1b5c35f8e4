"""A dapr.ext.grpc app as the SDK's pubsub example writes it: the handler of
`<topic>` always answers RETRY; a second handler takes `<topic>-dead`, the
subscription's dead-letter topic. `grpc_deadletter_app.py <pubsub> <topic>`."""
import os
import sys

from dapr.clients.grpc._response import TopicEventResponse
from dapr.ext.grpc import App, SubscriptionMessage

pubsub, topic = sys.argv[1:3]
app = App()


@app.subscribe(pubsub_name=pubsub, topic=topic, dead_letter_topic=topic + "-dead")
def failing(event: SubscriptionMessage) -> TopicEventResponse:
    print("first try on", event.topic(), flush=True)
    return TopicEventResponse("retry")


@app.subscribe(pubsub_name=pubsub, topic=topic + "-dead")
def dead(event: SubscriptionMessage) -> TopicEventResponse:
    print("dead letter via", event.topic(), "originally", event.extensions().get("topic"), event.data(), flush=True)
    return TopicEventResponse("success")


app.run(int(os.environ["APP_PORT"]))
