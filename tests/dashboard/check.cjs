// Drives `tandem dashboard` in Debian's Chromium with Playwright, the way a
// person would: opens each page, waits for what it must show, breaks a
// resource file on disk and looks for the refusal, and saves screenshots.
//
// Environment: DASHBOARD_URL, RESOURCES_DIR (the apps' shared resources
// folder), ARTIFACTS (where screenshots go), LOCKED (the address of a sidecar that
// needs an API token the dashboard was not given), CHROMIUM (default
// /usr/bin/chromium). Exits non-zero naming the first check that failed.
"use strict";
const { chromium } = require("playwright-core");
const fs = require("fs");
const path = require("path");

const url = process.env.DASHBOARD_URL;
const resources = process.env.RESOURCES_DIR;
const artifacts = process.env.ARTIFACTS;
const locked = process.env.LOCKED;
const origin = new URL(url).origin;
const WAIT = 45000;

function log(...a) { console.log("dashboard-check:", ...a); }

async function shot(page, name) {
  const file = path.join(artifacts, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log("screenshot", file);
}

async function open(page, hash) {
  await page.click(`#nav a[data-page="${hash}"]`);
  await page.waitForFunction((h) => location.hash === `#${h}`, hash);
}

async function main() {
  fs.mkdirSync(artifacts, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const failures = [];
  const foreign = [];
  const watch = (page) => {
    page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
    // (A refused reload is a 400 the page shows: Chromium logs such answers
    // as "Failed to load resource", which is not a fault of the page.)
    page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) failures.push(`console error: ${m.text()}`); });
    page.on("response", (r) => { if (r.status() >= 500) failures.push(`${r.url()} answered ${r.status()}`); });
    page.on("request", (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith("data:")) foreign.push(r.url()); });
  };
  try {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    watch(page);
    await page.goto(url);

    // Apps: every app listed, with its components.
    for (const app of ["caller", "orders", "payments"]) {
      await page.waitForSelector(`[data-app="${app}"] [data-component="statestore"]`, { timeout: WAIT });
    }
    await page.waitForSelector('[data-app="processor"] [data-component="actorstore"]', { timeout: WAIT });
    log("apps listed");
    // The sidecar that needs a token is named as unreadable.
    await page.waitForFunction((id) => {
      const p = [...document.querySelectorAll("#problems p")].find((x) => x.textContent.includes(id));
      return p && p.textContent.includes("needs an API token");
    }, locked, { timeout: WAIT });
    log("locked sidecar reported");
    await shot(page, "apps");

    // Traffic: both edges with a non-zero rate, drawn in the graph.
    await open(page, "traffic");
    for (const edge of ["caller->orders", "caller->payments"]) {
      await page.waitForFunction((e) => {
        const row = document.querySelector(`tr[data-edge="${e}"]`);
        return row && Number(row.dataset.rps) > 0 && document.querySelector(`svg g[data-edge="${e}"]`);
      }, edge, { timeout: WAIT });
    }
    const success = await page.$eval('tr[data-edge="caller->payments"]', (r) => r.children[3].textContent);
    if (success !== "0%") failures.push(`caller->payments success shown as ${success}, want 0%`);
    log("edges live");
    // Let the plots gather a few points.
    await page.waitForTimeout(4000);
    await shot(page, "traffic");

    // Resilience: the breaker in front of payments is open.
    await open(page, "resilience");
    await page.waitForSelector('[data-resilience="caller"] tr[data-breaker="app_payments"][data-state="open"]', { timeout: WAIT });
    log("breaker open");
    await shot(page, "resilience");

    // Configuration: a resource file broken on disk is a refused reload
    // naming the file. Its text tries to get markup into the page.
    await open(page, "configuration");
    fs.writeFileSync(path.join(resources, "broken.yaml"),
      'apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: "<img src=x onerror=window.__pwned=1>"\nspec:\n  type: state.nope<script>window.__pwned=2</script>\n  version: v1\n');
    for (const app of ["caller", "orders", "payments"]) {
      await page.waitForFunction((a) => {
        const row = document.querySelector(`[data-config="${a}"] [data-reload="refused"]`);
        return row && row.textContent.includes("broken.yaml");
      }, app, { timeout: WAIT });
    }
    log("refused reloads shown");
    // The button asks again; the answer names the file too.
    await page.click('[data-reload-button="orders"]');
    await page.waitForFunction(() => {
      const r = document.querySelector('[data-config="orders"] .reload-result');
      return r && r.textContent.startsWith("refused:") && r.textContent.includes("broken.yaml");
    }, null, { timeout: WAIT });
    log("reload button answered");
    await shot(page, "configuration");
    // The refusal quotes the hostile name and type: shown as text, run never.
    const shown = await page.$eval('[data-config="orders"]', (c) => c.textContent);
    if (!shown.includes("<img src=x onerror=window.__pwned=1>") || !shown.includes("<script>")) {
      failures.push(`the refusal's text is not shown as it is: ${shown.slice(0, 400)}`);
    }
    const injected = await page.evaluate(() => window.__pwned !== undefined || document.querySelectorAll("main img, main script").length > 0);
    if (injected) failures.push("markup from a resource file reached the page");

    // Actors: the processor's three Counter actors, by type and host.
    await open(page, "actors");
    await page.waitForFunction(() => {
      const row = document.querySelector('tr[data-actor-type="Counter"]');
      return row && Number(row.children[3].textContent) >= 3 && row.children[1].textContent === "processor";
    }, null, { timeout: WAIT });
    log("actors shown");
    await shot(page, "actors");
    // Workflows: the processor's instances with their status; one's history.
    await open(page, "workflows");
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('[data-workflows="processor"] tr[data-instance]')];
      const status = (prefix) => rows.filter((r) => r.dataset.instance.startsWith(prefix)).map((r) => r.children[2].textContent);
      return status("order-o-").filter((s) => s === "COMPLETED").length === 3 && status("order-bad-")[0] === "FAILED";
    }, null, { timeout: WAIT });
    const failed = await page.$eval('[data-workflows="processor"] tr[data-instance^="order-bad-"]', (r) => r.textContent);
    if (!failed.includes("card declined")) failures.push(`the failed workflow does not say why: ${failed}`);
    await page.click('[data-workflows="processor"] tr[data-instance^="order-o-1-"] button');
    await page.waitForFunction(() => {
      const text = [...document.querySelectorAll('[data-workflows="processor"] .history tr')].map((r) => r.textContent).join("\n");
      return text.includes("TaskScheduledreserve") && text.includes("TaskScheduledcharge") && text.includes("ExecutionCompletedCOMPLETED");
    }, null, { timeout: WAIT });
    log("workflows and a history shown");
    await shot(page, "workflows");
    // Apps without an actor store say so on the same page.
    const none = await page.$eval('[data-workflows="caller"]', (c) => c.textContent);
    // (its in-memory store could be one, but is not marked actorStateStore)
    if (!none.includes("actorStateStore")) failures.push(`caller's workflows card: ${none}`);

    // Auto-refresh: the page updates itself without a reload.
    const before = await page.evaluate(() => { window.__marker = 1; return document.getElementById("updated").textContent; });
    await page.waitForTimeout(3000);
    const still = await page.evaluate(() => window.__marker === 1);
    if (!still) failures.push("the page reloaded itself instead of refreshing in place");
    log("refreshed in place:", before);

    // A phone: nothing wider than the screen.
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const p2 = await phone.newPage();
    watch(p2);
    const ready = {
      apps: '[data-app="caller"]', traffic: 'tr[data-edge="caller->orders"]', resilience: '[data-resilience="caller"]',
      configuration: '[data-config="caller"]', actors: 'tr[data-actor-type="Counter"]', workflows: '[data-workflows="processor"] tr[data-instance]',
    };
    for (const [hash, selector] of Object.entries(ready)) {
      await p2.goto(`${url}#${hash}`);
      await p2.waitForSelector(selector, { timeout: WAIT });
      const wide = await p2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      if (wide > 1) failures.push(`phone: the ${hash} page is ${wide}px wider than the screen`);
      await shot(p2, `phone-${hash}`);
    }
  } finally {
    await browser.close();
  }
  if (foreign.length) failures.push(`requests left the dashboard's origin: ${foreign.join(", ")}`);
  if (failures.length) {
    for (const f of failures) console.error("dashboard-check FAILED:", f);
    process.exit(1);
  }
  log("all checks passed");
}

main().catch((e) => { console.error("dashboard-check FAILED:", e); process.exit(1); });
