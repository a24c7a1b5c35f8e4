"""A gRPC app written with dapr.ext.grpc that takes one input binding."""
import os

from dapr.ext.grpc import App, BindingRequest

app = App()


@app.binding("ticks")
def ticks(request: BindingRequest) -> None:
    print("tick", request.binding_metadata.get("timeZone"), flush=True)


app.run(int(os.environ["APP_PORT"]))
