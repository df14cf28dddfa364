// flowlake console: vanilla JS, no build step. Every value from the server goes in through textContent.
"use strict";

const body = document.body;
const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function showError(message) {
  const box = document.getElementById("error");
  if (!box) return;
  box.hidden = !message;
  box.textContent = message || "";
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  let payload = null;
  try {
    payload = await response.json();
  } catch (_) {
    payload = { message: "the server answered " + response.status };
  }
  if (!response.ok) {
    const error = new Error((payload && payload.message) || "request failed: " + response.status);
    error.status = response.status;
    error.kind = payload && payload.error;
    throw error;
  }
  return payload;
}

function fmtNumber(v) {
  if (v === null || v === undefined) return "-";
  return typeof v === "number" ? v.toLocaleString("en-US") : String(v);
}

function fmtSeconds(v) {
  if (v === null || v === undefined) return "-";
  if (v >= 3600) return (v / 3600).toFixed(1) + "h";
  if (v >= 60) return (v / 60).toFixed(1) + "m";
  return v.toFixed(1) + "s";
}

function fmtMs(v) {
  return v === null || v === undefined ? "-" : v.toLocaleString("en-US") + " ms";
}

function tableLink(name) {
  return el("a", { href: "table/" + encodeURIComponent(name) }, name);
}

function fillRows(tableEl, payload) {
  tableEl.replaceChildren();
  const head = el("tr", {});
  for (const c of payload.columns) head.append(el("th", { title: c.type }, c.name));
  tableEl.append(el("thead", {}, head));
  const tbody = el("tbody", {});
  for (const row of payload.rows) {
    const tr = el("tr", {});
    for (const v of row) tr.append(el("td", {}, v === null ? "∅" : typeof v === "object" ? JSON.stringify(v) : v));
    tbody.append(tr);
  }
  tableEl.append(tbody);
}

// -- overview ----------------------------------------------------------------------------------------

const LAYERS = ["ods", "dwd", "dws"];

function layerIndex(ns) {
  const i = LAYERS.indexOf(ns);
  return i >= 0 ? i : LAYERS.length;
}

function drawGraph(box, data) {
  const columns = new Map();
  const sources = data.sources.map((s) => s.id);
  if (sources.length) columns.set("sources", sources.map((id) => ({ id, external: true })));
  const namespaces = [...new Set(data.tables.map((t) => t.namespace))].sort(
    (a, b) => layerIndex(a) - layerIndex(b) || a.localeCompare(b),
  );
  for (const ns of namespaces) columns.set(ns, data.tables.filter((t) => t.namespace === ns).map((t) => ({ id: t.name, table: t })));
  const W = 230, H = 62, GX = 90, GY = 18, PAD = 24;
  const pos = new Map();
  let col = 0, maxRows = 0;
  for (const [, nodes] of columns) {
    nodes.forEach((n, i) => pos.set(n.id, { x: PAD + col * (W + GX), y: PAD + 20 + i * (H + GY), node: n }));
    maxRows = Math.max(maxRows, nodes.length);
    col += 1;
  }
  const width = PAD * 2 + Math.max(col, 1) * (W + GX) - GX;
  const height = PAD * 2 + 20 + Math.max(maxRows, 1) * (H + GY);
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "lineage" });
  col = 0;
  for (const [name] of columns) {
    const label = svg("text", { x: PAD + col * (W + GX), y: PAD + 6, class: "layer" });
    label.textContent = name === "sources" ? "sources" : name.toUpperCase();
    root.append(label);
    col += 1;
  }
  for (const e of data.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    root.append(svg("path", {
      d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, class: "edge" + (e.external ? " external" : ""),
      "data-from": e.from, "data-to": e.to,
    }));
  }
  for (const [id, p] of pos) {
    const t = p.node.table;
    const link = svg("a", t ? { href: "table/" + encodeURIComponent(id) } : {});
    const g = svg("g", { class: "node " + (t ? t.health : "source"), "data-node": id, transform: `translate(${p.x},${p.y})` });
    g.append(svg("rect", { width: W, height: H, rx: 6 }));
    const lines = t
      ? [id, `v${t.version} · ${fmtNumber(t.rows)} rows`, `behind ${fmtSeconds(t.freshness_seconds)} · lag ${maxLag(t)}`]
      : [id.length > 32 ? id.slice(0, 31) + "…" : id, "external source"];
    lines.forEach((line, i) => {
      const text = svg("text", { x: 10, y: 18 + i * 17, class: i === 0 ? "title" : "" });
      text.textContent = line;
      g.append(text);
    });
    if (t && t.health_reasons.length) {
      const tip = svg("title", {});
      tip.textContent = t.health_reasons.join("; ");
      g.append(tip);
    }
    link.append(g);
    root.append(link);
  }
  box.replaceChildren(root);
}

