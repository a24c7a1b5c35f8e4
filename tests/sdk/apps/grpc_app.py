"""A gRPC app written with dapr.ext.grpc: one subscription, a method
(multiply) to invoke, and a health check that reports each call."""
import os

import json

from dapr.ext.grpc import App, InvokeMethodRequest, InvokeMethodResponse, SubscriptionMessage

from google.protobuf.wrappers_pb2 import Int64Value, StringValue

app = App()


@app.method(name="echo_proto")
def echo_proto(request: InvokeMethodRequest) -> InvokeMethodResponse:
    # The caller packed a StringValue; its type must arrive with it.
    assert request.is_proto(), "the request's Any lost its type_url"
    msg = StringValue()
    request.unpack(msg)
    resp = InvokeMethodResponse()
    resp.pack(Int64Value(value=len(msg.value)))
    return resp


@app.method(name="multiply")
def multiply(request: InvokeMethodRequest) -> InvokeMethodResponse:
    body = json.loads(request.text())
    return InvokeMethodResponse(json.dumps({"product": body["a"] * body["b"]}).encode(), "application/json")


@app.subscribe(pubsub_name="pubsub", topic="orders", dead_letter_topic="orders-dead")
def orders(event: SubscriptionMessage) -> None:
    print("event", event.type(), event.topic(), event.data(), event.extensions().get("pubsubname"), flush=True)


def health():
    print("health check called", flush=True)


app.register_health_check(health)
app.run(int(os.environ["APP_PORT"]))
