"""Service invocation with the Dapr Python SDK: `invoke.py` calls `add` on
the FastAPI app `calc-http` and `multiply` on the dapr.ext.grpc app
`calc-grpc` (over HTTP or gRPC, as DAPR_API_METHOD_INVOCATION_PROTOCOL says)."""
import json
import os

from dapr.clients import DaprClient

with DaprClient() as d:
    add = d.invoke_method("calc-http", "add", data=json.dumps({"a": 2, "b": 3}), http_verb="POST", content_type="application/json")
    mul = d.invoke_method("calc-grpc", "multiply", data=json.dumps({"a": 4, "b": 5}), http_verb="POST", content_type="application/json")
    print("INVOKE", os.environ.get("DAPR_API_METHOD_INVOCATION_PROTOCOL", "http"), add.json(), mul.json(), flush=True)
