// The mesh dashboard: draws what /api answers (the JSON of mesh stat,
// edges, routes, tap and check). Everything from the mesh is set as text,
// never as markup: a tapped request's path is whatever a client sent.
"use strict";

const refreshMs = 2000;
const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let timer = null;
let tapSource = null;

// h makes an element: attributes (on* are listeners), then children
// (strings become text).
function h(tag, attrs, ...children) {
  const svg = ["svg", "g", "path", "rect", "text", "title", "defs", "marker", "a", "desc"].includes(tag) && attrs && attrs.svg;
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "svg" || v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const s = (tag, attrs, ...children) => h(tag, Object.assign({ svg: true }, attrs), ...children);

async function api(path) {
  const resp = await fetch(path, { cache: "no-store" });
  const body = await resp.json().catch(() => ({ error: resp.status + " " + resp.statusText }));
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

// Success rate: a class for colour and a mark and words for those who
// cannot tell colours apart (or read with a screen reader).
function health(rate) {
  if (rate === null || rate === undefined) return { cls: "none", mark: "–", words: "no requests" };
  if (rate >= 0.99) return { cls: "ok", mark: "✓", words: "healthy" };
  if (rate >= 0.95) return { cls: "warn", mark: "‼", words: "degraded" };
  return { cls: "bad", mark: "×", words: "failing" };
}
const pct = (r) => (r === null || r === undefined ? "–" : (r * 100).toFixed(r === 1 ? 0 : 2) + "%");
const ms = (v) => (v === null || v === undefined ? "–" : v < 10 ? v.toFixed(1) + " ms" : Math.round(v) + " ms");
const rps = (v) => (v === undefined ? "–" : v.toFixed(1));

function successCell(rate) {
  const hl = health(rate);
  return h("td", { class: "num " + hl.cls, "data-health": hl.cls },
    h("span", { class: "mark", "aria-hidden": "true" }, hl.mark), " ", pct(rate), hl.cls === "warn" || hl.cls === "bad" ? " " + hl.words : "");
}

function workloadLink(ref, ns) {
  if (!ref || ref === "-" || !ref.includes("/")) return document.createTextNode(ref || "–");
  return h("a", { href: "#/workload/" + encodeURIComponent(ns || "") + "/" + encodeURIComponent(ref) }, ref);
}

function table(caption, head, rows) {
  return h("table", {},
    caption ? h("caption", { class: "muted" }, caption) : null,
    h("thead", {}, h("tr", {}, head.map(([t, num]) => h("th", { scope: "col", class: num ? "num" : null }, t)))),
    h("tbody", {}, rows));
}

function showError(err) {
  main.replaceChildren(h("p", { class: "error", role: "alert" }, String(err.message || err)));
}

function stamp() {
  statusLine.textContent = "updated " + new Date().toLocaleTimeString();
}

// Pages ---------------------------------------------------------------

async function workloadsPage() {
  const rows = await api("/api/stat?window=10s");
  const byNS = new Map();
  for (const r of rows) {
    const ns = r.namespace || "(no namespace)";
    if (!byNS.has(ns)) byNS.set(ns, []);
    byNS.get(ns).push(r);
  }
  const sections = [];
  for (const [ns, list] of [...byNS.entries()].sort()) {
    sections.push(h("section", { "aria-labelledby": "ns-" + ns },
      h("h2", { id: "ns-" + ns }, "Namespace " + ns),
      table(null, [["Workload"], ["Meshed", true], ["Success", true], ["RPS", true], ["P50", true], ["P95", true], ["P99", true], ["TCP", true]],
        list.map((r) => h("tr", { "data-workload": r.name },
          h("th", { scope: "row" }, workloadLink(r.name, r.namespace)),
          h("td", { class: "num" }, r.meshedReady + "/" + r.instances),
          successCell(r.successRate),
          h("td", { class: "num" }, rps(r.rps)),
          h("td", { class: "num" }, ms(r.latencyP50Ms)),
          h("td", { class: "num" }, ms(r.latencyP95Ms)),
          h("td", { class: "num" }, ms(r.latencyP99Ms)),
          h("td", { class: "num" }, String(r.tcpConnections)))))));
  }
  if (!sections.length) sections.push(h("p", {}, "No workloads found."));
  main.replaceChildren(h("h2", {}, "Workloads"),
    h("p", { class: "muted" }, "Golden signals of the last 10 s, from the proxies themselves; refreshed every 2 s."), ...sections);
}

// layout places each workload in a column by the longest chain of calls
// that leads to it (clients on the left, leaves on the right).
function layout(names, edges) {
  const col = new Map(names.map((n) => [n, 0]));
  // Relax at most once per node, so a cycle cannot loop.
  for (let i = 0; i < names.length; i++) {
    let moved = false;
    for (const e of edges) {
      if (e.src !== e.dst && col.get(e.dst) < col.get(e.src) + 1 && col.get(e.src) + 1 < names.length) {
        col.set(e.dst, col.get(e.src) + 1);
        moved = true;
      }
    }
    if (!moved) break;
  }
  const cols = new Map();
  for (const n of names) {
    const c = col.get(n);
    if (!cols.has(c)) cols.set(c, []);
    cols.get(c).push(n);
  }
  const pos = new Map();
  const w = 170, gapX = 110, hgt = 40, gapY = 36, top = 60;
  let maxRows = 0, maxCol = 0;
  for (const [c, list] of cols) {
    list.sort();
    maxRows = Math.max(maxRows, list.length);
    maxCol = Math.max(maxCol, c);
    list.forEach((n, i) => pos.set(n, { x: 20 + c * (w + gapX), y: top + i * (hgt + gapY), w, h: hgt, col: c }));
  }
  return { pos, width: 40 + (maxCol + 1) * (w + gapX) - gapX, height: top + 70 + maxRows * (hgt + gapY) - gapY };
}

function nodeKey(ref, ns) { return (ns || "") + "/" + ref; }

function topology(edges, focus) {
  const names = new Set();
  const label = new Map();
  for (const e of edges) {
    const a = nodeKey(e.src, e.srcNamespace), b = nodeKey(e.dst, e.dstNamespace);
    names.add(a); names.add(b);
    label.set(a, { ref: e.src, ns: e.srcNamespace }); label.set(b, { ref: e.dst, ns: e.dstNamespace });
  }
  const keyed = edges.map((e) => ({ src: nodeKey(e.src, e.srcNamespace), dst: nodeKey(e.dst, e.dstNamespace), e }));
  const { pos, width, height } = layout([...names].sort(), keyed);
  const vw = Math.max(width, 300), vh = Math.max(height, 120);
  const svg = s("svg", { class: "topology", width: vw, height: vh, viewBox: "0 0 " + vw + " " + vh, role: "img", "aria-labelledby": "topo-title topo-desc" },
    s("title", { id: "topo-title" }, "Who calls whom"),
    s("desc", { id: "topo-desc" }, "Each arrow is a client calling a server; its colour and label give the success rate; dashed arrows are not mTLS. The table below lists the same."),
    s("defs", {}, ["ok", "warn", "bad", "none"].map((c) => s("marker", { id: "arrow-" + c, viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow " + c })))));
  for (const k of keyed) {
    const a = pos.get(k.src), b = pos.get(k.dst);
    const hl = health(k.e.successRate);
    const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
    // Forward to the next column: an S-curve. Further: an arc above the
    // columns between. Back or within a column (a cycle): a loop below.
    const span = b.col - a.col;
    let d, mx, my;
    if (span === 1) {
      d = `M${x1},${y1} C${x1 + 50},${y1} ${x2 - 50},${y2} ${x2},${y2}`;
      mx = (x1 + x2) / 2; my = (y1 + y2) / 2 - 6;
    } else if (span > 1) {
      const up = Math.min(a.y, b.y) - 45;
      d = `M${a.x + a.w / 2},${a.y} C${a.x + a.w / 2},${up} ${b.x + b.w / 2},${up} ${b.x + b.w / 2},${b.y}`;
      mx = (a.x + b.x + b.w) / 2; my = up + 8;
    } else {
      const down = Math.max(a.y, b.y) + a.h + 55;
      d = `M${a.x + a.w / 2},${a.y + a.h} C${a.x + a.w / 2},${down} ${b.x + b.w / 2},${down} ${b.x + b.w / 2},${b.y + b.h}`;
      mx = (a.x + b.x + b.w) / 2; my = down - 10;
    }
    const words = `${k.e.src} to ${k.e.dst}: ${pct(k.e.successRate)} success (${hl.words}), ${k.e.requests} requests, ${k.e.mtls ? "mTLS" : "not mTLS: " + (k.e.why || "")}`;
    svg.append(s("g", { class: "edge " + hl.cls + (k.e.mtls ? "" : " plain"), "data-src": k.e.src, "data-dst": k.e.dst, "data-health": hl.cls, "data-mtls": String(k.e.mtls) },
      s("title", {}, words),
      s("path", { d, "marker-end": "url(#arrow-" + hl.cls + ")" }),
      s("text", { x: mx, y: my, "text-anchor": "middle", class: hl.cls }, hl.mark + " " + pct(k.e.successRate) + (k.e.mtls ? "" : " · not mTLS"))));
  }
  for (const n of names) {
    const p = pos.get(n), l = label.get(n);
    const focused = focus && l.ref === focus;
    const box = s("g", { class: "node" + (focused ? " focus" : ""), "data-node": l.ref },
      s("rect", { x: p.x, y: p.y, width: p.w, height: p.h, rx: 6 }),
      s("text", { x: p.x + 10, y: p.y + 25 }, l.ref.length > 22 ? l.ref.slice(0, 21) + "…" : l.ref));
    svg.append(l.ref.includes("/") && l.ref !== "-" ? s("a", { href: "#/workload/" + encodeURIComponent(l.ns || "") + "/" + encodeURIComponent(l.ref), "aria-label": "workload " + l.ref }, box) : box);
  }
  return svg;
}

function edgeTable(edges, caption) {
  return table(caption, [["From"], ["To"], ["Success", true], ["Requests", true], ["mTLS"]],
    edges.map((e) => h("tr", { "data-edge": e.src + " -> " + e.dst },
      h("td", {}, workloadLink(e.src, e.srcNamespace)),
      h("td", {}, workloadLink(e.dst, e.dstNamespace)),
      successCell(e.successRate),
      h("td", { class: "num" }, String(e.requests)),
      h("td", { class: e.mtls ? "ok" : "bad" }, e.mtls ? "✓ yes" : "× no: " + (e.why || "")))));
}

async function topologyPage() {
  const edges = await api("/api/edges?window=10s");
  main.replaceChildren(h("h2", {}, "Topology"),
    h("p", { class: "legend" }, "Arrows go from client to server over the last 10 s. ✓ green: at least 99% success; ‼ amber: at least 95%; × red: less. Dashed: not mTLS."),
    edges.length ? topology(edges) : h("p", {}, "No traffic in the last 10 s."),
    h("h3", {}, "Edges"), edgeTable(edges, null));
}

async function checkPage() {
  main.replaceChildren(h("h2", {}, "Check"), h("p", { class: "muted" }, "Running mesh check…"));
  const res = await api("/api/check");
  const byCat = new Map();
  for (const c of res.checks) {
    if (!byCat.has(c.category)) byCat.set(c.category, []);
    byCat.get(c.category).push(c);
  }
  const marks = { ok: ["✓", "ok", "passed"], warning: ["‼", "warn", "warning"], error: ["×", "bad", "failed"] };
  const parts = [h("h2", {}, "Check"),
    h("p", { class: res.success ? "ok" : "bad", "data-success": String(res.success) }, res.success ? "✓ Everything checked is as it should be." : "× Some checks failed: the hints say what to do.")];
  for (const [cat, list] of byCat) {
    parts.push(h("h3", {}, cat), h("ul", { class: "checks" }, list.map((c) => {
      const [mark, cls, words] = marks[c.status] || ["?", "none", c.status];
      return h("li", { class: cls, "data-status": c.status },
        h("span", { class: "mark", "aria-hidden": "true" }, mark), " ", h("span", { class: "label" }, words + ": "), c.description,
        c.detail ? h("div", { class: "muted" }, c.detail) : null,
        c.hint ? h("div", {}, h("strong", {}, "Hint: "), c.hint) : null);
    })));
  }
  main.replaceChildren(...parts);
}

async function workloadPage(ns, ref, first) {
  const q = "resource=" + encodeURIComponent(ref);
  const [rows, edges, routes] = await Promise.all([api("/api/stat?window=10s&" + q), api("/api/edges?window=10s&" + q),
    api("/api/routes?window=10s&" + q).catch(() => [])]);
  const r = rows[0];
  const inbound = edges.filter((e) => e.dst === ref), outbound = edges.filter((e) => e.src === ref);
  let view = document.getElementById("workload-view");
  if (!view || first) {
    view = h("div", { id: "workload-view" });
    main.replaceChildren(h("h2", {}, ref + (ns ? " in " + ns : "")), view, tapPanel(ref));
  }
  view.replaceChildren(
    r ? table(null, [["Meshed", true], ["Success", true], ["RPS", true], ["P50", true], ["P95", true], ["P99", true], ["Identity"]],
      [h("tr", {}, h("td", { class: "num" }, r.meshedReady + "/" + r.instances), successCell(r.successRate), h("td", { class: "num" }, rps(r.rps)),
        h("td", { class: "num" }, ms(r.latencyP50Ms)), h("td", { class: "num" }, ms(r.latencyP95Ms)), h("td", { class: "num" }, ms(r.latencyP99Ms)),
        h("td", {}, r.identity || "–"))]) : null,
    edges.length ? topology(edges, ref) : null,
    h("h3", {}, "Inbound"), inbound.length ? edgeTable(inbound) : h("p", { class: "muted" }, "No callers in the last 10 s."),
    h("h3", {}, "Outbound"), outbound.length ? edgeTable(outbound) : h("p", { class: "muted" }, "No calls in the last 10 s."),
    h("h3", {}, "Routes"), routes.length ? table(null, [["Route"], ["Services"], ["Success", true], ["RPS", true], ["P99", true]],
      routes.map((rt) => h("tr", {}, h("td", {}, rt.route), h("td", {}, (rt.services || []).join(", ")), successCell(rt.successRate),
        h("td", { class: "num" }, rps(rt.rps)), h("td", { class: "num" }, ms(rt.latencyP99Ms))))) : h("p", { class: "muted" }, "No outbound traffic by route."));
}

// tapPanel is the live tap: the filters of mesh tap, and a list of the
// requests that end, newest first.
function tapPanel(ref) {
  const list = h("ol", { class: "tap", "aria-label": "Live requests", "data-tap": ref });
  const state = h("span", { class: "muted", role: "status" }, "");
  const fields = {};
  const field = (name, label, placeholder) => {
    fields[name] = h("input", { name, placeholder, "aria-label": label });
    return h("label", {}, label, fields[name]);
  };
  const button = h("button", { type: "submit" }, "Start");
  const stop = () => {
    if (tapSource) tapSource.close();
    tapSource = null;
    button.textContent = "Start";
  };
  const start = () => {
    stop();
    const p = new URLSearchParams({ resource: ref });
    for (const [k, el] of Object.entries(fields)) if (el.value) p.set(k, el.value);
    tapSource = new EventSource("/api/tap?" + p);
    button.textContent = "Stop";
    state.textContent = "tapping…";
    tapSource.addEventListener("tap", (ev) => {
      const e = JSON.parse(ev.data);
      if (e.type !== "end") return;
      const failed = e.error || e.status >= 500 || (e.grpcStatus && e.grpcStatus !== "0");
      const line = `${new Date(e.time).toLocaleTimeString()} ${e.direction} ${e.source} → ${e.destination} ${e.method} ${e.authority}${e.path} ` +
        `${e.status || ""}${e.grpcStatus ? " grpc " + e.grpcStatus : ""} ${e.durationMs !== undefined ? e.durationMs.toFixed(1) + " ms" : ""} ${e.tls ? "mTLS" : "plain"}${e.error ? " error: " + e.error : ""}`;
      list.prepend(h("li", { class: failed ? "bad" : null, "data-status": String(e.status || "") }, (failed ? "× " : "") + line));
      while (list.children.length > 200) list.lastChild.remove();
    });
    tapSource.addEventListener("warning", (ev) => { state.textContent = JSON.parse(ev.data).error; });
    tapSource.addEventListener("end", () => { state.textContent = "the tap ended"; stop(); });
  };
  const form = h("form", { class: "tap", onsubmit: (ev) => { ev.preventDefault(); tapSource ? stop() : start(); } },
    field("method", "Method", "GET"), field("path", "Path prefix", "/api"), field("authority", "Authority", "api:8080"),
    field("to", "To workload", "deploy/api"), button, state);
  setTimeout(start, 0);
  return h("section", { "aria-labelledby": "tap-title" }, h("h3", { id: "tap-title" }, "Live requests"), form, list);
}

// Routing ----------------------------------------------------------------

function route() {
  clearTimeout(timer);
  if (tapSource) { tapSource.close(); tapSource = null; }
  const hash = location.hash.replace(/^#/, "") || "/";
  const parts = hash.split("/").map(decodeURIComponent);
  let page = "workloads", draw = workloadsPage;
  if (parts[1] === "topology") { page = "topology"; draw = topologyPage; }
  else if (parts[1] === "check") { page = "check"; draw = checkPage; }
  else if (parts[1] === "workload" && parts.length >= 4) {
    page = "workload";
    const ns = parts[2], ref = parts.slice(3).join("/");
    let first = true;
    draw = () => workloadPage(ns, ref, first).then(() => { first = false; });
  }
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const tick = async () => {
    try {
      await draw();
      stamp();
    } catch (err) {
      showError(err);
    }
    if (page !== "check") timer = setTimeout(tick, refreshMs);
  };
  tick();
}

window.addEventListener("hashchange", () => { route(); main.focus(); });
api("/api/source").then((r) => { document.getElementById("source").textContent = r.source; }).catch(() => {});
route();
