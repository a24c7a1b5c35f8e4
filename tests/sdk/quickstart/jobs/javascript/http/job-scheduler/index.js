// The jobs quickstart's scheduler, in its shape: jobs for job-service are
// scheduled through job-service's own sidecar (its HTTP port, 6280), then
// read back.
const sidecar = `${process.env.DAPR_HOST || "http://localhost"}:6280`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function schedule(name, body) {
  const r = await fetch(`${sidecar}/v1.0-alpha1/jobs/${name}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (r.status !== 204) {
    throw new Error(`scheduling ${name}: ${r.status} ${await r.text()}`);
  }
  console.log("Job Scheduled:", name);
}

async function details(name) {
  const r = await fetch(`${sidecar}/v1.0-alpha1/jobs/${name}`);
  if (!r.ok) throw new Error(`getting ${name}: ${r.status}`);
  console.log("Job details:", await r.text());
}

try {
  await sleep(2000);
  await schedule("R2-D2", { data: { value: "R2-D2:Oil Change" }, dueTime: "2s" });
  await details("R2-D2");
  await schedule("C-3PO", { data: { value: "C-3PO:Limb Calibration" }, dueTime: "3s" });
  await details("C-3PO");
  await sleep(30000);
} catch (e) {
  console.log("Error:", e.message);
  process.exit(1);
}
