// Actors with the official Dapr JS SDK's ActorProxyBuilder: calls the
// Python host's Counter actors (tests/sdk/apps/actor_host.py) through this
// app's sidecar; prints JS ACTORS <count> when every check passed.
const { DaprClient, ActorProxyBuilder, ActorId, CommunicationProtocolEnum } = require("@dapr/dapr");

// The actor type is the class's name.
class Counter {
  async AddMany(...ns) {}
  async Counts() {}
}

async function main() {
  const client = new DaprClient({
    daprHost: "127.0.0.1",
    daprPort: process.env.DAPR_HTTP_PORT,
    communicationProtocol: CommunicationProtocolEnum.HTTP,
  });
  const builder = new ActorProxyBuilder(Counter, client);
  const a = builder.build(new ActorId("js-1"));
  // The JS proxy sends its arguments as a JSON list.
  await Promise.all([a.AddMany(1, 2), a.AddMany(3), a.AddMany(4)]);
  const counts = await a.Counts();
  const parsed = typeof counts === "string" ? JSON.parse(counts) : counts;
  if (parsed.count !== 10) throw new Error(`count ${JSON.stringify(parsed)}`);
  console.log(`JS ACTORS ${parsed.count}`);
  await client.stop();
}

main().catch((e) => {
  console.error("JS FAILED", e);
  process.exit(1);
});
