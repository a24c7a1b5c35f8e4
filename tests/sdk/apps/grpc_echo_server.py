"""A plain grpcio server, no Dapr SDK and no generated code: `echo.Echo`
with a unary `Say` and a bidirectional-streaming `Chat` over raw bytes."""
import os
from concurrent import futures

import grpc


def say(request, context):
    caller = dict(context.invocation_metadata()).get("dapr-caller-app-id", "?")
    return b"hello " + request + b" from " + caller.encode()


def chat(requests, context):
    for message in requests:
        yield b"echo " + message


handler = grpc.method_handlers_generic_handler(
    "echo.Echo",
    {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    },
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{os.environ['APP_PORT']}")
server.start()
server.wait_for_termination()
