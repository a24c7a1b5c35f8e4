"""An HTTP app written with FastAPI and dapr.ext.fastapi: one subscription,
a method (/add) to invoke, and a /healthz endpoint that reports each probe."""
import os

import uvicorn
from dapr.ext.fastapi import DaprApp
from fastapi import FastAPI, Request

app = FastAPI()
dapr_app = DaprApp(app)


@dapr_app.subscribe(pubsub="pubsub", topic="payments")
def payments(event: dict):
    print("payment event", event.get("type"), event.get("data"), flush=True)
    return {"status": "SUCCESS"}


@app.post("/add")
async def add(request: Request):
    body = await request.json()
    return {"sum": body["a"] + body["b"], "caller": request.headers.get("dapr-caller-app-id")}


@app.post("/proto")
async def proto(request: Request):
    body = await request.body()
    return {"ctype": request.headers.get("content-type"), "len": len(body)}


@app.get("/healthz")
def healthz(request: Request):
    print("health probe from", request.headers.get("user-agent", "?"), "token", request.headers.get("dapr-api-token"), flush=True)
    return {}


uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="warning")
