"""The Counter actor the SDK tests host (over HTTP callbacks in
actor_host.py, over the gRPC stream in actor_grpc_host.py): state, a timer
and a reminder."""
import datetime

from dapr.actor import Actor, Remindable

from actor_host_iface import CounterInterface


class Counter(Actor, CounterInterface, Remindable):
    async def _bump(self, key: str, n: int) -> int:
        has, v = await self._state_manager.try_get_state(key)
        v = (v if has else 0) + n
        await self._state_manager.set_state(key, v)
        await self._state_manager.save_state()
        return v

    async def add(self, n: int) -> int:
        return await self._bump("count", n)

    async def add_many(self, ns: list) -> int:
        return await self._bump("count", sum(ns))

    async def counts(self) -> dict:
        out = {}
        for k in ("count", "timer", "reminded"):
            has, v = await self._state_manager.try_get_state(k)
            out[k] = v if has else 0
        return out

    async def start_timer(self) -> None:
        await self.register_timer(
            "tick", self.on_tick, {"by": 1},
            datetime.timedelta(milliseconds=100), datetime.timedelta(milliseconds=200),
        )

    async def on_tick(self, state) -> None:
        await self._bump("timer", state["by"])

    async def start_reminder(self) -> None:
        await self.register_reminder(
            "nudge", b"hello",
            datetime.timedelta(milliseconds=100), datetime.timedelta(milliseconds=300),
        )

    async def receive_reminder(self, name, state, due_time, period, ttl=None) -> None:
        assert name == "nudge" and state == b"hello", (name, state)
        await self._bump("reminded", 1)

    async def stop_all(self) -> None:
        await self.unregister_timer("tick")
        await self.unregister_reminder("nudge")
