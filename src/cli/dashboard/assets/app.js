// tandem dashboard: reads /api/overview every few seconds and draws the
// page it is on. Every value from a sidecar goes into the page as text
// (textContent), never as markup.
"use strict";

const state = { data: null, page: "apps", fetchedAt: 0, error: null, wf: {}, reloads: {} };

function el(tag, attrs, ...children) {
  const svg = ["svg", "g", "line", "circle", "text", "polyline", "path", "marker", "defs", "title"].includes(tag);
  const e = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "onclick") e.addEventListener("click", v);
    else if (k === "class") e.setAttribute("class", v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const fmt = {
  rate: (v) => v === null || v === undefined ? "–" : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2),
  pct: (v) => v === null || v === undefined ? "–" : (v * 100).toFixed(v === 1 || v === 0 ? 0 : 1) + "%",
  ms: (v) => v === null || v === undefined ? "–" : v >= 100 ? v.toFixed(0) + " ms" : v >= 1 ? v.toFixed(1) + " ms" : (v * 1000).toFixed(0) + " µs",
  time: (t) => (t ? t.replace("T", " ").replace("Z", "") : ""),
  line: (t) => { const l = (t || "").split("\n")[0]; return l.length > 160 ? l.slice(0, 159) + "…" : l; },
  ago: (s) => s === null || s === undefined ? "–" : s < 60 ? `${Math.round(s)}s` : s < 3600 ? `${Math.floor(s / 60)}m` : s < 86400 ? `${Math.floor(s / 3600)}h` : `${Math.floor(s / 86400)}d`,
};

function badge(text, kind) { return el("span", { class: `badge ${kind || ""}` }, text); }

function table(headers, rows, attrs) {
  return el("div", { class: "scroll" },
    el("table", attrs || {},
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.length ? rows : [el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, "none"))])));
}

function num(v) { return el("td", { class: "num" }, v); }

function sidecars() { return (state.data && state.data.sidecars) || []; }

function title(s) {
  return el("h2", {}, s.appId || "(unknown app)", el("span", { class: "muted" }, s.address),
    s.readable ? null : badge("cannot read", "bad"));
}

// ---------- apps ----------

function appsPage() {
  const cards = sidecars().map((s) => {
    const m = s.metadata || {}, st = s.status || {};
    const ports = st.ports || {};
    const health = st.appHealthy === true ? badge("healthy", "ok") : st.appHealthy === false ? badge("unhealthy", "bad") : badge("not probed", "");
    const byName = new Map((st.resources || []).filter((r) => r.kind === "Component").map((r) => [r.name, r]));
    const comps = (m.components || []).map((c) => {
      const r = byName.get(c.name) || {};
      const status = r.status || "loaded";
      return el("tr", { "data-component": c.name }, el("td", {}, c.name), el("td", {}, c.type), el("td", {}, c.version || ""),
        el("td", {}, badge(status, status === "loaded" ? "ok" : "warn")), el("td", { class: "muted" }, short(r.source, st.resourcesDir)));
    });
    // Components that did not load are in status only.
    for (const r of byName.values()) {
      if (!(m.components || []).some((c) => c.name === r.name)) {
        comps.push(el("tr", { "data-component": r.name }, el("td", {}, r.name), el("td", {}, r.type || ""), el("td", {}, ""),
          el("td", {}, badge(r.status, "bad")), el("td", { class: "muted" }, short(r.source, st.resourcesDir))));
      }
    }
    const subs = (m.subscriptions || []).map((x) => el("tr", {},
      el("td", {}, x.pubsubname), el("td", {}, x.topic),
      el("td", {}, ((x.rules && x.rules.rules) || []).map((r) => r.path).join(", ")),
      el("td", {}, x.type || "")));
    const endpoints = (m.httpEndpoints || []).map((h) => el("tr", {}, el("td", {}, h.name)));
    return el("article", { class: "card", "data-app": s.appId },
      title(s),
      el("dl", { class: "facts" },
        el("dt", {}, "version"), el("dd", {}, m.runtimeVersion || "–"),
        el("dt", {}, "uptime"), el("dd", {}, fmt.ago(s.uptimeSecs)),
        el("dt", {}, "ports"), el("dd", {}, `HTTP ${ports.http ?? "–"} · gRPC ${ports.grpc ?? "–"} · metrics ${ports.metrics ?? "off"} · app ${ports.app ?? "none"}`),
        el("dt", {}, "app"), el("dd", {}, health, " ", (m.appConnectionProperties && m.appConnectionProperties.protocol) || ""),
        el("dt", {}, "mTLS"), el("dd", {}, st.mtls ? badge("on", "ok") : badge("off", "")),
        el("dt", {}, "features"), el("dd", {}, (m.enabledFeatures || []).join(", ") || "none"),
        (m.extended || {}).appCommand ? [el("dt", {}, "command"), el("dd", {}, m.extended.appCommand)] : null,
        el("dt", {}, "found by"), el("dd", {}, s.source)),
      s.problems.length ? el("div", { class: "error" }, s.problems.join("\n")) : null,
      el("h3", {}, "Components"),
      table(["name", "type", "version", "status", "file"], comps),
      el("h3", {}, "Subscriptions"),
      table(["pub/sub", "topic", "routes", "type"], subs),
      el("h3", {}, "HTTPEndpoints"),
      table(["name"], endpoints));
  });
  return [el("div", { class: "grid wide" }, cards.length ? cards : el("p", { class: "muted" }, "No sidecars found: start apps with `tandem run`, or give --sidecar host:port."))];
}

