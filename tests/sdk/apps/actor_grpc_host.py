"""An actor host as the Python SDK's ActorGrpcHost makes one: the Counter
actor (counter_actor.py) served over the stream the app opens to its
sidecar (SubscribeActorEventsAlpha1); the SDK's own empty gRPC server
listens on $APP_PORT; state, timers and reminders go over gRPC."""
import asyncio
import sys

from dapr.actor.runtime.grpc_host import ActorGrpcHost

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from counter_actor import Counter  # noqa: E402


async def main():
    host = ActorGrpcHost()
    await host.register_actor(Counter)
    async with host:
        print("GRPC ACTOR HOST REGISTERED", flush=True)
        await asyncio.Event().wait()


asyncio.run(main())
