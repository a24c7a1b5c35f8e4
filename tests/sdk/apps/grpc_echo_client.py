"""A plain grpcio client that reaches another app's gRPC server through its
own sidecar's gRPC port with `dapr-app-id` metadata (gRPC proxying)."""
import os

import grpc

channel = grpc.insecure_channel(f"127.0.0.1:{os.environ['DAPR_GRPC_PORT']}")
to_echo = (("dapr-app-id", "echo-grpc"),)
say = channel.unary_unary("/echo.Echo/Say")
print("SAY", say(b"world", metadata=to_echo, timeout=10).decode(), flush=True)
chat = channel.stream_stream("/echo.Echo/Chat")
replies = [m.decode() for m in chat(iter([b"a", b"b", b"c"]), metadata=to_echo, timeout=10)]
print("CHAT", replies, flush=True)
try:
    say(b"x", metadata=(("dapr-app-id", "nobody"),), timeout=10)
except grpc.RpcError as e:
    print("NOBODY", e.code().name, flush=True)
print("PROXY DONE", flush=True)