// ---------- traffic ----------

// Ring order: the busiest app first, its peers beside it on both sides,
// so a caller's edges go round the ring instead of across it.
function ringOrder(nodes, edges) {
  const degree = (id) => edges.filter((e) => e.from === id || e.to === id).length;
  const left = [...nodes].sort((a, b) => degree(b.id) - degree(a.id) || a.id.localeCompare(b.id));
  const ring = new Array(left.length);
  let front = 0, back = left.length - 1, side = 0;
  while (left.length) {
    const hub = left.shift();
    ring[front++] = hub;
    const peers = left.filter((x) => edges.some((e) => (e.from === hub.id && e.to === x.id) || (e.to === hub.id && e.from === x.id)));
    for (const p of peers) {
      left.splice(left.indexOf(p), 1);
      if (side++ % 2 === 0) ring[back--] = p; else ring[front++] = p;
    }
  }
  return ring.filter(Boolean);
}

function graph(unordered, edges) {
  const nodes = ringOrder(unordered, edges);
  const n = nodes.length, W = 720, H = n > 4 ? 520 : 400, R = 34;
  const cx = W / 2, cy = H / 2, ring = Math.min(W, H) / 2 - 70;
  const pos = new Map();
  nodes.forEach((node, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(n, 1);
    pos.set(node.id, n === 1 ? [cx, cy] : [cx + ring * Math.cos(a), cy + ring * Math.sin(a)]);
  });
  const svg = el("svg", { class: "graph", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "service graph" },
    el("defs", {}, el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8a94a8" }))));
  for (const e of edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b || e.from === e.to) continue;
    const dx = b[0] - a[0], dy = b[1] - a[1], len = Math.hypot(dx, dy) || 1;
    // Two directions between the same apps sit side by side.
    const ox = (-dy / len) * 8, oy = (dx / len) * 8;
    const x1 = a[0] + (dx / len) * R + ox, y1 = a[1] + (dy / len) * R + oy;
    const x2 = b[0] - (dx / len) * (R + 4) + ox, y2 = b[1] - (dy / len) * (R + 4) + oy;
    const failing = e.success !== null && e.success < 0.95;
    const label = `${fmt.rate(e.rps)} rps · ${fmt.pct(e.success)} · p99 ${fmt.ms(e.p99)}${e.mtls ? " · mTLS" : ""}`;
    svg.append(el("g", { class: `edge${failing ? " failing" : ""}${e.rps > 0 ? "" : " idle"}`, "data-edge": `${e.from}->${e.to}` },
      el("title", {}, `${e.from} → ${e.to}: ${label}`),
      el("line", { x1, y1, x2, y2, "marker-end": "url(#arrow)" }),
      el("text", { x: (x1 + x2) / 2 + ox * 2.2, y: (y1 + y2) / 2 + oy * 2.2 + 4 }, label)));
  }
  for (const node of nodes) {
    const [x, y] = pos.get(node.id);
    svg.append(el("g", { class: `node${node.read ? "" : " unread"}`, "data-node": node.id },
      el("title", {}, node.read ? node.id : `${node.id} (not read by this dashboard)`),
      el("circle", { cx: x, cy: y, r: R }),
      el("text", { x, y: y + 4 }, node.id.length > 12 ? node.id.slice(0, 11) + "…" : node.id)));
  }
  return svg;
}

function spark(points, key, scale) {
  const W = 200, H = 48;
  const vals = points.map((p) => (p[key] === null || p[key] === undefined ? null : p[key] * (scale || 1)));
  const known = vals.filter((v) => v !== null);
  const max = Math.max(1e-9, ...known);
  const xs = (i) => (points.length <= 1 ? W : (i / (points.length - 1)) * W);
  const pts = vals.map((v, i) => (v === null ? null : `${xs(i).toFixed(1)},${(H - 4 - (v / max) * (H - 8)).toFixed(1)}`)).filter(Boolean).join(" ");
  return el("svg", { class: "spark", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" },
    el("line", { class: "axis", x1: 0, y1: H - 4, x2: W, y2: H - 4 }),
    el("polyline", { points: pts }));
}

function plot(label, value, points, key, scale) {
  return el("div", { class: "plot" }, el("div", { class: "label" }, label, el("span", { class: "value" }, value)), spark(points, key, scale));
}

function trafficPage() {
  const d = state.data || { edges: [], sidecars: [] };
  const ids = new Set(sidecars().map((s) => s.appId).filter(Boolean));
  const nodes = [...ids].map((id) => ({ id, read: true }));
  for (const e of d.edges) {
    for (const id of [e.from, e.to]) if (!nodes.some((x) => x.id === id)) nodes.push({ id, read: false });
  }
  const rows = d.edges.map((e) => el("tr", { "data-edge": `${e.from}->${e.to}`, "data-rps": e.rps },
    el("td", {}, e.from), el("td", {}, e.to), num(fmt.rate(e.rps)), num(fmt.pct(e.success)), num(fmt.ms(e.p50)), num(fmt.ms(e.p99)),
    el("td", {}, e.mtls ? badge("mTLS", "ok") : badge("plain", ""))));
  const golden = sidecars().map((s) => {
    const g = s.golden || {}, cur = g.current || {}, series = g.series || [];
    return el("article", { class: "card", "data-golden": s.appId }, title(s),
      el("div", { class: "plots" },
        plot("requests/s", fmt.rate(cur.rps), series, "rps"),
        plot("success", fmt.pct(cur.success), series, "success"),
        plot("p99 latency", fmt.ms(cur.p99), series, "p99")),
      el("p", { class: "muted" }, `served over the last minute: ${cur.requests ?? 0} requests, p50 ${fmt.ms(cur.p50)}; plots: the last ${fmt.ago(series.length ? series[0].ago : 0)}`));
  });
  return [
    el("article", { class: "card" }, el("h2", {}, "Service graph", el("span", { class: "muted" }, `calls over the last ${d.windowSecs || 60} s`)),
      graph(nodes, d.edges),
      table(["from", "to", "req/s", "success", "p50", "p99", "transport"], rows, { "data-table": "edges" })),
    el("div", { class: "grid" }, golden),
  ];
}

// ---------- resilience ----------

function resiliencePage() {
  const busy = (s) => ((s.resilience || {}).breakers || []).length + ((s.resilience || {}).activations || []).length > 0;
  const ordered = [...sidecars().filter(busy), ...sidecars().filter((s) => !busy(s))];
  return [el("div", { class: "grid" }, ordered.map((s) => {
    const r = s.resilience || { breakers: [], activations: [], events: [] };
    const kind = (st) => (st === "open" ? "bad" : st === "half-open" ? "warn" : "ok");
    const quiet = !(r.breakers || []).length && !(r.activations || []).length;
    if (quiet) {
      const names = ((s.metadata || {}).resiliencies || []).map((x) => x.name);
      return el("article", { class: "card", "data-resilience": s.appId }, title(s),
        el("p", { class: "muted" }, s.readable ? `no breaker tripped, no retry or timeout seen${names.length ? ` (policies: ${names.join(", ")})` : ""}` : "not read"));
    }
    return el("article", { class: "card full", "data-resilience": s.appId }, title(s),
      el("h3", {}, "Circuit breakers"),
      table(["target", "direction", "state"], (r.breakers || []).map((b) => el("tr", { "data-breaker": b.target, "data-state": b.state },
        el("td", {}, b.target), el("td", {}, b.direction), el("td", {}, badge(b.state, kind(b.state)))))),
      el("h3", {}, "Activations (retries, timeouts, breaker)"),
      table(["target", "policy", "status", "last min", "total"], (r.activations || []).map((a) => el("tr", {},
        el("td", {}, a.target), el("td", {}, a.policy), el("td", {}, a.status), num(a.lastMinute), num(a.total)))),
      el("h3", {}, "Recent"),
      table(["when", "target", "policy", "status", "count"], (r.events || []).slice(0, 15).map((e) => el("tr", {},
        el("td", { class: "nowrap" }, e.sinceAgo > e.ago ? `${fmt.ago(e.sinceAgo)} → ${fmt.ago(e.ago)} ago` : `${fmt.ago(e.ago)} ago`),
        el("td", {}, e.target), el("td", {}, e.policy), el("td", {}, e.status), num(e.count)))));
  }))];
}

// ---------- configuration ----------

async function reload(key) {
  state.reloads[key] = { busy: true, text: "reloading…" };
  draw();
  try {
    const r = await fetch(`api/reload?sidecar=${encodeURIComponent(key)}`, { method: "POST", headers: { "x-tandem-dashboard": "1" } });
    const body = await r.json();
    state.reloads[key] = r.ok
      ? { ok: true, text: `applied: generation ${body.generation}, changed ${(body.changed || []).join(", ") || "nothing"}` }
      : { ok: false, text: `refused: ${body.error}` };
  } catch (e) {
    state.reloads[key] = { ok: false, text: `no answer: ${e}` };
  }
  refresh();
}

function reloadItem(o, dir) {
  return el("li", { "data-reload": o.ok ? "applied" : "refused" },
    el("div", { class: "reload-head" }, o.ok ? badge("applied", "ok") : badge("refused", "bad"),
      el("span", {}, (o.at || "").replace("T", " ").replace("Z", " UTC")), el("span", { class: "muted" }, `${o.trigger} · generation ${o.generation} · ${o.tookMs} ms`)),
    el("div", { class: o.ok ? "" : "error" }, o.ok
      ? `changed ${(o.changed || []).join(", ") || "nothing"}${(o.needsRestart || []).length ? ` · needs a restart: ${o.needsRestart.join(", ")}` : ""}`
      : short(o.error, dir)));
}

// A path under the resources folder, shown relative to it.
function short(text, dir) {
  if (!text || !dir) return text || "";
  return text.split(dir.endsWith("/") ? dir : dir + "/").join("");
}

function configurationPage() {
  return [el("div", { class: "grid wide" }, sidecars().map((s) => {
    const st = s.status || {};
    const recent = (st.recentReloads || []).slice().reverse();
    return el("article", { class: "card", "data-config": s.appId }, title(s),
      el("dl", { class: "facts" },
        el("dt", {}, "generation"), el("dd", {}, st.generation ?? "–"),
        el("dt", {}, "hot reload"), el("dd", {}, st.hotReload ? badge("watching", "ok") : badge("off", "")),
        el("dt", {}, "resources"), el("dd", {}, st.resourcesDir || "embedded defaults")),
      el("p", {}, el("button", { onclick: () => reload(s.key), disabled: !s.readable || (state.reloads[s.key] || {}).busy, "data-reload-button": s.appId }, "Reload now"), " ",
        el("span", { class: `reload-result ${(state.reloads[s.key] || {}).ok === false ? "error" : "muted"}` }, (state.reloads[s.key] || {}).text || "")),
      el("h3", {}, "Last reloads (changes and refusals)"),
      recent.length ? el("ul", { class: "reloads" }, recent.map((o) => reloadItem(o, st.resourcesDir))) : el("p", { class: "muted" }, "none since the sidecar started"),
      el("h3", {}, "Resources"),
      table(["kind", "name", "type", "status", "file"], (st.resources || []).map((r) => el("tr", {},
        el("td", {}, r.kind), el("td", {}, r.name), el("td", {}, r.type || ""), el("td", {}, r.status), el("td", { class: "muted" }, short(r.source, st.resourcesDir))))),
      (st.skipped || []).length ? [el("h3", {}, "Skipped"), table(["file", "reason"], st.skipped.map((k) => el("tr", {}, el("td", {}, k.source), el("td", {}, k.reason))))] : null);
  }))];
}

// ---------- actors ----------

function actorsPage() {
  const byType = new Map();
  const cards = sidecars().map((s) => {
    const a = (s.metadata || {}).actorRuntime || {};
    for (const x of a.activeActors || []) {
      if (!byType.has(x.type)) byType.set(x.type, []);
      byType.get(x.type).push([s.appId, s.address, x.count]);
    }
    return el("article", { class: "card", "data-actors": s.appId }, title(s),
      el("dl", { class: "facts" },
        el("dt", {}, "runtime"), el("dd", {}, a.runtimeStatus || "–"),
        el("dt", {}, "placement"), el("dd", {}, a.placement || "–"),
        el("dt", {}, "host ready"), el("dd", {}, a.hostReady ? badge("yes", "ok") : badge("no", ""))),
      table(["type", "active"], (a.activeActors || []).map((x) => el("tr", {}, el("td", {}, x.type), num(x.count)))));
  });
  const rows = [];
  for (const [type, hosts] of [...byType.entries()].sort()) {
    for (const [app, addr, count] of hosts) rows.push(el("tr", { "data-actor-type": type }, el("td", {}, type), el("td", {}, app), el("td", { class: "muted" }, addr), num(count)));
  }
  return [el("article", { class: "card" }, el("h2", {}, "Active actors by type and host"), table(["type", "app", "host", "active"], rows)),
    el("div", { class: "grid" }, cards)];
}

// ---------- workflows ----------

async function loadWorkflows(key) {
  const wf = state.wf[key] || (state.wf[key] = {});
  wf.loading = true;
  try {
    const r = await fetch(`api/workflows?sidecar=${encodeURIComponent(key)}`);
    const body = await r.json();
    wf.list = r.ok ? body : null;
    wf.error = r.ok ? null : body.error;
  } catch (e) {
    wf.error = String(e);
  }
  wf.loading = false;
  draw();
}

async function loadHistory(key, id) {
  const wf = state.wf[key] || (state.wf[key] = {});
  wf.open = id;
  wf.history = null;
  draw();
  try {
    const r = await fetch(`api/workflows?sidecar=${encodeURIComponent(key)}&id=${encodeURIComponent(id)}`);
    const body = await r.json();
    // Another instance may have been opened meanwhile: its answer wins.
    if (wf.open === id) wf.history = r.ok ? body : { error: body.error };
  } catch (e) {
    if (wf.open === id) wf.history = { error: String(e) };
  }
  draw();
}

function workflowsPage() {
  return [el("div", { class: "grid" }, sidecars().map((s) => {
    const wf = state.wf[s.key] || {};
    const workers = ((s.metadata || {}).workflows || {}).connectedWorkers || 0;
    // Workflows live in the actor state store: a sidecar without one runs none
    // (and is not asked, so reading never starts its workflow engine).
    const store = ((s.metadata || {}).components || []).some((c) => (c.capabilities || []).includes("ACTOR"));
    if (!store) {
      return el("article", { class: "card", "data-workflows": s.appId }, title(s),
        el("p", { class: "muted" }, "no actor state store: this app runs no workflows"));
    }
    if (!wf.list && !wf.error && !wf.loading && s.readable) loadWorkflows(s.key);
    const instances = (wf.list && wf.list.instances) || [];
    const kind = (st) => (st === "COMPLETED" ? "ok" : st === "FAILED" || st === "TERMINATED" ? "bad" : st === "RUNNING" ? "" : "warn");
    const rows = instances.map((i) => el("tr", { "data-instance": i.id },
      el("td", {}, el("button", { class: "link", onclick: () => loadHistory(s.key, i.id) }, i.id)),
      el("td", {}, i.name || ""), el("td", {}, i.error ? badge("error", "bad") : badge(i.status, kind(i.status))),
      el("td", {}, fmt.time(i.created)), el("td", { class: "error", title: i.failure || i.error || "" }, fmt.line(i.failure || i.error))));
    const h = wf.open && wf.history;
    return el("article", { class: `card${instances.length ? " full" : ""}`, "data-workflows": s.appId }, title(s),
      el("p", { class: "muted" }, `${workers} worker(s) connected`),
      wf.error ? el("p", { class: "error" }, wf.error) : null,
      wf.list && wf.list.unavailable ? el("p", { class: "muted" }, `cannot list instances: ${wf.list.unavailable}`) : null,
      table(["instance", "workflow", "status", "created", "failure"], rows),
      wf.list && wf.list.more ? el("p", { class: "muted" }, "more instances than shown") : null,
      wf.open ? [el("h3", {}, `History of ${wf.open}`),
        !h ? el("p", { class: "muted" }, "loading…")
          : h.error ? el("p", { class: "error" }, h.error)
          : el("div", { class: "history" }, table(["#", "at", "event", "detail"], h.events.map((e) => el("tr", {}, num(e.id >= 0 ? e.id : ""), el("td", {}, fmt.time(e.at)), el("td", {}, e.kind), el("td", {}, e.detail)))))] : null);
  }))];
}

// ---------- frame ----------

const pages = { apps: appsPage, traffic: trafficPage, resilience: resiliencePage, configuration: configurationPage, actors: actorsPage, workflows: workflowsPage };

function draw() {
  tick();
  const page = Object.hasOwn(pages, state.page) ? state.page : "apps";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  const problems = document.getElementById("problems");
  problems.replaceChildren(...sidecars().filter((s) => s.problems.length).map((s) =>
    el("p", { "data-problem": s.appId || s.address }, el("strong", {}, `${s.appId || s.address} (${s.address}): `), s.problems.join("; "))));
  if (state.error) problems.prepend(el("p", {}, el("strong", {}, "dashboard: "), state.error));
  // Keep the page's and every inner scroller's position across redraws
  // (the page is drawn the same way each time, so they match by order).
  const y = window.scrollY;
  const main = document.getElementById("page");
  const inner = [...main.querySelectorAll(".scroll, .history")].map((e) => [e.scrollTop, e.scrollLeft]);
  main.replaceChildren(...pages[page]().flat());
  [...main.querySelectorAll(".scroll, .history")].forEach((e, i) => {
    if (inner[i]) [e.scrollTop, e.scrollLeft] = inner[i];
  });
  window.scrollTo(0, y);
}

async function refresh() {
  // A slow answer is not asked for again on top of itself.
  if (state.pending) return;
  state.pending = true;
  try {
    const r = await fetch("api/overview", { cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    state.data = await r.json();
    state.fetchedAt = Date.now();
    state.error = null;
  } catch (e) {
    state.error = `cannot reach the dashboard server (${e.message})`;
  }
  state.pending = false;
  draw();
}

function tick() {
  const line = document.getElementById("updated");
  if (state.fetchedAt) {
    const n = sidecars().length;
    line.textContent = `${n} sidecar${n === 1 ? "" : "s"} · updated ${Math.round((Date.now() - state.fetchedAt) / 1000)}s ago`;
  }
}

window.addEventListener("hashchange", () => {
  state.page = location.hash.slice(1) || "apps";
  if (state.page === "workflows") for (const k of Object.keys(state.wf)) state.wf[k].list = null;
  draw();
});
state.page = location.hash.slice(1) || "apps";
refresh();
setInterval(() => {
  // Workflows are listed when the page is open, every third refresh.
  if (state.page === "workflows" && (state.rounds = (state.rounds || 0) + 1) % 3 === 0) {
    for (const s of sidecars()) {
      const wf = state.wf[s.key];
      if (wf && (wf.list || wf.error) && !wf.loading) loadWorkflows(s.key);
    }
  }
  refresh();
}, 2000);
setInterval(tick, 1000);