function maxLag(t) {
  const lags = Object.entries(t.consumers).filter(([c]) => !c.startsWith("pin:")).map(([, v]) => v);
  return lags.length ? Math.max(...lags) + " v" : "-";
}

function renderOverview(data) {
  drawGraph(document.getElementById("graph"), data);
  const hidden = document.getElementById("hidden-edges");
  hidden.textContent = data.hidden_upstream_edges
    ? `${data.hidden_upstream_edges} edge(s) from tables you cannot read are hidden`
    : "";
  const tbody = document.querySelector("#tables tbody");
  tbody.replaceChildren();
  for (const t of data.tables) {
    const consumers = Object.entries(t.consumers).map(([c, lag]) => `${c} (${lag})`).join(", ");
    const cells = [
      ["name", tableLink(t.name)], ["version", t.version], ["rows", fmtNumber(t.rows)], ["files", t.files],
      ["log_files", t.log_files], ["freshness", fmtSeconds(t.freshness_seconds)],
      ["rate", fmtNumber(t.changes_per_second)], ["latency", fmtMs(t.commit_latency_ms)], ["consumers", consumers || "-"],
    ];
    const tr = el("tr", { "data-table": t.name, "data-version": t.version, "data-rows": t.rows,
      "data-files": t.files, "data-log-files": t.log_files, class: t.health });
    for (const [field, value] of cells) tr.append(el("td", { "data-field": field }, value));
    tbody.append(tr);
  }
  const flows = document.querySelector("#flows tbody");
  flows.replaceChildren(...data.flows.map((f) => el("tr", { "data-flow": f.output },
    el("td", {}, tableLink(f.output)), el("td", {}, f.inputs.join(", ")), el("td", {}, fmtNumber(f.in_per_second)),
    el("td", {}, fmtNumber(f.out_per_second)), el("td", {}, fmtMs(f.epoch_interval_ms)), el("td", {}, fmtMs(f.commit_latency_ms)))));
  const ingesters = document.querySelector("#ingesters tbody");
  ingesters.replaceChildren(...data.ingesters.map((i) => el("tr", {},
    el("td", {}, i.source), el("td", {}, tableLink(i.table)), el("td", {}, fmtNumber(i.out_per_second)),
    el("td", {}, fmtMs(i.commit_latency_ms)))));
  const dead = document.getElementById("dead");
  const entries = Object.entries(data.dead_letters);
  dead.replaceChildren(...(entries.length
    ? entries.map(([ns, n]) => el("li", { "data-namespace": ns }, el("a", { href: "dead-letters?namespace=" + encodeURIComponent(ns) }, ns), `: ${fmtNumber(n)}`))
    : [el("li", {}, "none")]));
}

