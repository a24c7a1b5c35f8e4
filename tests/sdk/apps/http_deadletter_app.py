"""The same dead-letter pair as grpc_deadletter_app.py, as a FastAPI app with
dapr.ext.fastapi. `http_deadletter_app.py <pubsub> <topic>`."""
import os
import sys

import uvicorn
from dapr.ext.fastapi import DaprApp
from fastapi import FastAPI

pubsub, topic = sys.argv[1:3]
app = FastAPI()
dapr_app = DaprApp(app)


@dapr_app.subscribe(pubsub=pubsub, topic=topic, dead_letter_topic=topic + "-dead")
def failing(event: dict):
    print("first try on", event.get("topic"), flush=True)
    return {"status": "RETRY"}


@dapr_app.subscribe(pubsub=pubsub, topic=topic + "-dead")
def dead(event: dict):
    print("dead letter via", topic + "-dead", "originally", event.get("topic"), event.get("data"), flush=True)
    return {"status": "SUCCESS"}


uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="warning")
