"""An actor host as the Python SDK's FastAPI extension makes one: the
Counter actor (counter_actor.py) over HTTP callbacks. argv: port (else
$APP_PORT)."""
import os
import sys

import uvicorn
from fastapi import FastAPI

from dapr.ext.fastapi import DaprActor

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from counter_actor import Counter  # noqa: E402


app = FastAPI()
actor = DaprActor(app)


@app.on_event("startup")
async def startup():
    await actor.register_actor(Counter)


port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ["APP_PORT"])
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
