"""A gRPC app written with dapr.ext.grpc: one subscription and a health
check that reports each call."""
import os

from dapr.ext.grpc import App

app = App()


@app.subscribe(pubsub_name="pubsub", topic="orders", dead_letter_topic="orders-dead")
def orders(event) -> None:
    print("event", event.data(), flush=True)


def health():
    print("health check called", flush=True)


app.register_health_check(health)
app.run(int(os.environ["APP_PORT"]))