async function overviewPage() {
  let updates = 0;
  const poll = Number(body.dataset.pollMs || 2000);
  async function refresh() {
    try {
      const data = await api("api/overview");
      if (data.stamp !== body.dataset.stamp) {
        renderOverview(data);
        body.dataset.stamp = data.stamp;
        updates += 1;
        body.dataset.updates = String(updates);
      }
      document.getElementById("updated").textContent = "updated " + data.generated_at;
      showError("");
    } catch (e) {
      showError(e.message);
    }
  }
  await refresh();
  setInterval(refresh, poll);
}

// -- table page --------------------------------------------------------------------------------------

function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) dl.append(el("dt", {}, k), el("dd", {}, v));
}

function list(ul, items, empty) {
  ul.replaceChildren(...(items.length ? items : [el("li", { class: "none" }, empty)]));
}

function timelineChart(box, commits) {
  const writes = commits;
  const x = writes.map((c) => c.version);
  const ins = writes.map((c) => c.rows["+I"]);
  const upd = writes.map((c) => c.rows["+U"]);
  const del = writes.map((c) => c.rows["-D"]);
  const lat = writes.map((c) => c.latency_ms);
  box.replaceChildren();
  if (typeof uPlot === "undefined" || x.length === 0) {
    box.textContent = x.length === 0 ? "no commits" : "chart library missing";
    return;
  }
  const bars = uPlot.paths.bars({ size: [0.6, 40] });
  const width = Math.max(400, box.clientWidth || 900);
  new uPlot({
    width, height: 260,
    scales: {
      x: { time: false, range: [x[0] - 0.5, x[x.length - 1] + 0.5] },
      y: { range: (u, min, max) => [0, Math.max(1, max) * 1.1] },
      ms: { range: (u, min, max) => [0, Math.max(1, max || 1) * 1.1] },
    },
    axes: [{ label: "version" }, { label: "rows" }, { scale: "ms", side: 1, label: "latency ms", grid: { show: false } }],
    series: [
      { label: "version" },
      { label: "+I", stroke: "#2e7d32", fill: "rgba(46,125,50,0.35)", paths: bars },
      { label: "+U/-U pairs", stroke: "#1565c0", fill: "rgba(21,101,192,0.35)", paths: bars },
      { label: "-D", stroke: "#c62828", fill: "rgba(198,40,40,0.35)", paths: bars },
      { label: "commit latency", stroke: "#6a1b9a", scale: "ms", width: 1.5 },
    ],
  }, [x, ins, upd, del, lat], box);
}

