"""Calls the Counter actors of actor_host.py through its own sidecar with
the SDK's ActorProxy; prints ACTORS OK when every check passed."""
import asyncio
import sys
import time

from dapr.actor import ActorId, ActorProxy

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from actor_host_iface import CounterInterface  # noqa: E402


async def main():
    a = ActorProxy.create("Counter", ActorId("a-1"), CounterInterface)
    b = ActorProxy.create("Counter", ActorId("b 2"), CounterInterface)
    # Turns: 50 concurrent adds to one actor all count.
    await asyncio.gather(*(a.Add(1) for _ in range(50)))
    await b.Add(7)
    ca, cb = await a.Counts(), await b.Counts()
    assert ca["count"] == 50, ca
    assert cb["count"] == 7, cb

    await a.StartTimer()
    await a.StartReminder()
    end = time.time() + 20
    while time.time() < end:
        c = await a.Counts()
        if c["timer"] >= 3 and c["reminded"] >= 3:
            break
        await asyncio.sleep(0.2)
    else:
        raise SystemExit(f"timer/reminder did not fire enough: {c}")
    await a.StopAll()
    await asyncio.sleep(0.5)
    settled = await a.Counts()
    await asyncio.sleep(1.0)
    after = await a.Counts()
    assert after["timer"] == settled["timer"], (settled, after)
    assert after["reminded"] == settled["reminded"], (settled, after)
    print("ACTORS OK", after, flush=True)


asyncio.run(main())
