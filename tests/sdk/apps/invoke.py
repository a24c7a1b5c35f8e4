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

if os.environ.get("DAPR_API_METHOD_INVOCATION_PROTOCOL", "http") == "grpc":
    # A custom protobuf message: the Any keeps its type both ways; an HTTP
    # app sees application/x-protobuf.
    from google.protobuf.wrappers_pb2 import Int64Value, StringValue

    with DaprClient() as d:
        r = d.invoke_method("calc-grpc", "echo_proto", data=StringValue(value="hello"))
        out = Int64Value()
        r.unpack(out)
        h = d.invoke_method("calc-http", "proto", data=StringValue(value="hello"), http_verb="POST")
        print("PROTO", out.value, h.json(), flush=True)