async function tablePage() {
  const name = body.dataset.table;
  const base = "api/tables/" + encodeURIComponent(name);
  document.getElementById("title").textContent = name;
  let detail;
  try {
    detail = await api(base);
  } catch (e) {
    showError(e.message);
    body.dataset.refused = e.status === 403 ? "1" : "0";
    return;
  }
  const health = document.getElementById("health");
  health.className = detail.health;
  health.textContent = detail.health === "ok" ? "healthy" : detail.health_reasons.join("; ");
  const schemaBody = document.querySelector("#schema tbody");
  schemaBody.replaceChildren(...detail.schema.map((f) => el("tr", {}, el("td", {}, f.name), el("td", {}, f.type),
    el("td", {}, f.nullable ? "yes" : "no"), el("td", {}, f.key ? "key" : ""))));
  list(document.getElementById("schema-changes"), detail.schema_changes.map((c) =>
    el("li", {}, `v${c.version} ${c.committed_at}: added ${(c.columns || []).join(", ")}`)), "none since creation");
  const s = detail.status;
  facts(document.getElementById("layout"), [
    ["version", `${detail.version} (oldest readable ${detail.oldest_version})`],
    ["primary key", detail.primary_key.join(", ") || "none (append table)"],
    ["rows", fmtNumber(s.rows)], ["files", `${s.files} (${s.log_files} log files waiting for compaction)`],
    ["size", (s.bytes / 1e6).toFixed(2) + " MB"], ["buckets", `${detail.buckets} roots, map version ${detail.bucket_map.version}`],
    ["last commit", s.last_commit || "-"], ["behind source", fmtSeconds(s.freshness_seconds)],
  ]);
  const leaves = detail.bucket_map.leaves;
  document.getElementById("buckets").replaceChildren(...leaves.map((b) =>
    el("span", { class: "bucket", title: `root ${b.root}, depth ${b.depth}, sub ${b.sub}` }, `#${b.id}`)));
  facts(document.getElementById("properties"), Object.entries(detail.properties).length
    ? Object.entries(detail.properties) : [["-", "defaults"]]);
  list(document.getElementById("consumers"), [
    ...detail.consumers.map((c) => el("li", {}, `${c.name} at v${c.version} (${c.behind} behind)`)),
    ...detail.pins.map((p) => el("li", {}, `pin ${p.name} at v${p.version}`)),
  ], "none");
  list(document.getElementById("upstream"), [
    ...detail.upstream.map((u) => el("li", {}, tableLink(u.table), ` at v${u.version}`)),
    ...detail.external_sources.map((x) => el("li", {}, `${x.source}: ${JSON.stringify(x.position)}`)),
    ...(detail.hidden_upstream ? [el("li", {}, `${detail.hidden_upstream} table(s) you cannot read`)] : []),
  ], "none");
  list(document.getElementById("downstream"), detail.downstream.map((d) => el("li", {}, tableLink(d))), "none");
  const travelVersion = document.getElementById("travel-version");
  travelVersion.min = detail.oldest_version;
  travelVersion.max = detail.version;
  travelVersion.value = detail.version;
  document.getElementById("changes-start").value = Math.max(detail.oldest_version, detail.version - 1);
  document.getElementById("changes-end").value = detail.version;
  try {
    const tl = await api(base + "/timeline");
    timelineChart(document.getElementById("timeline-chart"), tl.commits);
  } catch (e) {
    showError(e.message);
  }
  document.getElementById("travel-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const params = new URLSearchParams();
    const time = document.getElementById("travel-time").value.trim();
    if (time) params.set("as_of", time);
    else params.set("version", travelVersion.value);
    const info = document.getElementById("travel-info");
    try {
      const rows = await api(base + "/rows?" + params.toString());
      info.textContent = `version ${rows.version}: ${fmtNumber(rows.total)} rows` + (rows.truncated ? ` (first ${rows.rows.length} shown)` : "");
      info.dataset.version = rows.version;
      fillRows(document.getElementById("travel-rows"), rows);
      showError("");
    } catch (e) {
      info.textContent = "";
      showError(e.message);
    }
  });
  document.getElementById("changes-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const params = new URLSearchParams({ start: document.getElementById("changes-start").value });
    const end = document.getElementById("changes-end").value;
    if (end) params.set("end", end);
    const info = document.getElementById("changes-info");
    try {
      const rows = await api(base + "/changes?" + params.toString());
      info.textContent = `changes after v${rows.start} up to v${rows.end}: ${fmtNumber(rows.total)}` + (rows.truncated ? ` (first ${rows.rows.length} shown)` : "");
      fillRows(document.getElementById("changes-rows"), rows);
      showError("");
    } catch (e) {
      info.textContent = "";
      showError(e.message);
    }
  });
  document.getElementById("travel-form").dispatchEvent(new Event("submit", { cancelable: true }));
  body.dataset.ready = "1";
}

// -- SQL page ----------------------------------------------------------------------------------------

