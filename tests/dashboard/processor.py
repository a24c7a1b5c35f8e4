"""A Dapr app as users write one with the Python SDK, nothing of tandem's:
it hosts the `Counter` actor (the FastAPI extension) and runs workflows
(WorkflowRuntime). Once up it calls three counters through ActorProxy and
starts three `order_flow` workflows and one that fails, so the dashboard
has actors and workflow instances (with their history) to show."""
import asyncio
import os
import threading
import time

import uvicorn
from fastapi import FastAPI

import dapr.ext.workflow as wf
from dapr.actor import Actor, ActorId, ActorInterface, ActorProxy, actormethod
from dapr.ext.fastapi import DaprActor


class CounterInterface(ActorInterface):
    @actormethod(name="Add")
    async def add(self, n: int) -> int: ...


class Counter(Actor, CounterInterface):
    async def add(self, n: int) -> int:
        has, v = await self._state_manager.try_get_state("count")
        v = (v if has else 0) + n
        await self._state_manager.set_state("count", v)
        await self._state_manager.save_state()
        return v


wfr = wf.WorkflowRuntime()


@wfr.activity(name="reserve")
def reserve(ctx, order):
    return f"reserved {order}"


@wfr.activity(name="charge")
def charge(ctx, order):
    if order == "bad":
        raise ValueError("card declined")
    return f"charged {order}"


@wfr.workflow(name="order_flow")
def order_flow(ctx: wf.DaprWorkflowContext, order):
    a = yield ctx.call_activity(reserve, input=order)
    b = yield ctx.call_activity(charge, input=order)
    return [a, b]


app = FastAPI()
actor = DaprActor(app)


@app.on_event("startup")
async def startup():
    await actor.register_actor(Counter)
    threading.Thread(target=work, daemon=True).start()


def work():
    time.sleep(1)
    wfr.start()
    client = wf.DaprWorkflowClient()
    run = str(int(time.time()))
    for i, order in enumerate(["o-1", "o-2", "o-3", "bad"]):
        client.schedule_new_workflow(order_flow, input=order, instance_id=f"order-{order}-{run}")

    async def counters():
        for name in ("c1", "c2", "c3"):
            await ActorProxy.create("Counter", ActorId(name), CounterInterface).Add(1)

    for _ in range(30):
        try:
            asyncio.run(counters())
            print("PROCESSOR READY", flush=True)
            return
        except Exception as e:  # the actor host may not be placed yet
            print(f"actors not ready: {e}", flush=True)
            time.sleep(1)


uvicorn.run(app, host="127.0.0.1", port=int(os.environ["APP_PORT"]), log_level="warning")
