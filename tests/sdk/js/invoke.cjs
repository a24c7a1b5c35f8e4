// Service invocation with the official Dapr JS SDK: `node invoke.cjs http|grpc`
// calls `add` on the app `calc-http` through this app's sidecar.
const { DaprClient, CommunicationProtocolEnum, HttpMethod } = require("@dapr/dapr");

async function main() {
  const mode = process.argv[2];
  const grpc = mode === "grpc";
  const client = new DaprClient({
    daprHost: "127.0.0.1",
    daprPort: grpc ? process.env.DAPR_GRPC_PORT : process.env.DAPR_HTTP_PORT,
    communicationProtocol: grpc ? CommunicationProtocolEnum.GRPC : CommunicationProtocolEnum.HTTP,
  });
  const answer = await client.invoker.invoke("calc-http", "add", HttpMethod.POST, { a: 20, b: 22 });
  const parsed = typeof answer === "string" ? JSON.parse(answer) : answer;
  console.log(`JS INVOKE ${mode} ${parsed.sum} ${parsed.caller}`);
  await client.stop();
}

main().catch((e) => {
  console.error("JS FAILED", e);
  process.exit(1);
});