function resultChart(box, payload) {
  box.replaceChildren();
  const numeric = payload.columns.map((c, i) => [c, i]).filter(([c]) => c.numeric).slice(0, 4);
  if (typeof uPlot === "undefined" || numeric.length === 0 || payload.rows.length === 0) return;
  const labelCol = payload.columns.findIndex((c) => !c.numeric);
  const labels = payload.rows.map((r, i) => (labelCol >= 0 ? String(r[labelCol]) : String(i)));
  const x = payload.rows.map((_, i) => i);
  const palette = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a"];
  const series = [{ label: labelCol >= 0 ? payload.columns[labelCol].name : "row" }];
  const data = [x];
  numeric.forEach(([c, i], k) => {
    series.push({ label: c.name, stroke: palette[k], fill: palette[k] + "55", paths: uPlot.paths.bars({ size: [0.7, 60] }) });
    data.push(payload.rows.map((r) => (r[i] === null ? null : Number(r[i]))));
  });
  new uPlot({
    width: Math.max(400, box.clientWidth || 900), height: 240,
    scales: {
      x: { time: false, range: [-0.5, x.length - 0.5] },
      y: { range: (u, min, max) => [Math.min(0, min), Math.max(1, max) * 1.1] },
    },
    axes: [{ values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) && labels[t] !== undefined ? labels[t] : "")) }, {}],
    series,
  }, data, box);
}

async function sqlPage() {
  const text = document.getElementById("sql-text");
  const params = new URLSearchParams(location.search);
  if (params.get("q")) text.value = params.get("q");
  document.getElementById("sql-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const info = document.getElementById("sql-info");
    info.textContent = "running…";
    const asOf = document.getElementById("sql-as-of").value.trim();
    try {
      const result = await api("api/sql", {
        method: "POST", headers: { "content-type": "application/json", "x-csrf-token": csrf },
        body: JSON.stringify({ sql: text.value, as_of: asOf || null }),
      });
      const read = Object.entries(result.versions).map(([t, v]) => `${t} at v${v}`).join(", ");
      info.textContent = `${fmtNumber(result.total)} rows in ${result.elapsed_ms} ms` + (read ? `; read ${read}` : "") +
        (result.truncated ? ` (first ${result.rows.length} shown)` : "");
      fillRows(document.getElementById("sql-rows"), result);
      resultChart(document.getElementById("sql-chart"), result);
      showError("");
      body.dataset.result = "ok";
    } catch (e) {
      info.textContent = "";
      document.getElementById("sql-rows").replaceChildren();
      document.getElementById("sql-chart").replaceChildren();
      showError(e.message);
      body.dataset.result = e.status === 403 ? "refused" : "error";
    }
  });
}

// -- dead letters ------------------------------------------------------------------------------------

async function deadLettersPage() {
  const select = document.getElementById("dl-namespace");
  async function load(ns) {
    const params = new URLSearchParams();
    if (ns) params.set("namespace", ns);
    try {
      const data = await api("api/dead-letters?" + params.toString());
      if (!select.options.length) {
        for (const n of data.namespaces) select.append(el("option", { value: n }, n));
      }
      select.value = data.namespace;
      document.getElementById("dl-info").textContent = data.total
        ? `${fmtNumber(data.total)} dead letter(s) in ${data.namespace}._dead_letter` + (data.truncated ? ` (newest ${data.letters.length} shown)` : "")
        : `no dead letters in ${data.namespace}`;
      const tbody = document.querySelector("#dl-rows tbody");
      tbody.replaceChildren(...data.letters.map((d) => el("tr", {},
        el("td", {}, d.ingested_at || "-"), el("td", {}, d.source_table || "?"), el("td", {}, d.position || ""),
        el("td", { class: "reason" }, d.error || ""), el("td", {}, fmtNumber(d.size) + " B"),
        el("td", {}, el("details", {}, el("summary", {}, "show"), el("pre", {}, d.raw + (d.raw_truncated ? "\n…" : "")))))));
      showError("");
    } catch (e) {
      showError(e.message);
    }
  }
  document.getElementById("dl-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    load(select.value);
  });
  await load(new URLSearchParams(location.search).get("namespace"));
}

const PAGES = { overview: overviewPage, table: tablePage, sql: sqlPage, "dead-letters": deadLettersPage };
document.addEventListener("DOMContentLoaded", () => {
  const run = PAGES[body.dataset.page];
  if (run) run().catch((e) => showError(e.message));
});
