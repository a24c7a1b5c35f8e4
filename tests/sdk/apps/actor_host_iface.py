"""The Counter actor's interface, shared by actor_host.py and actor_client.py."""
from dapr.actor import ActorInterface, actormethod


class CounterInterface(ActorInterface):
    @actormethod(name="Add")
    async def add(self, n: int) -> int: ...

    @actormethod(name="AddMany")
    async def add_many(self, ns: list) -> int: ...

    @actormethod(name="Counts")
    async def counts(self) -> dict: ...

    @actormethod(name="StartTimer")
    async def start_timer(self) -> None: ...

    @actormethod(name="StartReminder")
    async def start_reminder(self) -> None: ...

    @actormethod(name="StopAll")
    async def stop_all(self) -> None: ...
