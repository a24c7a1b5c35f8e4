// An app that uses the official Dapr JS SDK client over HTTP or gRPC:
// `node client.cjs http|grpc <expected-app-id>`. Ports come from `tandem run`.
const assert = require("node:assert/strict");
const { DaprClient, CommunicationProtocolEnum } = require("@dapr/dapr");

async function main() {
  const [mode, appId] = process.argv.slice(2);
  const grpc = mode === "grpc";
  const client = new DaprClient({
    daprHost: "127.0.0.1",
    daprPort: grpc ? process.env.DAPR_GRPC_PORT : process.env.DAPR_HTTP_PORT,
    communicationProtocol: grpc ? CommunicationProtocolEnum.GRPC : CommunicationProtocolEnum.HTTP,
  });
  const meta = await client.metadata.get();
  assert.equal(meta.id, appId);
  assert.deepEqual(meta.components.map((c) => c.name).sort(), ["files", "multi"]);
  console.log(`metadata ok (${mode})`);

  await client.metadata.set("from-js", mode);
  assert.equal((await client.metadata.get()).extended["from-js"], mode);

  assert.deepEqual(await client.secret.get("files", "api-key"), { "api-key": "abc" });
  const multi = await client.secret.get("multi", "db");
  if (grpc) {
    // The JS SDK's gRPC client keeps only the first pair of a secret.
    const [[k, v]] = Object.entries(multi);
    assert.equal({ password: "s3cret", user: "admin" }[k], v);
  } else {
    assert.deepEqual(multi, { password: "s3cret", user: "admin" });
  }
  const bulk = await client.secret.getBulk("files");
  assert.equal(bulk["db:user"]["db:user"], "admin");
  assert.equal(bulk.hidden, undefined, "scoped out");
  await assert.rejects(client.secret.get("files", "hidden"));
  console.log(`secrets ok (${mode})`);
  await client.stop();
  console.log(`JS OK ${mode}`);
}

main().catch((e) => {
  console.error("JS FAILED", e);
  process.exit(1);
});
