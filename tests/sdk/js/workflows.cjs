// A workflow app with the official Dapr JS SDK (WorkflowRuntime and
// DaprWorkflowClient, as in Dapr's JS workflow examples): an activity
// chain, a durable timer, an external event, a child workflow, pause and
// resume, terminate and purge. Prints JS WORKFLOWS OK when every check held.
const { WorkflowRuntime, DaprWorkflowClient, WorkflowRuntimeStatus } = require("@dapr/dapr");

const hello = async (_ctx, name) => `hello ${name}`;
const square = async (_ctx, n) => n * n;

const chain = async function* (ctx, name) {
  const a = yield ctx.callActivity(hello, name);
  const b = yield ctx.callActivity(hello, a);
  return b;
};

const child = async function* (ctx, n) {
  const s = yield ctx.callActivity(square, n);
  return s + 1;
};

const parent = async function* (ctx, n) {
  const started = ctx.getCurrentUtcDateTime().getTime();
  yield ctx.createTimer(1);
  const waited = ctx.getCurrentUtcDateTime().getTime() - started;
  const got = yield ctx.waitForExternalEvent("go");
  const kid = yield ctx.callChildWorkflow(child, n);
  return { waited: waited >= 1000, got, kid };
};

const waiter = async function* (ctx) {
  const got = yield ctx.waitForExternalEvent("go");
  return got;
};

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

async function main() {
  const runtime = new WorkflowRuntime();
  runtime
    .registerWorkflow(chain)
    .registerWorkflow(child)
    .registerWorkflow(parent)
    .registerWorkflow(waiter)
    .registerActivity(hello)
    .registerActivity(square);
  await runtime.start();
  const client = new DaprWorkflowClient();
  const run = process.pid;

  let id = await client.scheduleNewWorkflow(chain, "js", `jschain-${run}`);
  let s = await client.waitForWorkflowCompletion(id, true, 60);
  check(s.runtimeStatus === WorkflowRuntimeStatus.COMPLETED, "chain completed");
  check(JSON.parse(s.serializedOutput) === "hello hello js", "chain output");

  id = await client.scheduleNewWorkflow(parent, 4, `jsparent-${run}`);
  await client.waitForWorkflowStart(id, false, 30);
  await client.raiseEvent(id, "go", { n: 1 });
  s = await client.waitForWorkflowCompletion(id, true, 60);
  check(s.runtimeStatus === WorkflowRuntimeStatus.COMPLETED, "parent completed");
  const out = JSON.parse(s.serializedOutput);
  check(out.waited === true && out.got.n === 1 && out.kid === 17, `timer, event and child: ${s.serializedOutput}`);

  id = await client.scheduleNewWorkflow(waiter, null, `jspause-${run}`);
  await client.waitForWorkflowStart(id, false, 30);
  await client.suspendWorkflow(id);
  s = await client.getWorkflowState(id, false);
  check(s.runtimeStatus === WorkflowRuntimeStatus.SUSPENDED, "suspended");
  await client.raiseEvent(id, "go", "later");
  await client.resumeWorkflow(id);
  s = await client.waitForWorkflowCompletion(id, true, 60);
  check(JSON.parse(s.serializedOutput) === "later", "resumed");

  id = await client.scheduleNewWorkflow(waiter, null, `jsterm-${run}`);
  await client.waitForWorkflowStart(id, false, 30);
  await client.terminateWorkflow(id, "enough");
  s = await client.waitForWorkflowCompletion(id, true, 60);
  check(s.runtimeStatus === WorkflowRuntimeStatus.TERMINATED, "terminated");
  check(await client.purgeWorkflow(id), "purged");
  s = await client.getWorkflowState(id, false);
  check(s === undefined, "gone after purge");

  console.log("JS WORKFLOWS OK");
  await client.stop();
  await runtime.stop();
  process.exit(0);
}

main().catch((e) => {
  console.error("JS FAILED", e);
  process.exit(1);
});
