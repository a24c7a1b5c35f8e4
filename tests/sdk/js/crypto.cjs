// The Dapr JS SDK's crypto client (gRPC) against `tandem run`:
// encrypt and decrypt with the AES and the RSA key.
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const { DaprClient, CommunicationProtocolEnum } = require("@dapr/dapr");

async function main() {
  const client = new DaprClient({
    daprHost: "127.0.0.1",
    daprPort: process.env.DAPR_GRPC_PORT,
    communicationProtocol: CommunicationProtocolEnum.GRPC,
  });
  for (const [keyName, keyWrapAlgorithm] of [["symmetric-key-256", "A256KW"], ["rsa-private-key.pem", "RSA-OAEP-256"]]) {
    const data = crypto.randomBytes(150 * 1024);
    const enc = await client.crypto.encrypt(data, { componentName: "crypto-localstorage", keyName, keyWrapAlgorithm });
    assert.ok(enc.subarray(0, 15).equals(Buffer.from("dapr.io/enc/v1\n")));
    const dec = await client.crypto.decrypt(enc, { componentName: "crypto-localstorage" });
    assert.ok(Buffer.from(dec).equals(data), `round trip with ${keyName}`);
  }
  await client.stop();
  console.log("JS CRYPTO OK");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
